"""Image statistics as the columns drift detection compares, and what each one means.

The statistics themselves come from :func:`visionops.imaging.image_statistics` (of the
model-sized pixels) and :func:`visionops.image_quality.quality_statistics` (of the upload
before the resize: what a camera or encoder changes), the functions ``serve`` logs,
``export`` stores in ``reference.npz`` and ``predict`` logs, so the reference and the traffic
are measured identically.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from visionops.artifacts import LoggedImage

__all__ = [
    "IMAGE_FEATURES",
    "feature_label",
    "feature_meaning",
    "feature_reading",
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
    "noise",
    "detail",
    "blockiness",
    "jpeg_quality",
    "colourfulness",
    "hue",
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
    "noise": "noise level",
    "detail": "fine detail",
    "blockiness": "JPEG blockiness",
    "jpeg_quality": "JPEG quality",
    "colourfulness": "colourfulness",
    "hue": "average hue",
}

_MEANINGS = {
    "mean": "average brightness of the model-sized image",
    "std": "spread of pixel values (contrast) of the model-sized image",
    "sharpness": "variance of the Laplacian of the model-sized image (edges and focus)",
    "saturation": "average colour saturation",
    "width": "width of the upload before resizing",
    "height": "height of the upload before resizing",
    "noise": "sensor noise: a robust estimate of the grey image's noise standard deviation,"
    " measured at the upload's own resolution before the resize",
    "detail": "high-frequency energy at the upload's own resolution: texture, edges and noise"
    " that the resize to the model's size averages away",
    "blockiness": "how strongly JPEG's 8x8 block edges show (1 = no grid; 2 = steps across"
    " block edges twice as large as elsewhere)",
    "jpeg_quality": "the quality (1-100) the JPEG files were saved at, read from their"
    " quantisation tables",
    "colourfulness": "how vivid the colours are (Hasler and Süsstrunk's colourfulness)",
    "hue": "hue of the average colour in degrees (0 red, 120 green, 240 blue): white balance",
}

# What a move of each statistic means for the pictures, up and down.
_READINGS = {
    "mean": ("images are brighter", "images are darker"),
    "std": ("images have more contrast", "images have less contrast"),
    "sharpness": ("images are sharper", "images are blurrier"),
    "saturation": ("colours are more saturated", "colours are less saturated"),
    "width": ("uploads are wider", "uploads are narrower"),
    "height": ("uploads are taller", "uploads are shorter"),
    "noise": ("images are noisier", "images are less noisy (smoothed or compressed)"),
    "detail": (
        "images hold more fine detail (sharper or noisier)",
        "images hold less fine detail (blurred, smoothed or compressed)",
    ),
    "blockiness": (
        "JPEG block artefacts are stronger (heavier compression)",
        "JPEG block artefacts are weaker (lighter compression)",
    ),
    "jpeg_quality": (
        "files are compressed less (higher JPEG quality)",
        "files are compressed harder (lower JPEG quality)",
    ),
    "colourfulness": ("colours are more vivid", "colours are duller"),
    "hue": ("the colour balance shifted", "the colour balance shifted"),
}


def feature_label(name: str, channels: int = 3) -> str:
    """A person's name for a statistic (``mean`` → ``brightness``, ``mean_c0`` → ``red mean``)."""
    if name.startswith("mean_c") and name[6:].isdigit():
        index = int(name[6:])
        if channels == 3 and index < 3:
            return f"{('red', 'green', 'blue')[index]} mean"
        return f"channel {index} mean"
    return _LABELS.get(name, name)


def feature_meaning(name: str) -> str:
    """What a statistic measures, in a sentence for the report (empty for channel means)."""
    if name.startswith("mean_c"):
        return "average of one colour channel"
    return _MEANINGS.get(name, "")


def feature_reading(name: str, up: bool) -> str:
    """What a move of a statistic says about the images (``images are noisier``), or ""."""
    if name.startswith("mean_c"):
        return ""
    up_text, down_text = _READINGS.get(name, ("", ""))
    return up_text if up else down_text


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
