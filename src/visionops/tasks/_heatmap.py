"""A map over the model-sized image as PNGs in an answer (anomaly maps, class activation maps)."""

from __future__ import annotations

import base64
import io
from typing import Any

import numpy as np
from numpy.typing import NDArray

from visionops.imaging import heatmap_overlay

__all__ = ["map_png", "png_base64"]


def png_base64(pixels: NDArray[np.uint8]) -> str:
    """An 8-bit greyscale or RGB array as a base64-encoded PNG."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def map_png(
    values: NDArray[np.float32],
    pixels: NDArray[Any] | None,
    *,
    low: float,
    high: float | None,
) -> dict[str, Any]:
    """A ``(H, W)`` map as PNGs for an answer.

    Args:
        values: The map, at the model's input size.
        pixels: The model-sized image it belongs to (adds ``overlay_png_base64``), or None.
        low: The value the overlay draws darkest.
        high: The value the overlay draws brightest (None: the map's own maximum).

    Returns:
        ``width``, ``height``, ``min``, ``max``, ``png_base64`` (8-bit greyscale, min..max
        stretched to 0..255) and, with ``pixels``, ``overlay_png_base64``.
    """
    smallest, largest = float(values.min()), float(values.max())
    scaled = (
        (values - smallest) / (largest - smallest) if largest > smallest else np.zeros_like(values)
    )
    grey = np.round(scaled * 255).astype(np.uint8)
    answer: dict[str, Any] = {
        "width": int(grey.shape[1]),
        "height": int(grey.shape[0]),
        "min": smallest,
        "max": largest,
        "png_base64": png_base64(grey),
    }
    if pixels is not None and pixels.shape[:2] == values.shape:
        top = largest if high is None else high
        answer["overlay_png_base64"] = png_base64(heatmap_overlay(pixels, values, low, top))
    return answer
