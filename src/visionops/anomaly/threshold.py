"""Choosing the score above which an image is called anomalous.

With labelled defects in the held-out images the threshold maximises image-level F1; with
only good held-out images it is the score that at most ``target_fpr`` of them exceed.
A held-out set of defects only gives no way to place the threshold: that is an error.

Examples:
    >>> choose_threshold(np.array([0.1, 0.2, 0.9]), np.array([0, 0, 1]))
    Threshold(value=0.9, method='f1', target_fpr=None)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray
from sklearn.metrics import precision_recall_curve

from visionops.errors import DataError

__all__ = ["Threshold", "choose_threshold"]


@dataclass(frozen=True)
class Threshold:
    """A decision threshold and how it was chosen.

    Attributes:
        value: Images scoring at or above it are anomalous.
        method: ``f1`` (F1-optimal on labelled defects) or ``fpr`` (good images only).
        target_fpr: The false-positive rate aimed at (``fpr`` method).
    """

    value: float
    method: Literal["f1", "fpr"]
    target_fpr: float | None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"value": self.value, "method": self.method, "target_fpr": self.target_fpr}


def choose_threshold(
    scores: NDArray[np.floating[Any]],
    labels: NDArray[np.integer[Any]],
    *,
    target_fpr: float = 0.05,
) -> Threshold:
    """Pick the threshold from held-out image scores.

    Args:
        scores: ``(N,)`` image scores.
        labels: ``(N,)`` 0 = good, 1 = defect.
        target_fpr: Largest share of good images allowed above the threshold (good-only).

    Returns:
        The threshold.

    Raises:
        DataError: No held-out images, or defects only.
    """
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels).astype(bool)
    if scores.size == 0:
        raise DataError(
            "no validation images to place the anomaly threshold on — preprocess again with"
            " data.val_ratio above 0"
        )
    if labels.all():
        raise DataError(
            f"the validation split holds {labels.size} defect images and no good one: no"
            " threshold possible — put some good images in validation (test/good in MVTec)"
        )
    if labels.any():
        precision, recall, thresholds = precision_recall_curve(labels, scores)
        f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
        best = int(np.argmax(f1[:-1]))
        return Threshold(float(thresholds[best]), "f1", None)
    good = np.sort(scores)
    # The smallest value with at most floor(target_fpr * n) good scores strictly above it,
    # nudged up so that exactly those score above: "at or above" is anomalous.
    allowed = int(np.floor(target_fpr * good.size))
    value = float(np.nextafter(good[good.size - 1 - allowed], np.inf))
    return Threshold(value, "fpr", target_fpr)
