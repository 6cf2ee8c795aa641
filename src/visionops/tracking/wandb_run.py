"""Weights & Biases: experiment tracking for training runs, and sweeps.

Tracking is off unless ``tracking.mode`` is ``offline`` (files only, ``wandb sync`` later) or
``online``. wandb is imported only when tracking is on. A sweep file is the W&B sweep
configuration with visionops setting keys as parameter names; :func:`sweep_config` checks the
keys and adds the command the agent runs (``visionops train key=value ...``).

Examples:
    >>> tracker = start_tracking(TrackingSettings(), run_dir=Path("runs/run-001"),
    ...                          run_name="run-001", config={})
    >>> tracker.enabled
    False
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from loguru import logger
from numpy.typing import NDArray

from visionops.config import Settings, TrackingSettings, load_settings, load_yaml
from visionops.errors import ConfigError, TrackingError

__all__ = [
    "NullTracker",
    "SweepResult",
    "Tracker",
    "WandbTracker",
    "create_sweep",
    "load_sweep_file",
    "start_tracking",
    "sweep_config",
]

SWEEP_METRIC = "best_metric"
"""Summary key every run updates with the best value of its monitored metric so far: one
name works as the sweep target for every task (all monitored metrics grow when better)."""


class Tracker(Protocol):
    """What the training engine reports to (W&B, or nothing)."""

    enabled: bool

    def log_epoch(self, epoch: int, metrics: Mapping[str, float]) -> None:
        """Per-epoch metrics (``train/loss``, ``val/accuracy`` ...)."""

    def log_summary(self, metrics: Mapping[str, Any]) -> None:
        """Run-level values (best metric, test metrics)."""

    def log_predictions(self, images: NDArray[np.uint8], captions: Sequence[str]) -> None:
        """A grid of sample images ``(N, H, W, C)`` with their predictions."""

    def log_confusion_matrix(
        self, targets: Sequence[int], predicted: Sequence[int], class_names: Sequence[str]
    ) -> None:
        """A confusion matrix (classification)."""

    def log_checkpoint(self, path: Path, name: str, metadata: Mapping[str, Any]) -> None:
        """A checkpoint file as a model artifact."""

    def finish(self, status: str) -> None:
        """Close the tracking run (``completed``, ``failed``, ``interrupted``)."""


class NullTracker:
    """Tracking switched off: every call does nothing."""

    enabled = False
    run_id: str | None = None
    url: str | None = None

    def log_epoch(self, epoch: int, metrics: Mapping[str, float]) -> None:
        """Do nothing."""

    def log_summary(self, metrics: Mapping[str, Any]) -> None:
        """Do nothing."""

    def log_predictions(self, images: NDArray[np.uint8], captions: Sequence[str]) -> None:
        """Do nothing."""

    def log_confusion_matrix(
        self, targets: Sequence[int], predicted: Sequence[int], class_names: Sequence[str]
    ) -> None:
        """Do nothing."""

    def log_checkpoint(self, path: Path, name: str, metadata: Mapping[str, Any]) -> None:
        """Do nothing."""

    def finish(self, status: str) -> None:
        """Do nothing."""


class WandbTracker:
    """A live ``wandb`` run.

    Args:
        run: The object ``wandb.init`` returned.
    """

    enabled = True

    def __init__(self, run: Any) -> None:
        self._run = run
        self.run_id: str = str(run.id)
        self.url: str | None = getattr(run, "url", None)

    def log_epoch(self, epoch: int, metrics: Mapping[str, float]) -> None:
        """Log one epoch's metrics at step ``epoch``."""
        self._run.log({"epoch": epoch, **metrics}, step=epoch)

    def log_summary(self, metrics: Mapping[str, Any]) -> None:
        """Set run summary values."""
        for key, value in metrics.items():
            self._run.summary[key] = value

    def log_predictions(self, images: NDArray[np.uint8], captions: Sequence[str]) -> None:
        """Log ``wandb.Image`` samples captioned with prediction and truth."""
        import wandb

        samples = [
            wandb.Image(image if image.shape[-1] == 3 else image[..., 0], caption=caption)
            for image, caption in zip(images, captions, strict=True)
        ]
        self._run.log({"predictions": samples}, commit=False)

    def log_confusion_matrix(
        self, targets: Sequence[int], predicted: Sequence[int], class_names: Sequence[str]
    ) -> None:
        """Log W&B's interactive confusion matrix."""
        import wandb

        plot = wandb.plot.confusion_matrix(
            y_true=list(targets), preds=list(predicted), class_names=list(class_names)
        )
        self._run.log({"confusion_matrix": plot}, commit=False)

    def log_checkpoint(self, path: Path, name: str, metadata: Mapping[str, Any]) -> None:
        """Log ``path`` as a ``model`` artifact named ``name``."""
        import wandb

        artifact = wandb.Artifact(name=name, type="model", metadata=dict(metadata))
        artifact.add_file(str(path), name=path.name)
        self._run.log_artifact(artifact, aliases=["best", "latest"])

    def finish(self, status: str) -> None:
        """Finish the W&B run (exit code 0 only for completed runs)."""
        self._run.summary["status"] = status
        self._run.finish(exit_code=0 if status == "completed" else 1)


def start_tracking(
    settings: TrackingSettings,
    *,
    run_dir: Path,
    run_name: str,
    config: Mapping[str, Any],
    run_id: str | None = None,
    tags: Sequence[str] = (),
) -> NullTracker | WandbTracker:
    """Start a W&B run for a training run (or a :class:`NullTracker` when disabled).

    Args:
        settings: ``tracking`` settings.
        run_dir: The run folder; W&B files go to ``$WANDB_DIR`` if set, else here.
        run_name: Display name (the run folder's name).
        config: The resolved settings, logged as the W&B config.
        run_id: The W&B id of an earlier attempt, to continue it on ``--resume``.
        tags: W&B tags (task, model).

    Returns:
        The tracker.

    Raises:
        TrackingError: W&B cannot start (not logged in, no network for ``online``).
    """
    if settings.mode == "disabled":
        return NullTracker()
    try:
        import wandb
    except ImportError:  # pragma: no cover - wandb is a dependency
        raise TrackingError(
            "tracking.mode is set but wandb is not installed — `pip install wandb` or set"
            " tracking.mode=disabled"
        ) from None
    # Passed explicitly every time: wandb caches the directory of the first init in-process.
    wandb_dir = os.environ.get("WANDB_DIR") or str(run_dir)
    try:
        run = wandb.init(
            project=settings.project,
            entity=settings.entity,
            name=run_name,
            id=run_id or f"{run_name}-{secrets.token_hex(4)}",
            resume="allow",
            mode=settings.mode,
            dir=wandb_dir,
            config=dict(config),
            tags=list(tags),
            settings=wandb.Settings(init_timeout=60, console="off", silent=True),
        )
    except Exception as exc:
        detail = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else ""
        raise TrackingError(
            f"Weights & Biases could not start in {settings.mode} mode ({type(exc).__name__}:"
            f" {detail}) — run `wandb login`, check the network, or use tracking.mode=offline"
        ) from None
    logger.info(
        "W&B {} run {}{}",
        settings.mode,
        run.id,
        f" → {run.url}" if getattr(run, "url", None) else f" in {run.dir}",
    )
    return WandbTracker(run)


# --------------------------------------------------------------------------- sweeps


@dataclass(frozen=True)
class SweepResult:
    """A created W&B sweep.

    Attributes:
        sweep_id: The sweep's id.
        config: The configuration sent to W&B.
        agent_command: The command that runs an agent for it on any machine.
        ran_agent: Whether an agent ran here (False with ``create_only``).
    """

    sweep_id: str
    config: dict[str, Any]
    agent_command: str
    ran_agent: bool


def load_sweep_file(path: Path) -> dict[str, Any]:
    """Read a sweep YAML file.

    Raises:
        ConfigError: Missing file, invalid YAML, or not a mapping.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"sweep file {path} does not exist — check the path") from None
    content = load_yaml(text, f"sweep file {path}")
    if not isinstance(content, dict):
        raise ConfigError(f"sweep file {path} must hold a mapping (method, parameters, ...)")
    return content


def _check_parameter(key: str, spec: Any) -> None:
    """Check a sweep parameter's key and sample values exactly like ``key=value`` overrides."""
    if not isinstance(spec, dict):
        raise ConfigError(
            f"sweep parameter '{key}' must be a mapping such as {{values: [...]}} or"
            " {min: ..., max: ...}"
        )
    if isinstance(spec.get("values"), list) and spec["values"]:
        samples = list(spec["values"])
    elif "value" in spec:
        samples = [spec["value"]]
    else:
        samples = [spec[bound] for bound in ("min", "max") if bound in spec]
    no_project = Path(os.devnull)
    try:
        for sample in samples:
            load_settings(flags={key: sample}, cwd=no_project)
        if not samples:
            # A distribution without sample values (mu/sigma): check the key alone.
            load_settings(overrides=[f"{key}=null"], cwd=no_project)
    except ConfigError as exc:
        if samples or "unknown setting" in str(exc):
            message = str(exc).replace("in the command line", "in the sweep file")
            raise ConfigError(f"sweep parameter: {message}") from None


def sweep_config(raw: Mapping[str, Any], *, dataset: str | None = None) -> dict[str, Any]:
    """Turn a visionops sweep file into a W&B sweep configuration.

    Parameter names are visionops setting keys (``train.lr``, ``model.name``); they are
    checked like ``key=value`` overrides. The agent's command becomes
    ``visionops train [DATASET] tracking.mode=online key=value ...`` and the metric defaults
    to :data:`SWEEP_METRIC` (maximised).

    Args:
        raw: The sweep file's content (W&B sweep keys: ``method``, ``parameters``,
            ``metric``, ``early_terminate``, ...).
        dataset: A dataset argument for every run (default: the ``dataset`` key of the file,
            else the project's default dataset).

    Returns:
        The configuration for ``wandb.sweep``.

    Raises:
        ConfigError: No parameters, an unknown setting key, or a bad method.

    Examples:
        >>> sweep_config({"method": "random", "parameters": {"train.lr": {"values": [1e-3]}}})[
        ...     "command"]
        ['visionops', 'train', 'tracking.mode=online', '${args_no_hyphens}']
    """
    config = {key: value for key, value in raw.items() if key != "dataset"}
    parameters = config.get("parameters")
    if not isinstance(parameters, dict) or not parameters:
        raise ConfigError(
            "the sweep file has no `parameters` — add e.g. `parameters: {train.lr:"
            " {min: 0.0001, max: 0.01}}`"
        )
    for key, spec in parameters.items():
        _check_parameter(str(key), spec)
    method = config.setdefault("method", "random")
    if method not in ("grid", "random", "bayes"):
        raise ConfigError(f"sweep method '{method}' is not one of grid, random, bayes")
    config.setdefault("metric", {"name": SWEEP_METRIC, "goal": "maximize"})
    dataset = dataset or raw.get("dataset")
    command: list[str] = ["visionops", "train"]
    if dataset:
        command.append(str(dataset))
    command += ["tracking.mode=online", "${args_no_hyphens}"]
    config["command"] = command
    return config


def create_sweep(
    sweep_file: Path,
    settings: Settings,
    *,
    count: int | None = None,
    create_only: bool = False,
    dataset: str | None = None,
) -> SweepResult:
    """Create a W&B sweep from a sweep file and (unless ``create_only``) run an agent here.

    Args:
        sweep_file: YAML with ``method``, ``parameters`` (visionops setting keys), optional
            ``metric`` and ``dataset``.
        settings: Resolved settings (``tracking.project`` and ``tracking.entity``).
        count: Runs the local agent does (None: until the sweep is done).
        create_only: Only create the sweep; print how to start agents.
        dataset: Dataset argument for every run.

    Returns:
        The sweep id, configuration and agent command.

    Raises:
        ConfigError: Invalid sweep file.
        TrackingError: W&B cannot be reached or is not logged in.
    """
    config = sweep_config(load_sweep_file(sweep_file), dataset=dataset)
    import wandb

    try:
        sweep_id = wandb.sweep(
            config, project=settings.tracking.project, entity=settings.tracking.entity
        )
    except Exception as exc:
        detail = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else ""
        raise TrackingError(
            f"cannot create the W&B sweep ({type(exc).__name__}: {detail}) — creating a sweep"
            " needs the network and `wandb login`"
        ) from None
    if not sweep_id:
        raise TrackingError(
            "W&B did not create the sweep (no network?) — check `wandb login` and the network"
        )
    path = "/".join(
        part for part in (settings.tracking.entity, settings.tracking.project, sweep_id) if part
    )
    if not create_only:
        logger.info("starting a W&B agent here for sweep {} (stop it with Ctrl-C)", path)
        wandb.agent(
            sweep_id,
            project=settings.tracking.project,
            entity=settings.tracking.entity,
            count=count,
        )
    return SweepResult(
        sweep_id=str(sweep_id),
        config=config,
        agent_command=f"wandb agent {path}",
        ran_agent=not create_only,
    )
