"""Typed models of every artifact a stage writes (see ``docs/artifacts.md``).

Each file-backed artifact is an :class:`Artifact` subclass that knows its ``kind``, its file
name, its schema version and the command that makes it, so reading one is a single call that
validates all of that and says how to fix what is wrong::

    manifest = PreparedManifest.read(Path("data/prepared/shapes"))
    manifest.image_size          # a typed attribute, validated when read
    manifest.write(folder)       # atomic; the file's mode follows the umask

Fields that an older writer of the same schema version did not record have defaults, and
fields a reader does not know are kept (``extra="allow"``) and written back unchanged, so an
artifact round-trips through any visionops that reads its schema version. Nothing here
imports torch.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from visionops._io import atomic_write_json
from visionops.errors import ArtifactError

__all__ = [
    "AnomalyModelRecord",
    "AnomalyThreshold",
    "Artifact",
    "ArtifactModel",
    "BundleInput",
    "BundleMeta",
    "BundleRun",
    "Calibration",
    "CheckpointRef",
    "ClassActivationRecord",
    "DatasetRef",
    "EvalDataset",
    "EvalInference",
    "EvalMetrics",
    "EvalRow",
    "LoggedImage",
    "MetricsSplit",
    "ModelSpec",
    "Monitor",
    "Normalization",
    "ParityMetric",
    "ParityRecord",
    "PredictionRecord",
    "PreparedManifest",
    "QuantizedRecord",
    "RunDevice",
    "RunRecord",
    "RunTracking",
    "SourceRecord",
    "WeightsRecord",
]

TaskName = str
"""A task registered in :mod:`visionops.tasks` (``classification``, ``multilabel``, ...)."""


class ArtifactModel(BaseModel):
    """Base of every artifact model and of the records nested in them."""

    # Unknown fields are kept so that a newer writer's additions survive a rewrite.
    model_config = ConfigDict(extra="allow", protected_namespaces=())


def _first_problem(exc: ValidationError) -> str:
    error = exc.errors()[0]
    where = ".".join(str(part) for part in error["loc"]) or "(top level)"
    return f"{where}: {error['msg']}"


class Artifact(ArtifactModel):
    """A JSON manifest with ``kind`` and ``schema_version``, read and written in one place.

    Subclasses set ``KIND`` (the ``kind`` field), ``FILENAME`` (the manifest's name inside
    its folder), ``MADE_BY`` (the command that writes it, used in error messages) and
    ``SCHEMA_VERSION`` (the version this visionops reads and writes).
    """

    KIND: ClassVar[str]
    FILENAME: ClassVar[str]
    MADE_BY: ClassVar[str]
    SCHEMA_VERSION: ClassVar[int] = 1

    schema_version: int = 1
    kind: str = ""

    @model_validator(mode="before")
    @classmethod
    def _fill_kind(cls, data: Any) -> Any:
        if isinstance(data, dict):
            data = {"kind": cls.KIND, "schema_version": cls.SCHEMA_VERSION, **data}
        return data

    @classmethod
    def file_in(cls, path: Path) -> Path:
        """The manifest file for ``path``, which may be the file itself or its folder."""
        path = Path(path)
        return path / cls.FILENAME if path.is_dir() or path.suffix != ".json" else path

    @classmethod
    def exists(cls, path: Path) -> bool:
        """Whether ``path`` holds this kind of artifact (kind checked, nothing else)."""
        try:
            data = json.loads(cls.file_in(path).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False
        return isinstance(data, dict) and data.get("kind") == cls.KIND

    @classmethod
    def read(cls, path: Path) -> Self:
        """Read and validate the artifact at ``path`` (its folder or its manifest file).

        Raises:
            ArtifactError: Missing, not JSON, another kind, another schema version, or a field
                of the wrong type; the message names the command that makes the artifact.
        """
        file = cls.file_in(path)
        remake = f"make it with `{cls.MADE_BY}`"
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ArtifactError(f"{file} does not exist — {remake}") from None
        except (OSError, ValueError) as exc:
            raise ArtifactError(
                f"{file} is not readable JSON ({type(exc).__name__}) — the artifact is damaged;"
                f" {remake}"
            ) from None
        if not isinstance(data, dict) or data.get("kind") != cls.KIND:
            found = data.get("kind") if isinstance(data, dict) else None
            raise ArtifactError(
                f"{file} is {'a ' + repr(found) if found else 'not a visionops'} manifest, not"
                f" {cls.KIND!r} — point at what `{cls.MADE_BY}` writes"
            )
        version = data.get("schema_version")
        if version != cls.SCHEMA_VERSION:
            raise ArtifactError(
                f"{file} has schema_version {version!r}; this visionops reads"
                f" {cls.SCHEMA_VERSION} — {remake} with this visionops, or use the version"
                " that wrote it"
            )
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise ArtifactError(
                f"{file} is not a valid {cls.KIND} manifest ({_first_problem(exc)}) — {remake}"
            ) from None

    def to_json(self) -> dict[str, Any]:
        """The artifact as plain JSON data (what :meth:`write` writes)."""
        return self.model_dump(mode="json")

    def write(self, path: Path) -> Path:
        """Write the manifest atomically to ``path`` (its folder or the file itself).

        Returns:
            The file written.
        """
        file = self.file_in(path)
        atomic_write_json(file, self.to_json())
        return file


# ---------------------------------------------------------------- raw dataset


class SourceRecord(Artifact):
    """``data/raw/<name>/source.json``: where a raw dataset came from."""

    KIND: ClassVar[str] = "visionops.raw"
    FILENAME: ClassVar[str] = "source.json"
    MADE_BY: ClassVar[str] = "visionops data fetch SOURCE"

    name: str
    source: str
    version: str | None = None
    file_count: int
    bytes: int
    fingerprint: str
    fetched_at: str | None = None
    visionops_version: str | None = None


# ----------------------------------------------------------- prepared dataset


class PreparedManifest(Artifact):
    """``data/prepared/<name>/manifest.json``: what the arrays beside it hold."""

    KIND: ClassVar[str] = "visionops.prepared"
    FILENAME: ClassVar[str] = "manifest.json"
    MADE_BY: ClassVar[str] = "visionops data preprocess RAW_FOLDER"

    name: str
    task: TaskName
    class_names: list[str] | None = None
    target_names: list[str] | None = None
    target_units: list[str] | None = None
    target_mean: list[float] | None = None
    target_std: list[float] | None = None
    image_size: int = Field(gt=0)
    channels: Literal[1, 3]
    resize: str = "crop"
    mean: list[float]
    std: list[float]
    counts: dict[str, int] = Field(default_factory=dict)
    class_counts: dict[str, dict[str, int]] | None = None
    splits_from_source: bool = False
    source: SourceRecord
    params: dict[str, Any] = Field(default_factory=dict)
    fingerprint: str
    created_at: str | None = None
    visionops_version: str | None = None

    @property
    def labels(self) -> list[str]:
        """Class names (classification, multilabel, anomaly) or target names (regression)."""
        return list(self.class_names or self.target_names or [])


# ----------------------------------------------------------------------- run


class DatasetRef(ArtifactModel):
    """Which prepared dataset a run was trained on."""

    path: str
    name: str
    fingerprint: str


class WeightsRecord(ArtifactModel):
    """The file a network's weights started from (``model.pretrained`` or ``model.weights``)."""

    name: str
    file: str
    sha256: str


class ModelSpec(ArtifactModel):
    """Enough to rebuild a run's network with :func:`visionops.models.build_model`."""

    name: str
    num_outputs: int
    channels: int
    image_size: int
    feature_dim: int | None = None
    dropout: float = 0.0
    pretrained: bool | str = False
    weights: str | None = None
    weights_source: WeightsRecord | None = None
    freeze_backbone: bool = False


class Normalization(ArtifactModel):
    """Per-channel mean and std on the 0..1 scale (the train split's)."""

    mean: list[float]
    std: list[float]


class Monitor(ArtifactModel):
    """The validation metric that picks the best checkpoint."""

    metric: str
    mode: Literal["max", "min"]


class RunDevice(ArtifactModel):
    """Where a run trained: the device, its precision and how many processes took part."""

    type: str
    precision: str
    world_size: int = Field(1, ge=1)


class RunTracking(ArtifactModel):
    """The Weights & Biases run that tracked a training run (``--resume`` continues it)."""

    mode: Literal["offline", "online"]
    project: str
    id: str | None = None
    url: str | None = None


RunStatus = Literal["running", "completed", "interrupted", "failed"]


class AnomalyThreshold(ArtifactModel):
    """An anomaly run's decision threshold and how it was placed."""

    value: float
    method: Literal["f1", "fpr"]
    target_fpr: float | None = None


class AnomalyModelRecord(ArtifactModel):
    """What rebuilds an anomaly run's memory-bank model besides its state dict, and its size.

    Written as ``anomaly`` in ``run.json``, ``metrics.json``, the checkpoints and the bundle's
    ``visionops.json``. Runs written before the bank's shape was recorded in ``run.json``
    lack the fields that default to None there; their checkpoints hold them.
    """

    layers: list[str]
    threshold: AnomalyThreshold
    bank_size: int
    feature_dim: int
    image_size: int | None = None
    sigma: float | None = None
    chunk: int | None = None
    projection_dim: int | None = None
    patches_per_image: int | None = None
    bank_mb: float | None = None
    bytes_per_image: int | None = None


class RunRecord(Artifact):
    """``runs/<name>/run.json``: what a training run is and how far it got."""

    KIND: ClassVar[str] = "visionops.run"
    FILENAME: ClassVar[str] = "run.json"
    MADE_BY: ClassVar[str] = "visionops train"

    name: str
    status: RunStatus
    task: TaskName
    dataset: DatasetRef
    model: ModelSpec
    normalization: Normalization
    resize: str = "crop"
    class_names: list[str] | None = None
    target_names: list[str] | None = None
    target_units: list[str] | None = None
    target_mean: list[float] | None = None
    target_std: list[float] | None = None
    thresholds: list[float] | None = None
    monitor: Monitor
    best_epoch: int | None = None
    best_metric: float | None = None
    epochs_completed: int = 0
    epochs: int | None = None
    config_hash: str
    created_at: str | None = None
    finished_at: str | None = None
    failure: str | None = None
    device: RunDevice | None = None
    tracking: RunTracking | None = None
    versions: dict[str, str] = Field(default_factory=dict)
    anomaly: AnomalyModelRecord | None = None

    @property
    def labels(self) -> list[str]:
        """Class names or target names, in output order."""
        return list(self.class_names or self.target_names or [])


# -------------------------------------------------------------------- bundle


class BundleInput(ArtifactModel):
    """What the ONNX graph takes: uint8 pixels of one size, channel count and layout."""

    name: str = "pixels"
    dtype: Literal["uint8"] = "uint8"
    layout: Literal["NCHW", "NHWC"] = "NCHW"
    size: int = Field(gt=0)
    channels: Literal[1, 3]
    resize: str = "crop"
    max_image_pixels: int = Field(gt=0)


class MetricsSplit(ArtifactModel):
    """Which images a bundle's ``metrics`` were computed on."""

    split: str
    images: int


class BundleRun(ArtifactModel):
    """The run and checkpoint a bundle was exported from."""

    name: str
    checkpoint: str = "best"
    epoch: int | None = None
    model: str | None = None
    dataset: str | None = None
    weights_source: WeightsRecord | None = None


class Calibration(ArtifactModel):
    """The images int8 calibration saw."""

    split: str
    images: int
    method: str


class QuantizedRecord(ArtifactModel):
    """The int8 outcome of an export (``--quantize int8``), kept or refused with the reason.

    An attempt that failed before any measurement carries ``accepted``, ``reason``, ``file``
    and ``metric`` only.
    """

    accepted: bool
    reason: str | None = None
    file: str | None = None
    metric: str | None = None
    format: str | None = None
    activations: str | None = None
    weights: str | None = None
    quantized_ops: list[str] | None = None
    calibration: Calibration | None = None
    split: str | None = None
    images: int | None = None
    fp32: float | None = None
    int8: float | None = None
    drop: float | None = None
    tolerance: float | None = None
    latency_ms_batch1: dict[str, float] | None = None
    speedup: float | None = None
    size_bytes: dict[str, int] | None = None
    seconds: float | None = None

    @property
    def measured(self) -> bool:
        """Whether the int8 graph was built and scored (else quantisation itself failed)."""
        return self.calibration is not None


class ClassActivationRecord(ArtifactModel):
    """A classification bundle's class activation map (its ``cam`` output), or why it has none.

    Written as ``cam`` in ``visionops.json`` by ``visionops export`` for classification and
    multilabel runs; bundles exported before it have no ``cam`` field (and no map).
    """

    available: bool
    output: str | None = None
    layer: str | None = None
    feature_size: list[int] | None = None
    reason: str | None = None


class BundleMeta(Artifact):
    """``runs/<name>/bundle/visionops.json``: a self-describing exported model."""

    KIND: ClassVar[str] = "visionops.bundle"
    FILENAME: ClassVar[str] = "visionops.json"
    MADE_BY: ClassVar[str] = "visionops export RUN"

    task: TaskName
    model_version: str
    input: BundleInput
    outputs: dict[str, str]
    class_names: list[str] | None = None
    target_names: list[str] | None = None
    target_units: list[str] | None = None
    thresholds: list[float] | float | None = None
    anomaly: AnomalyModelRecord | None = None
    cam: ClassActivationRecord | None = None
    metrics: dict[str, float | None] = Field(default_factory=dict)
    metrics_split: MetricsSplit | None = None
    training_data_fingerprint: str | None = None
    config_hash: str | None = None
    versions: dict[str, str] = Field(default_factory=dict)
    created_at: str | None = None
    files: dict[str, str] = Field(default_factory=dict)
    quantized: QuantizedRecord | None = None
    run: BundleRun | None = None
    opset: int | None = None
    reference_samples: int | None = None
    reference_split: str | None = None

    @property
    def labels(self) -> list[str]:
        """Class names (classification, multilabel) or target names (regression)."""
        return list(self.class_names or self.target_names or [])

    @property
    def main_output(self) -> str:
        """Name of the graph's task output (``probabilities``, ``values``, ``score``)."""
        return self.outputs["main"]

    @property
    def int8_file(self) -> str | None:
        """The int8 graph's file name when quantisation was accepted, else None."""
        quantized = self.quantized
        if quantized is None or not quantized.accepted:
            return None
        return quantized.file or "model.int8.onnx"

    @property
    def embedding_output(self) -> str | None:
        """Name of the graph's embedding output, if it has one."""
        return self.outputs.get("embedding")


class ParityMetric(ArtifactModel):
    """The monitored metric of the parity images under both engines."""

    name: str
    pytorch: float | None = None
    onnxruntime: float | None = None
    difference: float | None = None


class ParityRecord(ArtifactModel):
    """``runs/<name>/bundle/parity.json``: ONNX Runtime checked against PyTorch at export.

    Not an :class:`Artifact` (it has no kind of its own): it is one of the bundle's files,
    checksummed in :class:`BundleMeta` ``files``.
    """

    passed: bool
    failures: list[str] = Field(default_factory=list)
    split: str | None = None
    images: int = 0
    batch_sizes: list[int] = Field(default_factory=list)
    atol: float = 1e-4
    max_abs_diff: dict[str, float] = Field(default_factory=dict)
    bound: dict[str, float] = Field(default_factory=dict)
    top1_agreement: float | None = None
    min_top1_agreement: float | None = None
    metric: ParityMetric | None = None
    engines: dict[str, str] = Field(default_factory=dict)
    checked_at: str | None = None
    samples: dict[str, Any] | None = None


# ---------------------------------------------------------------------- eval


class CheckpointRef(ArtifactModel):
    """Which checkpoint a result came from."""

    which: str
    file: str
    epoch: int | None = None
    sha256: str


class EvalDataset(ArtifactModel):
    """The prepared dataset an evaluation scored, and whether it is the one trained on."""

    path: str
    name: str | None = None
    fingerprint: str | None = None
    trained_fingerprint: str | None = None
    fingerprint_matches: bool | None = None


class EvalInference(ArtifactModel):
    """How an evaluation ran the model."""

    device: str
    precision: str
    batch_size: int | None = None
    seconds: float | None = None
    images_per_s: float | None = None


class EvalRow(ArtifactModel):
    """One row of an evaluation table: a class (``class``) or a target (``target``).

    Every column depends on the task (precision/recall/F1, MAE/R², flagged/mean score), so
    a row declares none: they are kept as written, in their order (the report's columns).
    """

    def columns(self) -> dict[str, Any]:
        """The row's columns, in the order they were written."""
        return dict(self.model_extra or {})


class EvalMetrics(Artifact):
    """``runs/<name>/eval/metrics.json``: a trained run scored on a split."""

    KIND: ClassVar[str] = "visionops.eval"
    FILENAME: ClassVar[str] = "metrics.json"
    MADE_BY: ClassVar[str] = "visionops eval RUN"

    run: str
    task: TaskName
    split: str
    requested_split: str | None = None
    n: int
    metrics: dict[str, float | None]
    per_class: list[EvalRow] | None = None
    per_target: list[EvalRow] | None = None
    checkpoint: CheckpointRef
    dataset: EvalDataset
    model: ModelSpec | None = None
    inference: EvalInference | None = None
    plots: dict[str, str] = Field(default_factory=dict)
    warnings: list[str] = Field(default_factory=list)
    created_at: str | None = None
    visionops_version: str | None = None


# ------------------------------------------------------------ prediction log


class EmbeddingRef(ArtifactModel):
    """Where a logged prediction's embedding row lives (a side ``.npy`` file)."""

    file: str
    row: int


class LoggedImage(ArtifactModel):
    """What a prediction record keeps of its image: the upload and its pixel statistics.

    The statistics are :func:`visionops.imaging.image_statistics` of the model-sized pixels,
    on the 0..1 scale, and :func:`visionops.image_quality.quality_statistics` of the upload
    (noise, detail and blockiness of the decoded image before the resize, the JPEG quality of
    its bytes, colourfulness and hue); drift detection compares them with the reference's.
    """

    format: str | None = None
    width: int | None = None
    height: int | None = None
    bytes: int | None = None
    mean: float | None = None
    std: float | None = None
    min: float | None = None
    max: float | None = None
    sharpness: float | None = None
    saturation: float | None = None
    mean_c0: float | None = None
    mean_c1: float | None = None
    mean_c2: float | None = None
    noise: float | None = None
    detail: float | None = None
    blockiness: float | None = None
    jpeg_quality: float | None = None
    colourfulness: float | None = None
    hue: float | None = None


class PredictionRecord(ArtifactModel):
    """One line of the prediction log (``runs/<name>/predictions/*.jsonl``).

    Not an :class:`Artifact`: a log line carries no kind of its own; the log's reader
    validates each line with this model and skips (and counts) the ones that do not fit.
    ``prediction`` is the task's answer, read through the task (``answer_text``,
    ``flat_answer``).
    """

    time: str
    request_id: str
    index: int = 0
    model_version: str
    precision: str | None = None
    task: TaskName
    prediction: dict[str, Any]
    output: list[float] | None = None
    latency_ms: float | None = None
    queue_ms: float | None = None
    compute_ms: float | None = None
    batch_size: int | None = None
    image: LoggedImage | None = None
    embedding: EmbeddingRef | None = None
    image_file: str | None = None
    source: str | None = None
    """The file a ``visionops predict`` record was read from."""

    @field_validator("image", mode="before")
    @classmethod
    def _no_image(cls, value: Any) -> Any:
        """An empty ``image`` object (older logs) means no image statistics."""
        return value or None

    def timestamp(self) -> datetime | None:
        """``time`` as an aware datetime (UTC when it names no zone); None when unreadable."""
        try:
            parsed = datetime.fromisoformat(self.time)
        except ValueError:
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
