"""Image statistics as the columns drift detection compares.

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
