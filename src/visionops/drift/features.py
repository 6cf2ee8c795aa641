"""Image statistics as the columns drift detection compares.

The statistics themselves come from :func:`visionops.imaging.image_statistics`, the one
function ``serve`` logs, ``export`` stores in ``reference.npz`` and ``predict`` logs, so the
reference and the traffic are measured identically.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from visionops.artifacts import LoggedImage

__all__ = [
    "IMAGE_FEATURES",
    "feature_label",
    "image_features",
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
"""Statistics tested, when both the reference and the current sample have them (each a
field of :class:`~visionops.artifacts.LoggedImage`)."""

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


def image_features(images: Sequence[LoggedImage | None]) -> dict[str, NDArray[np.float64]]:
    """The tested statistics of each image, one ``(n,)`` column per statistic.

    Args:
        images: Each image's record (a log record's ``image``; None when it has none).

    Returns:
        A column for each of :data:`IMAGE_FEATURES` that at least one image has, NaN where
        an image lacks it.
    """
    columns: dict[str, NDArray[np.float64]] = {}
    for name in IMAGE_FEATURES:
        values = [None if image is None else getattr(image, name) for image in images]
        column = np.array([np.nan if value is None else float(value) for value in values])
        if np.isfinite(column).any():
            columns[name] = column
    return columns
