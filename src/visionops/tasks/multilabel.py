"""Multi-label classification: BCE with logits, sigmoid, per-class thresholds tuned for F1."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from numpy.typing import NDArray
from torch.nn import functional

from visionops.errors import ArtifactError
from visionops.tasks._base import TrainingTask

__all__ = ["MultilabelTask", "multilabel_metrics", "tune_thresholds"]

_CANDIDATES = np.round(np.arange(0.05, 0.951, 0.025), 3)


def tune_thresholds(probabilities: NDArray[np.floating[Any]], targets: NDArray[Any]) -> list[float]:
    """Per-class probability thresholds that maximise each class's F1.

    Candidates are 0.05, 0.075, ..., 0.95; among equally good ones the closest to 0.5 wins,
    and a class without positives keeps 0.5.

    Args:
        probabilities: ``(N, K)`` sigmoid outputs on the validation split.
        targets: ``(N, K)`` 0/1 labels.

    Returns:
        ``K`` thresholds.
    """
    truth = np.asarray(targets) > 0.5
    # (C, N, K): every candidate at once, vectorised over images and classes.
    predicted = probabilities[None, :, :] >= _CANDIDATES[:, None, None]
    tp = (predicted & truth[None]).sum(axis=1)
    fp = (predicted & ~truth[None]).sum(axis=1)
    fn = (~predicted & truth[None]).sum(axis=1)
    f1 = 2 * tp / np.maximum(2 * tp + fp + fn, 1)
    thresholds: list[float] = []
    for k in range(truth.shape[1]):
        if not truth[:, k].any():
            thresholds.append(0.5)
            continue
        best = f1[:, k].max()
        ties = _CANDIDATES[np.isclose(f1[:, k], best)]
        thresholds.append(float(ties[np.argmin(np.abs(ties - 0.5))]))
    return thresholds


def multilabel_metrics(
    probabilities: NDArray[np.floating[Any]],
    targets: NDArray[Any],
    thresholds: Sequence[float] | None = None,
) -> dict[str, float]:
    """Mean average precision (threshold-free) and F1 at the given thresholds.

    Args:
        probabilities: ``(N, K)`` sigmoid outputs.
        targets: ``(N, K)`` 0/1 labels.
        thresholds: Per-class thresholds (0.5 each when None).

    Returns:
        ``{"map", "f1_macro", "f1_micro", "subset_accuracy"}``; ``map`` averages the
        classes that have positives.
    """
    from sklearn.metrics import average_precision_score, f1_score

    truth = (np.asarray(targets) > 0.5).astype(np.int64)
    cut = np.asarray(thresholds if thresholds is not None else [0.5] * truth.shape[1])
    predicted = (probabilities >= cut[None, :]).astype(np.int64)
    present = truth.sum(axis=0) > 0
    average_precision = (
        float(
            average_precision_score(truth[:, present], probabilities[:, present], average="macro")
        )
        if present.any()
        else float("nan")
    )
    return {
        "map": average_precision,
        "f1_macro": float(f1_score(truth, predicted, average="macro", zero_division=0)),
        "f1_micro": float(f1_score(truth, predicted, average="micro", zero_division=0)),
        "subset_accuracy": float((predicted == truth).all(axis=1).mean())
        if len(truth)
        else float("nan"),
    }


class MultilabelTask(TrainingTask):
    """Any number of labels per image: BCE with logits, sigmoid, mAP; thresholds tuned on val.

    Args:
        class_names: The label order of the head's outputs.
        label_smoothing: Smooths the 0/1 targets towards 0.5 by this amount.
        thresholds: Per-class thresholds (0.5 each until :meth:`fit_postprocessing`).
    """

    name: ClassVar[str] = "multilabel"
    monitor: ClassVar[str] = "map"
    mode: ClassVar[Literal["max", "min"]] = "max"

    def __init__(
        self,
        class_names: Sequence[str],
        label_smoothing: float = 0.0,
        thresholds: Sequence[float] | None = None,
    ) -> None:
        if not class_names:
            raise ArtifactError("the multilabel dataset has no class names — preprocess it again")
        self.class_names = list(class_names)
        self.label_smoothing = label_smoothing
        self.thresholds = list(thresholds) if thresholds else [0.5] * len(self.class_names)

    @classmethod
    def from_manifest(
        cls, manifest: Mapping[str, Any], *, label_smoothing: float = 0.0
    ) -> MultilabelTask:
        """Build from ``class_names`` (and ``thresholds`` when the manifest is a run's)."""
        return cls(manifest.get("class_names") or [], label_smoothing, manifest.get("thresholds"))

    @property
    def num_outputs(self) -> int:
        """One logit per label."""
        return len(self.class_names)

    def encode_targets(self, targets: torch.Tensor) -> torch.Tensor:
        """0/1 float targets, smoothed when asked."""
        targets = targets.float()
        if self.label_smoothing:
            targets = targets * (1 - self.label_smoothing) + 0.5 * self.label_smoothing
        return targets

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Binary cross-entropy with logits, mean over images and labels."""
        return functional.binary_cross_entropy_with_logits(outputs.float(), targets)

    def postprocess(self, outputs: torch.Tensor) -> torch.Tensor:
        """Sigmoid probabilities."""
        return torch.sigmoid(outputs.float())

    def metrics(
        self, predictions: NDArray[np.floating[Any]], targets: NDArray[Any]
    ) -> dict[str, float]:
        """See :func:`multilabel_metrics` (at the current thresholds)."""
        return multilabel_metrics(predictions, targets, self.thresholds)

    def fit_postprocessing(
        self, predictions: NDArray[np.floating[Any]], targets: NDArray[Any]
    ) -> None:
        """Tune the per-class thresholds for F1 (see :func:`tune_thresholds`)."""
        self.thresholds = tune_thresholds(predictions, targets)

    def run_fields(self) -> dict[str, Any]:
        """``thresholds`` for ``run.json``."""
        return {"thresholds": list(self.thresholds)}
