"""A Weights & Biases run, or nothing: what a run reports to.

Tracking is off unless ``tracking.mode`` is ``offline`` (files only, ``wandb sync`` later) or
``online``. wandb is imported only when tracking is on.

Examples:
    >>> tracker = start_tracking(TrackingSettings(), run_dir=Path("runs/run-001"),
    ...                          run_name="run-001", config={})
    >>> tracker.enabled
    False
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from loguru import logger
from numpy.typing import NDArray

from visionops.config import TrackingSettings
from visionops.errors import TrackingError

__all__ = [
    "LOGIN_FIX",
    "NullTracker",
    "Tracker",
    "WandbTracker",
    "start_tracking",
    "wandb_errors",
]


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


Tracker = NullTracker | WandbTracker
"""What a run reports to: W&B, or nothing."""

LOGIN_FIX = "run `wandb login`, check the network, or use tracking.mode=offline"
"""What to do when W&B cannot be reached (the end of most tracking error messages)."""


@contextmanager
def wandb_errors(failed: str, fix: str) -> Iterator[None]:
    """Turn whatever wandb raises in the block into a one-line :class:`TrackingError`.

    wandb raises many exception types (network, auth, usage) with multi-line messages; the
    user gets ``"<failed> (<type>: <first line>) — <fix>"``.

    Args:
        failed: What did not work ("could not log the bundle to Weights & Biases").
        fix: What to do about it.

    Examples:
        >>> with wandb_errors("cannot create the W&B sweep", "check `wandb login`"):
        ...     sweep_id = wandb.sweep(config)
    """
    try:
        yield
    except Exception as exc:
        text = str(exc).strip()
        detail = text.splitlines()[0][:160] if text else ""
        raise TrackingError(f"{failed} ({type(exc).__name__}: {detail}) — {fix}") from None


def start_tracking(
    settings: TrackingSettings,
    *,
    run_dir: Path,
    run_name: str,
    config: Mapping[str, Any],
    run_id: str | None = None,
    tags: Sequence[str] = (),
) -> Tracker:
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
    with wandb_errors(f"Weights & Biases could not start in {settings.mode} mode", LOGIN_FIX):
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
    logger.info(
        "W&B {} run {}{}",
        settings.mode,
        run.id,
        f" → {run.url}" if getattr(run, "url", None) else f" in {run.dir}",
    )
    return WandbTracker(run)
