"""Single-label classification: cross-entropy, softmax, accuracy."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from numpy.typing import NDArray
from torch.nn import functional

from visionops.errors import ArtifactError
from visionops.tasks._base import TrainingTask

__all__ = ["ClassificationTask", "classification_metrics"]


def classification_metrics(
    probabilities: NDArray[np.floating[Any]], targets: NDArray[np.integer[Any]]
) -> dict[str, float]:
    """Accuracy, balanced accuracy, macro F1 (and top-5 accuracy for more than 5 classes).

    Args:
        probabilities: ``(N, K)`` class probabilities (or any scores ordered like them).
        targets: ``(N,)`` class indices.

    Returns:
        ``{"accuracy", "balanced_accuracy", "f1_macro"[, "top5_accuracy"]}``.

    Examples:
        >>> classification_metrics(np.array([[0.9, 0.1], [0.2, 0.8]]), np.array([0, 0]))["accuracy"]
        0.5
    """
    from sklearn.metrics import balanced_accuracy_score, f1_score

    num_classes = probabilities.shape[1]
    predicted = probabilities.argmax(axis=1)
    targets = np.asarray(targets).astype(np.int64)
    metrics = {
        "accuracy": float((predicted == targets).mean()) if len(targets) else float("nan"),
        "balanced_accuracy": float(balanced_accuracy_score(targets, predicted))
        if len(targets)
        else float("nan"),
        "f1_macro": float(
            f1_score(
                targets,
                predicted,
                labels=list(range(num_classes)),
                average="macro",
                zero_division=0,
            )
        ),
    }
    if num_classes > 5:
        top5 = np.argsort(-probabilities, axis=1)[:, :5]
        metrics["top5_accuracy"] = float((top5 == targets[:, None]).any(axis=1).mean())
    return metrics


class ClassificationTask(TrainingTask):
    """One class per image: cross-entropy with label smoothing, softmax, accuracy.

    Args:
        class_names: The label order of the head's outputs.
        label_smoothing: Cross-entropy label smoothing (``train.label_smoothing``).
    """

    name: ClassVar[str] = "classification"
    monitor: ClassVar[str] = "accuracy"
    mode: ClassVar[Literal["max", "min"]] = "max"

    def __init__(self, class_names: Sequence[str], label_smoothing: float = 0.0) -> None:
        if len(class_names) < 2:
            raise ArtifactError(
                f"classification needs at least 2 classes, the dataset has {len(class_names)}"
                " — add images of another class and preprocess again"
            )
        self.class_names = list(class_names)
        self.label_smoothing = label_smoothing

    @classmethod
    def from_manifest(
        cls, manifest: Mapping[str, Any], *, label_smoothing: float = 0.0
    ) -> ClassificationTask:
        """Build from a manifest's ``class_names``."""
        return cls(manifest.get("class_names") or [], label_smoothing)

    @property
    def num_outputs(self) -> int:
        """One logit per class."""
        return len(self.class_names)

    def encode_targets(self, targets: torch.Tensor) -> torch.Tensor:
        """Class indices as int64."""
        return targets.long()

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Cross-entropy (computed in fp32 even under autocast)."""
        return functional.cross_entropy(
            outputs.float(), targets, label_smoothing=self.label_smoothing
        )

    def postprocess(self, outputs: torch.Tensor) -> torch.Tensor:
        """Softmax probabilities."""
        return torch.softmax(outputs.float(), dim=1)

    def metrics(
        self, predictions: NDArray[np.floating[Any]], targets: NDArray[Any]
    ) -> dict[str, float]:
        """See :func:`classification_metrics`."""
        return classification_metrics(predictions, targets)
