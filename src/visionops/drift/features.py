"""Image statistics and model outputs as the columns drift detection compares.

The statistics themselves come from :func:`visionops.imaging.image_statistics`, the one
function ``serve`` logs, ``export`` stores in ``reference.npz`` and ``predict`` logs, so the
reference and the traffic are measured identically.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "IMAGE_FEATURES",
    "feature_label",
    "image_feature_matrix",
    "output_matrix",
    "predicted_classes",
]

IMAGE_FEATURES: tuple[str, ...] = (
    "mean",
    "std",
    "sharpness",
    "saturation",
    "mean_c0",
    "mean_c1",
    "mean_c2",
    "width",
    "height",
)
"""Statistics tested, when both the reference and the current sample have them."""

_LABELS = {
    "mean": "brightness",
    "std": "contrast",
    "sharpness": "sharpness",
    "saturation": "saturation",
    "width": "original width",
    "height": "original height",
}


def feature_label(name: str, channels: int = 3) -> str:
    """A person's name for a statistic (``mean`` → ``brightness``, ``mean_c0`` → ``red mean``)."""
    if name.startswith("mean_c") and name[6:].isdigit():
        index = int(name[6:])
        if channels == 3 and index < 3:
            return f"{('red', 'green', 'blue')[index]} mean"
        return f"channel {index} mean"
    return _LABELS.get(name, name)


def image_feature_matrix(
    infos: Sequence[Mapping[str, Any]], names: Sequence[str]
) -> NDArray[np.float64]:
    """Stack the named statistics of each image (NaN where one is missing).

    Args:
        infos: Per-image dicts (a log record's ``image``).
        names: Which statistics, in column order.

    Returns:
        ``(len(infos), len(names))`` float64.
    """
    matrix = np.full((len(infos), len(names)), np.nan)
    for row, info in enumerate(infos):
        for column, name in enumerate(names):
            value = info.get(name)
            if isinstance(value, int | float) and not isinstance(value, bool):
                matrix[row, column] = float(value)
    return matrix


def output_matrix(
    task: str, predictions: Sequence[Mapping[str, Any]], labels: Sequence[str]
) -> NDArray[np.float64] | None:
    """Rebuild the model's task output from logged answers, or None if they do not hold it.

    A record written by visionops holds the full output in ``output``; older records are
    rebuilt from the answer: multilabel ``probabilities`` and regression ``values`` are
    complete, a classification ``top_k`` is complete only when it lists every class.

    Args:
        task: The bundle's task.
        predictions: Each record's ``prediction`` (with ``output`` merged in when present).
        labels: Class or target names in output order.

    Returns:
        ``(n, K)`` float64, or None.
    """
    count = len(labels)
    rows: list[list[float]] = []
    for answer in predictions:
        raw = answer.get("output")
        if isinstance(raw, list) and len(raw) == count:
            rows.append([float(v) for v in raw])
            continue
        if task == "multilabel" and isinstance(answer.get("probabilities"), dict):
            probabilities = answer["probabilities"]
            rows.append([float(probabilities.get(label, np.nan)) for label in labels])
        elif task == "regression" and isinstance(answer.get("values"), list):
            values = {v.get("name"): v.get("value") for v in answer["values"]}
            rows.append([float(values.get(label, np.nan)) for label in labels])
        elif task == "classification" and isinstance(answer.get("top_k"), list):
            top = {t.get("label"): t.get("probability") for t in answer["top_k"]}
            if len(top) < count:
                return None
            rows.append([float(top.get(label, np.nan)) for label in labels])
        else:
            return None
    matrix = np.asarray(rows, dtype=np.float64).reshape(len(rows), count)
    return None if np.isnan(matrix).any() else matrix


def predicted_classes(
    task: str, predictions: Sequence[Mapping[str, Any]], labels: Sequence[str]
) -> NDArray[np.int64] | None:
    """The predicted class index of each classification answer (None for other tasks)."""
    if task != "classification":
        return None
    index = {label: i for i, label in enumerate(labels)}
    classes = [index.get(str(answer.get("label")), -1) for answer in predictions]
    if any(c < 0 for c in classes):
        return None
    return np.asarray(classes, dtype=np.int64)
