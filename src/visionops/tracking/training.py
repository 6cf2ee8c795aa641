"""What a training run reports to Weights & Biases: its start, each epoch and its outcome.

The training loop calls these three functions and nothing else of W&B: which keys an epoch
logs, which samples and charts the outcome shows and how the best checkpoint is named as a
W&B artifact are decided here. The task is asked through :class:`TrackedTask` (captions,
predicted classes), so this module does not import :mod:`visionops.tasks`.

Examples:
    >>> tracker = start_run_tracking(settings.tracking, record, run_dir,
    ...                              config={}, tags=["classification"])
    >>> log_training_epoch(tracker, 1, train_loss=0.9, val={"loss": 0.8, "accuracy": 0.5},
    ...                    lr=1e-3, images_per_s=900.0, best=0.5)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from visionops.artifacts import RunRecord, RunTracking
from visionops.config import TrackingSettings
from visionops.tracking.wandb_run import NullTracker, Tracker, WandbTracker, start_tracking

__all__ = [
    "PREDICTION_SAMPLES",
    "SWEEP_METRIC",
    "TrackedTask",
    "log_training_epoch",
    "log_training_outcome",
    "start_run_tracking",
]

SWEEP_METRIC = "best_metric"
"""Summary key every run updates with the best value of its monitored metric so far: one
name works as the sweep target for every task (all monitored metrics grow when better)."""

PREDICTION_SAMPLES = 16
"""Validation images logged with their predictions when a run finishes."""


class TrackedTask(Protocol):
    """What the outcome logging asks of the run's task (a :class:`visionops.tasks.Task`)."""

    @property
    def name(self) -> str:
        """The task name (``classification``, ...)."""

    @property
    def monitor(self) -> str:
        """The monitored validation metric."""

    @property
    def labels(self) -> list[str]:
        """Class or target names, in output order."""

    def caption(self, prediction: NDArray[Any], target: NDArray[Any]) -> str:
        """One image's prediction against its target, short."""

    def predicted_classes(self, main: NDArray[Any]) -> NDArray[np.int64] | None:
        """One predicted class per image, or None when the task has no classes."""


def start_run_tracking(
    settings: TrackingSettings,
    record: RunRecord,
    run_dir: Path,
    *,
    config: Mapping[str, Any],
    tags: Sequence[str],
) -> Tracker:
    """Start W&B for a run folder and note the W&B run in ``record.tracking``.

    A record that already names a W&B run (an earlier attempt, continued with ``--resume``)
    continues that W&B run.

    Args:
        settings: ``tracking`` settings.
        record: The run's record; its ``tracking`` is set when W&B is on.
        run_dir: The run folder (its name is the W&B run's display name).
        config: The resolved settings, logged as the W&B config.
        tags: W&B tags (task, model).

    Returns:
        The tracker (a :class:`NullTracker` when tracking is disabled).

    Raises:
        TrackingError: W&B cannot start.
    """
    mode = settings.mode
    if mode == "disabled":
        return NullTracker()
    tracker = start_tracking(
        settings,
        run_dir=run_dir,
        run_name=run_dir.name,
        config=config,
        run_id=record.tracking.id if record.tracking is not None else None,
        tags=tags,
    )
    if isinstance(tracker, WandbTracker):
        record.tracking = RunTracking(
            mode=mode, project=settings.project, id=tracker.run_id, url=tracker.url
        )
    return tracker


def log_training_epoch(
    tracker: Tracker,
    epoch: int,
    *,
    train_loss: float,
    val: Mapping[str, float],
    lr: float,
    images_per_s: float,
    best: float | None,
) -> None:
    """Log one epoch: ``train/loss``, ``val/<metric>``, ``lr``, throughput and the best value.

    Args:
        tracker: The run's tracker.
        epoch: The epoch (the W&B step).
        train_loss: Mean training loss.
        val: Validation loss and metrics by name.
        lr: Learning rate at the end of the epoch.
        images_per_s: Training throughput.
        best: Best monitored value so far (the sweep target, :data:`SWEEP_METRIC`).
    """
    tracker.log_epoch(
        epoch,
        {
            "train/loss": train_loss,
            **{f"val/{key}": value for key, value in val.items()},
            "lr": lr,
            "images_per_s": images_per_s,
            SWEEP_METRIC: best if best is not None else float("nan"),
        },
    )


def log_training_outcome(
    tracker: Tracker,
    task: TrackedTask,
    *,
    run_name: str,
    results: Mapping[str, Mapping[str, Any]],
    images: NDArray[np.uint8],
    indices: NDArray[np.int64],
    predictions: NDArray[Any],
    targets: NDArray[Any],
    checkpoint: Path,
    best_epoch: int | None,
    best_metric: float | None,
) -> None:
    """Log a finished run: final metrics, captioned samples, confusion matrix, best checkpoint.

    Args:
        tracker: The run's tracker (nothing is done when it is disabled).
        task: The run's task.
        run_name: The run folder's name (the model artifact is ``model-<run_name>``).
        results: Final metrics of the best checkpoint by split (``val``, ``test``).
        images: The dataset's images ``(N, H, W, C)``; only the rows of the first
            :data:`PREDICTION_SAMPLES` predictions are read (it may be a memory map).
        indices: The row in ``images`` of each prediction.
        predictions: The task's post-processed validation predictions.
        targets: Their targets.
        checkpoint: The best checkpoint, logged as a model artifact.
        best_epoch: Epoch of the best checkpoint.
        best_metric: Its monitored value.
    """
    if not tracker.enabled:
        return
    tracker.log_summary(
        {
            f"{split}/{key}": value
            for split in ("val", "test")
            for key, value in results.get(split, {}).items()
        }
    )
    shown = min(PREDICTION_SAMPLES, len(predictions))
    tracker.log_predictions(
        np.asarray(images[indices[:shown]]),
        [
            task.caption(prediction, target)
            for prediction, target in zip(predictions[:shown], targets[:shown], strict=True)
        ],
    )
    predicted = task.predicted_classes(predictions)
    if predicted is not None:
        tracker.log_confusion_matrix(
            [int(t) for t in targets], [int(p) for p in predicted], task.labels
        )
    tracker.log_checkpoint(
        checkpoint,
        f"model-{run_name}",
        {"task": task.name, "best_epoch": best_epoch, task.monitor: best_metric},
    )
