"""What a task's evaluation returns: headline metrics, per-row tables and figures (no torch)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "CALIBRATION_BINS",
    "ArrayLikeFloat",
    "Outputs",
    "Plot",
    "TaskMetrics",
    "expected_calibration_error",
    "finite",
    "headline",
    "json_floats",
]

CALIBRATION_BINS = 15
ArrayLikeFloat = Sequence[float] | NDArray[Any]


@dataclass(frozen=True)
class Plot:
    """One PNG figure of the evaluation.

    Attributes:
        filename: File name inside ``eval/`` (``confusion_matrix.png``).
        caption: One sentence saying what the figure shows.
        png: The PNG bytes.
    """

    filename: str
    caption: str
    png: bytes


@dataclass
class TaskMetrics:
    """Metrics of one task on one set of predictions.

    Attributes:
        metrics: Headline metrics by name (None where undefined, e.g. no positives).
        rows: One dict per class (classification, multilabel) or target (regression).
        extra: Task-specific tables for ``metrics.json`` (confusion matrix, calibration bins).
    """

    metrics: dict[str, float | None]
    rows: list[dict[str, Any]]
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Outputs:
    """A model's outputs on some images of a prepared split, with what they are judged by.

    Attributes:
        main: ``(N, ...)`` post-processed task output (the graph's main output).
        targets: ``(N, ...)`` targets as the prepared dataset stores them.
        extra: The model's other outputs by graph output name, embedding excluded
            (``heatmap`` for anomaly detection).
        masks: ``(N, H, W)`` ground-truth masks where the dataset has them, else None.
        images: The prepared dataset's uint8 ``(rows, H, W, C)`` images, read on demand
            (figures show a few): output ``i`` belongs to ``images[indices[i]]``.
        indices: The outputs' rows in the prepared dataset.
    """

    main: NDArray[Any]
    targets: NDArray[Any]
    extra: dict[str, NDArray[np.float32]] = field(default_factory=dict)
    masks: NDArray[Any] | None = None
    images: Sequence[NDArray[np.uint8]] | NDArray[np.uint8] | None = None
    indices: NDArray[np.int64] | None = None


def finite(value: float | None) -> float | None:
    """JSON has no NaN: undefined values (and None) are stored as null."""
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def headline(shared: dict[str, float]) -> dict[str, float | None]:
    """The task's shared metrics without per-target keys (``r2/<name>``: they are in rows)."""
    return {key: finite(value) for key, value in shared.items() if "/" not in key}


def json_floats(table: dict[str, list[float]]) -> dict[str, list[float | None]]:
    """Replace NaN and inf in each list by None."""
    return {key: [finite(v) for v in values] for key, values in table.items()}


def expected_calibration_error(
    confidences: ArrayLikeFloat, correct: ArrayLikeFloat, n_bins: int = CALIBRATION_BINS
) -> tuple[float, dict[str, list[float]]]:
    """Expected calibration error of top-class confidences, with equal-width bins.

    scikit-learn has no ECE, so this is the binned definition of Guo et al. (2017): items fall
    in the bin ``(lower, upper]`` of their confidence; ECE is the item-weighted mean of
    ``|accuracy - mean confidence|`` over the bins.

    Args:
        confidences: ``(N,)`` probability of the predicted class.
        correct: ``(N,)`` 1 where the prediction was right, else 0.
        n_bins: Number of equal-width bins on 0..1.

    Returns:
        ``(ece, bins)`` where ``bins`` holds ``edges`` (``n_bins + 1``), and per bin
        ``accuracy``, ``confidence`` (NaN where empty) and ``count``.

    Examples:
        >>> ece, _ = expected_calibration_error([0.9, 0.9], [1, 0], n_bins=10)
        >>> round(ece, 3)
        0.4
    """
    conf = np.asarray(confidences, dtype=np.float64)
    hits = np.asarray(correct, dtype=np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    which = np.clip(np.ceil(conf * n_bins).astype(np.int64) - 1, 0, n_bins - 1)
    counts = np.bincount(which, minlength=n_bins).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        accuracy = np.bincount(which, weights=hits, minlength=n_bins) / counts
        confidence = np.bincount(which, weights=conf, minlength=n_bins) / counts
    gaps = np.where(counts > 0, np.abs(accuracy - confidence), 0.0)
    ece = float(np.sum(gaps * counts) / max(conf.size, 1))
    bins = {
        "edges": edges.tolist(),
        "accuracy": accuracy.tolist(),
        "confidence": confidence.tolist(),
        "count": counts.astype(np.int64).tolist(),
    }
    return ece, bins
