"""Typed settings and how they are resolved.

Layers, lowest to highest priority::

    built-in defaults < recipe < ./visionops.yaml < --config FILE < flags and key=value overrides

Every layer is a (partial) nested mapping with the same shape as :class:`Settings`. Unknown
keys and wrong types are :class:`~visionops.errors.ConfigError` naming the dotted key and,
for unknown keys, the closest valid one. Types are strict: a YAML ``true`` (or ``yes``) is not
the number 1, ``"5"`` is not 5, and a key given twice in one YAML mapping is refused with its
line, instead of the last one silently winning. Only paths accept plain strings.

Examples:
    >>> settings = load_settings(overrides=["train.epochs=3", "model.name=resnet34"])
    >>> settings.train.epochs
    3
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    StringConstraints,
    ValidationError,
    field_validator,
)

from visionops.errors import ConfigError

__all__ = [
    "PROJECT_FILE",
    "AnomalySettings",
    "AugmentSettings",
    "DataSettings",
    "DemoSettings",
    "DriftSettings",
    "EvalSettings",
    "ExportSettings",
    "ModelSettings",
    "ResizePolicy",
    "ServeSettings",
    "SettingSource",
    "Settings",
    "Task",
    "TrackingSettings",
    "TrainSettings",
    "available_recipes",
    "explain_setting",
    "load_recipe",
    "load_settings",
    "load_yaml",
    "parse_overrides",
    "settings_to_yaml",
]

Task = Literal["classification", "multilabel", "regression", "anomaly"]
ResizePolicy = Literal["crop", "letterbox"]
BackboneLayer = Annotated[str, StringConstraints(pattern=r"^(layer[1-4]|block[0-9]{1,3})$")]
"""``layer1``..``layer4`` (a CNN's stage at stride 4..32, a ViT's block ending that quarter of
its depth) or ``block<i>`` (a ViT's block ``i``)."""
PROJECT_FILE = "visionops.yaml"

_DEVICE_PATTERN = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


class _Section(BaseModel):
    # strict: no bool -> int, no "5" -> 5; paths opt back into strings (Field(strict=False)).
    model_config = ConfigDict(extra="forbid", validate_assignment=True, strict=True)


class DemoSettings(_Section):
    """Size of the embedded synthetic datasets (``demo:<name>`` sources)."""

    images_per_class: int = Field(80, ge=2, description="Images per class (or per item kind).")
    image_size: int = Field(96, ge=32, le=1024, description="Side of generated images, pixels.")
    seed: int = Field(0, description="Generator seed; same seed, same files.")
    defects: Literal["coarse", "faint"] = Field(
        "coarse",
        description=(
            "demo:anomaly defects: coarse = holes, scratches, stains; faint = thin (1.5 px),"
            " low-contrast (±22 grey levels) curved threads, the hard case."
        ),
    )


class DataSettings(_Section):
    """Where data lives and how it is prepared."""

    source: str = Field("demo:shapes", description="What `data fetch` gets by default.")
    raw_root: Path = Field(
        Path("data/raw"), strict=False, description="Folder of fetched datasets."
    )
    prepared_root: Path = Field(
        Path("data/prepared"), strict=False, description="Folder of prepared ones."
    )
    task: Task | None = Field(None, description="Force the task instead of inferring it.")
    image_size: int = Field(64, ge=16, le=1024, description="Prepared image side, pixels.")
    channels: Literal[1, 3] = Field(3, description="1 = grayscale, 3 = RGB.")
    resize: ResizePolicy = Field(
        "crop", description="crop: shorter side + centre crop; letterbox: pad."
    )
    val_ratio: float = Field(0.15, ge=0.0, lt=1.0, description="Validation share when splitting.")
    test_ratio: float = Field(0.15, ge=0.0, lt=1.0, description="Test share when splitting.")
    seed: int = Field(0, description="Split seed.")
    workers: int = Field(0, ge=0, description="Decode processes; 0 = one per core.")
    max_image_pixels: int = Field(
        64_000_000, ge=1, description="Images above this many pixels are rejected (bombs)."
    )
    max_archive_bytes: int = Field(
        20 * 1024**3, ge=1, description="Cap on the total unpacked size of an archive."
    )
    camera: str = Field("A", description="Nutrition5k layout: which camera to take.")
    demo: DemoSettings = Field(default_factory=DemoSettings)

    @field_validator("test_ratio")
    @classmethod
    def _ratios_leave_training_data(cls, test_ratio: float, info: Any) -> float:
        val_ratio = info.data.get("val_ratio", 0.0)
        if val_ratio + test_ratio >= 0.9:
            raise ValueError(
                f"val_ratio + test_ratio = {val_ratio + test_ratio:.2f} leaves too little to"
                " train on; keep the sum below 0.9"
            )
        return test_ratio


class AugmentSettings(_Section):
    """Training-time augmentation, applied on uint8 tensor batches (never on val/test)."""

    enabled: bool = True
    hflip: float = Field(0.5, ge=0, le=1, description="Horizontal flip probability.")
    vflip: float = Field(0.0, ge=0, le=1, description="Vertical flip probability.")
    rotate_degrees: float = Field(0.0, ge=0, le=180, description="Random rotation range.")
    crop_scale: float = Field(
        0.8, gt=0, le=1, description="Smallest area share of a random resized crop; 1 = none."
    )
    color_jitter: float = Field(0.1, ge=0, le=1, description="Brightness/contrast/saturation.")


class ModelSettings(_Section):
    """Which network to build."""

    name: str = Field(
        "resnet18",
        description="A torchvision name or timm:<name>[.<tag>] (`visionops models`).",
    )
    pretrained: bool | str = Field(
        False,
        description="Start from pretrained weights in the local cache: true takes any"
        " official ImageNet file of a torchvision architecture in TORCH_HOME (DEFAULT first)"
        " or a timm model's weights in the Hugging Face cache (HF_HUB_OFFLINE honoured); a"
        " torchvision weights name (IMAGENET1K_V1) picks that file.",
    )
    weights: str | None = Field(
        None,
        description="Start from this state dict (.pth, .pt or .safetensors) instead; its old"
        " classifier is dropped and every other shape checked.",
    )
    freeze_backbone: bool = Field(False, description="Train only the new head.")
    dropout: float = Field(0.0, ge=0, lt=1, description="Dropout before the head.")


_INTERVAL = re.compile(r"(?P<count>\d+)\s*(?P<unit>epochs?|steps?|mins?|minutes?)")


class TrainSettings(_Section):
    """The training engine."""

    epochs: int = Field(10, ge=1)
    batch_size: int = Field(64, ge=1)
    lr: float = Field(2e-3, gt=0, description="Peak AdamW learning rate.")
    weight_decay: float = Field(0.05, ge=0)
    warmup_epochs: float = Field(1.0, ge=0)
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    grad_clip: float | None = Field(5.0, gt=0, description="Max gradient norm; null = off.")
    accumulate: int = Field(1, ge=1, description="Gradient accumulation steps.")
    ema: bool = Field(False, description="Keep an exponential moving average of weights.")
    ema_decay: float = Field(0.998, gt=0, lt=1)
    patience: int | None = Field(None, ge=1, description="Early-stopping patience in epochs.")
    val_every: int = Field(
        1,
        ge=1,
        description=(
            "Validate every N epochs and at the last; best.pt and early stopping see validated"
            " epochs only (best.pt: the latest epoch within validation noise of the top score)."
            " BatchNorm statistics are re-computed on up to 1,024 training images before a"
            " validation where they lag the weights (over 1 % from before the epoch: short"
            " epochs, MobileNet momenta, EMA)."
        ),
    )
    amp: bool = Field(True, description="Mixed precision where the device supports it.")
    channels_last: bool = True
    deterministic: bool = False
    seed: int = 0
    checkpoint_every: str = Field(
        "1epoch",
        description=(
            "How often last.pt is written: `1epoch`, `500steps` or `10min`; a mid-epoch"
            " checkpoint resumes at the exact batch."
        ),
    )
    augment: AugmentSettings = Field(default_factory=AugmentSettings)

    @field_validator("checkpoint_every")
    @classmethod
    def _interval(cls, value: str) -> str:
        match = _INTERVAL.fullmatch(value.strip())
        if match is None or int(match["count"]) < 1:
            raise ValueError(
                f"{value!r} is not an interval — write a positive count and a unit:"
                " `1epoch`, `500steps` or `10min`"
            )
        return value.strip()

    @property
    def checkpoint_interval(self) -> tuple[int, Literal["epoch", "step", "min"]]:
        """``checkpoint_every`` as (count, unit): ``"500steps"`` is ``(500, "step")``."""
        match = _INTERVAL.fullmatch(self.checkpoint_every)
        assert match is not None  # checked by the validator
        unit = match["unit"].rstrip("s")
        return int(match["count"]), "min" if unit.startswith("min") else unit  # type: ignore[return-value]


class AnomalySettings(_Section):
    """The memory-bank anomaly detector (PatchCore), trained in one pass over good images."""

    layers: list[BackboneLayer] = Field(
        default_factory=lambda: ["layer2", "layer3"],
        min_length=1,
        description="Backbone layers whose 3x3-averaged features are concatenated: layer1..4"
        " (a ViT: the block ending that quarter of its depth) or block<i> (a ViT's block i).",
    )
    coreset_ratio: float = Field(
        0.01,
        gt=0,
        le=1,
        description="Share of the training patches kept in the bank (PatchCore-1%; small"
        " data sets want more, the demo keeps 0.1).",
    )
    projection_dim: int | None = Field(
        None, ge=8, description="Random projection of stored features; null keeps them all."
    )
    coreset_projection_dim: int | None = Field(
        128, ge=8, description="Dimensions distances are measured in while picking the coreset."
    )
    sigma: float = Field(4.0, ge=0, description="Heatmap Gaussian sigma, pixels at 224 px.")
    target_fpr: float = Field(
        0.05, gt=0, lt=1, description="Threshold: good held-out images allowed above it."
    )
    max_bank_mb: float = Field(
        2048.0, gt=0, description="Refuse up front when the training patch features exceed it."
    )
    chunk: int = Field(4096, ge=64, description="Bank rows per distance matrix product.")
    category: str | None = Field(
        None, description="MVTec AD category to prepare from a multi-category download."
    )


class EvalSettings(_Section):
    """``visionops eval``."""

    precision: Literal["auto", "fp32"] = Field(
        "auto",
        description="auto: mixed precision where the device has it (CUDA); fp32: full precision.",
    )


class TrackingSettings(_Section):
    """Weights & Biases."""

    mode: Literal["disabled", "offline", "online"] = "disabled"
    project: str = "visionops"
    entity: str | None = None


class ExportSettings(_Section):
    """ONNX export."""

    opset: int = Field(18, ge=13)
    layout: Literal["NCHW", "NHWC"] = Field("NCHW", description="Pixel layout of the input.")
    quantize: Literal["none", "int8"] = "none"
    max_accuracy_drop: float = Field(0.01, ge=0, description="int8 refused above this drop.")
    parity_atol: float = Field(1e-4, gt=0)
    reference_samples: int = Field(512, ge=16, description="Training images in reference.npz.")


class ServeSettings(_Section):
    """The HTTP server."""

    models: list[str] = Field(
        default_factory=list,
        description="Models to serve, the first the default: [NAME=]SOURCE, SOURCE a bundle or"
        " run folder, a run name, an fsspec URL of a bundle (s3://, gs://, https://) or"
        " wandb:entity/project/name:alias; [] = runs/latest. Command-line models replace it.",
    )
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    workers: int = Field(1, ge=1)
    threads: int = Field(
        0,
        ge=0,
        description="ONNX Runtime threads per batch, one batch at a time; 0 = one batch per"
        " core at once, one thread each.",
    )
    max_batch: int = Field(8, ge=1)
    max_wait_ms: float = Field(2.0, ge=0)
    queue_size: int = Field(256, ge=1)
    timeout_s: float = Field(10.0, gt=0)
    max_upload_mb: float = Field(10.0, gt=0)
    api_key: SecretStr | None = Field(None, description="Never printed, logged or saved.")
    allow_unverified: bool = False
    log_images: bool = False
    log_dir: str | None = Field(
        None,
        description="Prediction log folder or URL (s3://, gs://, any fsspec URL); null ="
        " <run>/predictions.",
    )
    log_upload_seconds: float = Field(
        60.0, gt=0, description="With a log URL: upload the open segment this often (seconds)."
    )
    top_k: int = Field(5, ge=1)
    precision: Literal["auto", "fp32", "int8"] = Field(
        "auto", description="Model run: auto = the int8 model when export kept one, else fp32."
    )


class DriftSettings(_Section):
    """Drift detection."""

    alpha: float = Field(0.05, gt=0, lt=1, description="Significance level of the tests.")
    online: bool = Field(
        True, description="serve: rerun the tests on a rolling window in a background thread."
    )
    window: int = Field(1000, ge=10, description="Most recent predictions compared.")
    every: int = Field(
        200, ge=1, description="serve: rerun the tests after this many new predictions."
    )
    max_cpu_share: float = Field(
        0.02,
        gt=0,
        le=1,
        description="serve: most of the machine's CPU time the online tests may take; runs are"
        " spaced out to stay under it.",
    )
    statistics_cpu_share: float = Field(
        0.02,
        gt=0,
        le=1,
        description="serve: most of the machine's CPU time the uploads' image statistics may"
        " take; when uploads come faster, a random share of them is measured (every one while"
        " there is room).",
    )
    permutations: int = Field(1000, ge=19, description="MMD permutation-test relabellings.")
    min_samples: int = Field(30, ge=5, description="Fewest images on either side of a test.")
    pca_dim: int | None = Field(
        32, ge=2, description="Reduce embeddings to this many PCA components; null = off."
    )
    pca_fraction: float = Field(
        0.25, gt=0, lt=1, description="Share of the reference that fits the PCA (not tested)."
    )
    reference_split: Literal["val", "test"] = Field(
        "val", description="Held-out split the reference is drawn from."
    )
    seed: int = Field(0, description="Seed of permutations, PCA split and reference sample.")


class Settings(_Section):
    """Every setting of visionops. Saved with each run as ``config.yaml``."""

    recipe: str | None = Field(None, description="Recipe the settings start from.")
    device: str = Field("auto", description="auto | cpu | cuda | cuda:N | mps")
    runs_root: Path = Field(Path("runs"), strict=False, description="Folder of training runs.")
    data: DataSettings = Field(default_factory=DataSettings)
    model: ModelSettings = Field(default_factory=ModelSettings)
    train: TrainSettings = Field(default_factory=TrainSettings)
    eval: EvalSettings = Field(default_factory=EvalSettings)
    tracking: TrackingSettings = Field(default_factory=TrackingSettings)
    export: ExportSettings = Field(default_factory=ExportSettings)
    serve: ServeSettings = Field(default_factory=ServeSettings)
    drift: DriftSettings = Field(default_factory=DriftSettings)
    anomaly: AnomalySettings = Field(default_factory=AnomalySettings)

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        if not _DEVICE_PATTERN.match(value):
            raise ValueError("use auto, cpu, cuda, cuda:N or mps")
        return value


# --------------------------------------------------------------------------- resolution


def _valid_keys(model: type[BaseModel], prefix: str = "") -> dict[str, type[BaseModel] | None]:
    """Map every dotted key of ``model`` to its sub-model (or None for a leaf)."""
    keys: dict[str, type[BaseModel] | None] = {}
    for name, field in model.model_fields.items():
        dotted = f"{prefix}{name}"
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            keys[dotted] = annotation
            keys.update(_valid_keys(annotation, dotted + "."))
        else:
            keys[dotted] = None
    return keys


_ALL_KEYS = _valid_keys(Settings)


def _suggest(key: str) -> str:
    leaf = key.rsplit(".", 1)[-1]
    candidates = list(_ALL_KEYS)
    close = difflib.get_close_matches(key, candidates, n=1, cutoff=0.6)
    if not close:
        by_leaf = {k.rsplit(".", 1)[-1]: k for k in candidates}
        leaf_match = difflib.get_close_matches(leaf, list(by_leaf), n=1, cutoff=0.6)
        close = [by_leaf[leaf_match[0]]] if leaf_match else []
    return f" — did you mean '{close[0]}'?" if close else ""


def _check_keys(layer: Mapping[str, Any], origin: str, prefix: str = "") -> None:
    for key, value in layer.items():
        dotted = f"{prefix}{key}"
        if dotted not in _ALL_KEYS:
            raise ConfigError(
                f"unknown setting '{dotted}' in {origin}{_suggest(dotted)}"
                " (see `visionops config show` for every key)"
            )
        if _ALL_KEYS[dotted] is not None and isinstance(value, Mapping):
            _check_keys(value, origin, dotted + ".")


def _deep_merge(base: dict[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in top.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _nest(dotted: Mapping[str, Any]) -> dict[str, Any]:
    nested: dict[str, Any] = {}
    for key, value in dotted.items():
        node = nested
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return nested


class _DuplicateKeyError(yaml.YAMLError):
    def __init__(self, key: Any, line: int, first_line: int) -> None:
        super().__init__(f"duplicate key {key!r}")
        self.key, self.line, self.first_line = key, line, first_line


class _StrictLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses duplicate keys and reads ``1e-3`` as a number.

    PyYAML follows YAML 1.1, where a float needs a dot (``1e-3`` is a string); YAML 1.2 and
    every user reads it as 0.001, and with strict settings a string would be refused.
    """


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    lines: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        if key in lines:
            raise _DuplicateKeyError(key, line, lines[key])
        lines[key] = line
    return loader.construct_mapping(node, deep=True)


_StrictLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _construct_mapping,
)
_StrictLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def load_yaml(text: str, origin: str) -> Any:
    """Parse YAML strictly: duplicate keys are refused with their line; ``1e-3`` is a float.

    Args:
        text: The YAML document.
        origin: What the text is (a file name, "recipe x"), for the error message.

    Returns:
        The parsed document (``None`` for an empty one).

    Raises:
        ConfigError: Invalid YAML or a duplicate key.
    """
    try:
        return yaml.load(text, Loader=_StrictLoader)
    except _DuplicateKeyError as exc:
        raise ConfigError(
            f"{origin} sets {exc.key!r} twice in one mapping (line {exc.first_line} and line"
            f" {exc.line}) — keep only one"
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{origin} is not valid YAML{where} — fix the syntax") from None


def _read_yaml(path: Path, origin: str) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist — check the path") from None
    content = load_yaml(text, origin)
    if content is None:
        return {}
    if not isinstance(content, dict):
        raise ConfigError(f"{origin} must hold a mapping of settings, not {type(content).__name__}")
    return content


def parse_overrides(overrides: Sequence[str]) -> dict[str, Any]:
    """Parse ``key=value`` strings; values are YAML scalars (``3``, ``true``, ``null``, ``[1,2]``).

    Args:
        overrides: Strings such as ``train.epochs=5``.

    Returns:
        A flat mapping of dotted keys to parsed values.

    Raises:
        ConfigError: An item has no ``=`` or an empty key.
    """
    parsed: dict[str, Any] = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"override '{item}' is not key=value — write it like train.epochs=5")
        if not raw.strip():
            parsed[key] = ""
            continue
        try:
            parsed[key] = yaml.load(raw, Loader=_StrictLoader)
        except _DuplicateKeyError:
            parsed[key] = load_yaml(raw, f"override '{item}'")  # raises, with the line
        except yaml.YAMLError:
            parsed[key] = raw  # not YAML: the text itself
    return parsed


def available_recipes() -> dict[str, str]:
    """Return the shipped recipes as ``{name: first comment line}``."""
    recipes: dict[str, str] = {}
    for entry in sorted(resources.files("visionops.recipes").iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".yaml"):
            first = entry.read_text(encoding="utf-8").splitlines()[0]
            recipes[entry.name.removesuffix(".yaml")] = first.lstrip("# ").strip()
    return recipes


def load_recipe(name: str) -> dict[str, Any]:
    """Load a shipped recipe (or a YAML file path) as a settings layer.

    Raises:
        ConfigError: No recipe of that name.
    """
    path = Path(name)
    if path.suffix in {".yaml", ".yml"} and path.is_file():
        return _read_yaml(path, f"recipe {path}")
    known = available_recipes()
    if name not in known:
        close = difflib.get_close_matches(name, list(known), n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        raise ConfigError(
            f"unknown recipe '{name}' — {hint}`visionops recipes list` shows them all"
        )
    text = resources.files("visionops.recipes").joinpath(f"{name}.yaml").read_text("utf-8")
    layer = load_yaml(text, f"recipe '{name}'") or {}
    layer["recipe"] = name
    return dict(layer)


def _format_validation_error(exc: ValidationError) -> str:
    first = exc.errors()[0]
    key = ".".join(str(part) for part in first["loc"])
    value = first.get("input")
    shown = "" if isinstance(value, dict) else f" (got {value!r})"
    kind = first.get("type", "")
    hint = "fix it in your config or override"
    if isinstance(value, bool) and kind != "bool_type":
        hint = "true/false/yes/no are booleans, not numbers or text; write the value itself"
    elif kind == "bool_type":
        hint = f"write {key}=true or {key}=false"
    elif kind == "string_type":
        hint = f"quote it to make it text, e.g. {key}='{value}'"
    return f"setting '{key}'{shown}: {first['msg']} — {hint}"


def load_settings(
    *,
    recipe: str | None = None,
    config_file: Path | None = None,
    overrides: Sequence[str] = (),
    flags: Mapping[str, Any] | None = None,
    cwd: Path | None = None,
) -> Settings:
    """Resolve settings from every layer.

    Args:
        recipe: Recipe name or YAML path; else the ``recipe`` key of a higher layer, if any.
        config_file: A ``--config`` YAML file.
        overrides: ``key=value`` strings from the command line.
        flags: Dotted keys from command-line flags; ``None`` values mean "not given".
        cwd: Folder searched for ``visionops.yaml`` (default: the current folder).

    Returns:
        The validated settings.

    Raises:
        ConfigError: Unknown key, wrong type, unreadable file or unknown recipe.
    """
    merged: dict[str, Any] = {}
    for layer in _layers(recipe, config_file, overrides, flags, cwd):
        merged = _deep_merge(merged, layer.values)
    try:
        return Settings.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc)) from None


@dataclass(frozen=True)
class _Layer:
    """One layer of settings: where it comes from (in words) and its nested values."""

    origin: str
    source: str
    values: dict[str, Any]


def _layers(
    recipe: str | None,
    config_file: Path | None,
    overrides: Sequence[str],
    flags: Mapping[str, Any] | None,
    cwd: Path | None,
) -> list[_Layer]:
    """Every layer that sets something, lowest first: recipe, visionops.yaml, --config, CLI."""
    project_path = (cwd or Path.cwd()) / PROJECT_FILE
    layers: list[_Layer] = []
    if project_path.is_file():
        values = _read_yaml(project_path, str(project_path))
        layers.append(_Layer(str(project_path), PROJECT_FILE, values))
    if config_file is not None:
        values = _read_yaml(config_file, str(config_file))
        layers.append(_Layer(str(config_file), f"--config {config_file}", values))
    given_flags = {k: v for k, v in (flags or {}).items() if v is not None}
    layers.append(_Layer("the command line", "key=value", _nest(parse_overrides(overrides))))
    layers.append(_Layer("the command line", "a flag", _nest(given_flags)))
    for layer in layers:
        _check_keys(layer.values, layer.origin)

    recipe_name = recipe
    for layer in layers:
        recipe_name = layer.values.get("recipe", recipe_name) or recipe_name
    if recipe_name:
        recipe_layer = load_recipe(recipe_name)
        _check_keys(recipe_layer, f"recipe '{recipe_name}'")
        layers.insert(0, _Layer(f"recipe '{recipe_name}'", f"recipe {recipe_name}", recipe_layer))
    return layers


@dataclass(frozen=True)
class SettingSource:
    """One setting's resolved value and the layer that set it (``visionops config show KEY``).

    Attributes:
        key: The dotted key (``train.epochs``); a section (``train``) holds a mapping.
        value: The resolved value, as JSON would hold it.
        layer: ``default``, ``recipe NAME``, ``visionops.yaml``, ``--config FILE``,
            ``key=value`` or ``a flag``: the highest layer that sets the key (for a section,
            any key inside it).
    """

    key: str
    value: Any
    layer: str


def explain_setting(
    key: str,
    *,
    recipe: str | None = None,
    config_file: Path | None = None,
    overrides: Sequence[str] = (),
    flags: Mapping[str, Any] | None = None,
    cwd: Path | None = None,
) -> SettingSource:
    """Resolve settings as :func:`load_settings` does; say ``key``'s value and where it came from.

    Raises:
        ConfigError: An unknown key (with a "did you mean"), or invalid settings.
    """
    if key not in _ALL_KEYS:
        raise ConfigError(
            f"unknown setting '{key}'{_suggest(key)} (see `visionops config show` for every key)"
        )
    settings = load_settings(
        recipe=recipe, config_file=config_file, overrides=overrides, flags=flags, cwd=cwd
    )
    value: Any = settings.model_dump(mode="json")
    for part in key.split("."):
        value = value[part]
    layer = "default"
    for candidate in _layers(recipe, config_file, overrides, flags, cwd):
        node: Any = candidate.values
        for part in key.split("."):
            node = node.get(part, _MISSING) if isinstance(node, Mapping) else _MISSING
        if node is not _MISSING:
            layer = candidate.source
    return SettingSource(key=key, value=value, layer=layer)


_MISSING = object()


def settings_to_yaml(settings: Settings) -> str:
    """Render settings as YAML, the same form ``--config`` reads back."""
    return yaml.safe_dump(settings.model_dump(mode="json"), sort_keys=False)
