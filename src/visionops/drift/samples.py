"""The two samples drift compares: the bundle's reference and the current traffic.

The current sample comes from a prediction log (what ``serve`` and ``predict --log`` write)
or from a folder of images run through the bundle in-process. Both end as a :class:`Sample`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from visionops.artifacts import PredictionRecord
from visionops.drift.features import IMAGE_FEATURES, image_features
from visionops.errors import DriftError, VisionOpsError
from visionops.inference.bundle import Bundle
from visionops.tasks import task_for

__all__ = [
    "Sample",
    "images_sample",
    "log_sample",
    "parse_since",
    "records_sample",
    "reference_sample",
    "subset",
]

HELD_OUT_SPLITS = ("val", "test")


@dataclass
class Sample:
    """Images summarised for the tests.

    Attributes:
        source: Where the sample came from, for people.
        count: Images in the sample.
        embeddings: ``(n, D)`` float32 (rows without an embedding removed), or None.
        outputs: ``(n, K)`` task outputs, or None when the records do not hold them.
        classes: Predicted class indices (classification), or None.
        features: Image statistics by name, each ``(n,)`` (NaN where missing).
        times: Record times (current samples from a log), or None.
        split: The prepared-dataset split the reference was drawn from.
        notes: Things the report should say (skipped lines, other model versions).
    """

    source: str
    count: int
    embeddings: NDArray[np.float32] | None
    outputs: NDArray[np.float64] | None
    classes: NDArray[np.int64] | None
    features: dict[str, NDArray[np.float64]]
    times: list[datetime] | None = None
    split: str | None = None
    notes: list[str] = field(default_factory=list)


def reference_sample(bundle: Bundle) -> Sample:
    """Load ``reference.npz`` of a bundle.

    Raises:
        DriftError: No reference, or one drawn from training images (a model is more confident
            on those, which turns output tests into false alarms).
    """
    path = bundle.path / "reference.npz"
    if not path.is_file():
        raise DriftError(
            f"bundle {bundle.path} has no reference.npz — rebuild it with `visionops drift"
            f" reference {bundle.path.parent}`"
        )
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except (OSError, ValueError) as exc:
        raise DriftError(
            f"{path} cannot be read ({exc}) — rebuild it with `visionops drift reference"
            f" {bundle.path.parent}`"
        ) from None
    split = str(arrays["split"]) if "split" in arrays else "train"
    if split not in HELD_OUT_SPLITS:
        raise DriftError(
            f"the reference of {bundle.path} comes from the {split} split, not from held-out"
            " images (a model is more confident on its own training images, so the output tests"
            " would raise false alarms) — rebuild it with `visionops drift reference"
            f" {bundle.path.parent} --split val`"
        )
    predictions = np.asarray(arrays["predictions"], np.float64)
    predictions = predictions.reshape(len(predictions), -1)
    stat_names = [str(name) for name in arrays.get("stat_names", [])]
    stats = np.asarray(arrays.get("stats", np.zeros((len(predictions), 0))), np.float64)
    features = {name: stats[:, i] for i, name in enumerate(stat_names) if name in IMAGE_FEATURES}
    classes = task_for(bundle.meta).predicted_classes(predictions)
    return Sample(
        source=f"{path} ({split} split, {len(predictions)} images)",
        count=len(predictions),
        embeddings=np.asarray(arrays["embeddings"], np.float32),
        outputs=predictions,
        classes=classes,
        features=features,
        split=split,
    )


_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """``2026-11-22T06:00``, ``2026-11-22`` or a duration back from now (``90m``, ``24h``, ``7d``).

    Raises:
        DriftError: Neither form.
    """
    match = _DURATION.match(text.strip().lower())
    if match:
        amount = float(match.group(1))
        return (now or datetime.now(UTC)) - timedelta(**{_UNITS[match.group(2)]: amount})
    try:
        parsed = datetime.fromisoformat(text.strip())
    except ValueError:
        raise DriftError(
            f"--since {text!r} is neither a time (2026-11-22T06:00) nor a duration (24h, 7d)"
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def records_sample(
    bundle: Bundle,
    records: Sequence[PredictionRecord],
    embeddings: NDArray[np.float32] | None,
    source: str,
) -> Sample:
    """Summarise prediction records (already filtered) as a sample."""
    outputs = _output_rows([record.output for record in records])
    classes = task_for(bundle.meta).predicted_classes(outputs) if outputs is not None else None
    features = image_features([record.image for record in records])
    times = [record.timestamp() for record in records]
    if embeddings is not None:
        keep = np.isfinite(embeddings).all(axis=1)
        embeddings = embeddings[keep] if keep.any() else None
    return Sample(
        source=source,
        count=len(records),
        embeddings=embeddings,
        outputs=outputs,
        classes=classes,
        features=features,
        times=None if any(t is None for t in times) else [t for t in times if t is not None],
    )


def _output_rows(rows: Sequence[list[float] | None]) -> NDArray[np.float64] | None:
    """The logged main outputs as an ``(n, K)`` matrix, or None unless every record has one."""
    if not rows or not all(rows):
        return None
    if len({len(row) for row in rows if row}) != 1:
        return None
    matrix = np.asarray(rows, dtype=np.float64)
    return matrix if np.isfinite(matrix).all() else None


def log_sample(
    bundle: Bundle,
    log_dir: str | Path | Sequence[str | Path],
    *,
    last: int | None = None,
    since: datetime | None = None,
) -> Sample:
    """The bundle's records from prediction logs, optionally the last N or those since a time.

    Several folders, URLs and globs (a whole fleet's replicas) are merged by time, so
    ``last`` and ``since`` select across every replica. Records of other model versions are
    left out (and the report says so); lines that are not valid records are skipped and
    counted.

    Args:
        bundle: The bundle whose records are wanted.
        log_dir: One log location or several (folders, segments, URLs, globs).
        last: Only the last N records of this bundle.
        since: Only records at or after this time.

    Raises:
        DriftError: No log, an unreachable URL, an empty log, no record of this bundle.
    """
    from visionops.inference.predlog import read_prediction_log

    locations = [log_dir] if isinstance(log_dir, str | Path) else list(log_dir)
    log_dir = ", ".join(str(location) for location in locations)
    try:
        log = read_prediction_log(locations)
    except VisionOpsError as exc:
        raise DriftError(str(exc)) from None
    notes: list[str] = []
    # A record without image statistics cannot be tested: counted with the broken lines.
    valid = [record.image is not None for record in log.records]
    corrupted = log.skipped_lines + valid.count(False)
    if corrupted:
        notes.append(f"{corrupted} corrupted log lines were skipped")
    if not any(valid):
        raise DriftError(
            f"the prediction log in {log_dir} holds no records"
            + (f" ({corrupted} corrupted lines skipped)" if corrupted else "")
            + " — serve traffic first with `visionops serve`, or pass --current IMAGES_FOLDER"
        )
    version = bundle.model_version
    versions: dict[str, int] = {}
    chosen: list[int] = []
    for index, (record, ok) in enumerate(zip(log.records, valid, strict=True)):
        if not ok:
            continue
        record_version = record.model_version
        versions[record_version] = versions.get(record_version, 0) + 1
        if record_version == version:
            chosen.append(index)
    if not chosen:
        seen = ", ".join(sorted(versions))
        raise DriftError(
            f"the prediction log in {log_dir} is from another bundle (model versions {seen};"
            f" this bundle is {version}) — pass the bundle that served it, or its own log"
        )
    others = {v: n for v, n in versions.items() if v != version}
    if others:
        notes.append(
            "the log mixes model versions ("
            + ", ".join(f"{n} records of {v}" for v, n in sorted(others.items()))
            + f"); only the {len(chosen)} records of {version} were used"
        )
    if since is not None:
        chosen = [i for i in chosen if (t := log.records[i].timestamp()) is not None and t >= since]
    if last is not None:
        chosen = chosen[-last:]
    records = [log.records[i] for i in chosen]
    embeddings = None
    if log.embeddings is not None:
        embeddings = log.embeddings[np.asarray(chosen, dtype=np.int64)]
    sample = records_sample(bundle, records, embeddings, f"prediction log {log_dir}")
    if len(log.files) > 1:
        notes.append(f"merged by time from {len(log.files)} log segments")
    sample.notes = notes
    return sample


def images_sample(bundle: Bundle, paths: Sequence[Path], progress: Any = None) -> Sample:
    """Run image files or folders through the bundle (ONNX Runtime) and summarise them.

    Raises:
        DriftError: No readable image.
    """
    from visionops.inference.predict import predict_files
    from visionops.progress import NULL_PROGRESS

    try:
        result = predict_files(bundle, paths, progress=progress or NULL_PROGRESS)
    except VisionOpsError as exc:
        raise DriftError(str(exc)) from None
    shown = ", ".join(str(p) for p in paths)
    sample = records_sample(bundle, result.records, result.embeddings, f"images in {shown}")
    sample.times = None
    if result.failures:
        sample.notes.append(f"{len(result.failures)} files could not be decoded and were skipped")
    return sample


def check_compatible(reference: Sample, current: Sample) -> None:
    """Refuse a current sample whose embeddings or outputs do not match the reference's.

    Raises:
        DriftError: Another embedding size or output width (a log from another bundle).
    """
    if reference.embeddings is not None and current.embeddings is not None:
        ref_dim, cur_dim = reference.embeddings.shape[1], current.embeddings.shape[1]
        if ref_dim != cur_dim:
            raise DriftError(
                f"the current embeddings have {cur_dim} dimensions but the bundle's reference"
                f" has {ref_dim} — the log was written by another bundle; pass that bundle"
            )
    if (
        reference.outputs is not None
        and current.outputs is not None
        and reference.outputs.shape[1] != current.outputs.shape[1]
    ):
        raise DriftError(
            f"the current outputs have {current.outputs.shape[1]} columns but the reference"
            f" has {reference.outputs.shape[1]} — rebuild the reference with `visionops"
            " drift reference`"
        )


def subset(sample: Sample, rows: NDArray[np.int64], source: str) -> Sample:
    """The rows ``rows`` of a sample (embeddings assumed aligned with records)."""
    aligned = sample.embeddings is not None and len(sample.embeddings) == sample.count
    return Sample(
        source=source,
        count=len(rows),
        embeddings=sample.embeddings[rows] if aligned and sample.embeddings is not None else None,
        outputs=None if sample.outputs is None else sample.outputs[rows],
        classes=None if sample.classes is None else sample.classes[rows],
        features={name: values[rows] for name, values in sample.features.items()},
        times=None if sample.times is None else [sample.times[i] for i in rows],
        split=sample.split,
    )
