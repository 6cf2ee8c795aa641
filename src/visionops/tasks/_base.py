"""What every task provides to the training engine (and to evaluation)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from numpy.typing import NDArray

__all__ = ["TrainingTask"]


class TrainingTask(ABC):
    """A task's loss, monitored metric, post-processing and metrics.

    One instance is built from a prepared dataset's manifest with :meth:`from_manifest`;
    it holds what the task needs from the data (class names, target statistics) and what
    it learns after training (multilabel thresholds).

    Attributes:
        name: The task name used in manifests (``classification``, ...).
        monitor: The validation metric used for early stopping and the best checkpoint.
        mode: ``max`` if a larger ``monitor`` is better, else ``min``.
    """

    name: ClassVar[str]
    monitor: ClassVar[str]
    mode: ClassVar[Literal["max", "min"]] = "max"

    @classmethod
    @abstractmethod
    def from_manifest(
        cls, manifest: Mapping[str, Any], *, label_smoothing: float = 0.0
    ) -> TrainingTask:
        """Build the task from a prepared dataset's (or a run's) manifest."""

    @property
    @abstractmethod
    def num_outputs(self) -> int:
        """Size of the model head's output."""

    def encode_targets(self, targets: torch.Tensor) -> torch.Tensor:
        """Turn targets as stored (``targets.npy``) into what :meth:`loss` expects."""
        return targets

    @abstractmethod
    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean loss of raw model outputs ``(B, K)`` against encoded targets."""

    @abstractmethod
    def postprocess(self, outputs: torch.Tensor) -> torch.Tensor:
        """Raw outputs to what a user gets: probabilities, or values in original units."""

    @abstractmethod
    def metrics(
        self, predictions: NDArray[np.floating[Any]], targets: NDArray[Any]
    ) -> dict[str, float]:
        """Metrics of post-processed predictions against targets as stored."""

    def fit_postprocessing(
        self, predictions: NDArray[np.floating[Any]], targets: NDArray[Any]
    ) -> None:
        """Tune post-processing on validation predictions (multilabel thresholds)."""
        del predictions, targets

    def run_fields(self) -> dict[str, Any]:
        """Fields this task adds to ``run.json`` (``thresholds`` for multilabel)."""
        return {"thresholds": None}

    def better(self, value: float, best: float | None) -> bool:
        """Whether ``value`` of the monitored metric improves on ``best``."""
        if best is None or not np.isfinite(best):
            return bool(np.isfinite(value))
        return value > best if self.mode == "max" else value < best
