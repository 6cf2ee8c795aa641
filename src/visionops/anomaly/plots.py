"""Anomaly evaluation figures, rendered straight to PNG bytes (no pyplot state).

Examples:
    >>> png = score_histogram_png(scores, labels, threshold=2.5)
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from numpy.typing import NDArray

from visionops.imaging import heatmap_overlay

__all__ = ["overlays_png", "score_histogram_png"]

_DPI = 110


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=_DPI, metadata={"Software": None})
    return buffer.getvalue()


def score_histogram_png(
    scores: NDArray[np.floating[Any]], labels: NDArray[Any], threshold: float
) -> bytes:
    """Histograms of good and defective image scores with the threshold marked."""
    figure = Figure(figsize=(6.0, 3.4))
    axes = figure.add_subplot()
    bins = np.histogram_bin_edges(scores, bins=min(30, max(5, len(scores) // 2))).tolist()
    labels = np.asarray(labels).astype(bool)
    axes.hist(scores[~labels], bins=bins, alpha=0.6, label=f"good ({int((~labels).sum())})")
    axes.hist(scores[labels], bins=bins, alpha=0.6, label=f"defect ({int(labels.sum())})")
    axes.axvline(threshold, color="black", linestyle="--", label=f"threshold {threshold:.3g}")
    axes.set_xlabel("image anomaly score")
    axes.set_ylabel("images")
    axes.legend(frameon=False)
    figure.tight_layout()
    return _png(figure)


def overlays_png(
    images: Sequence[NDArray[np.uint8]],
    heatmaps: Sequence[NDArray[np.floating[Any]]],
    masks: Sequence[NDArray[np.uint8] | None],
    captions: Sequence[str],
    *,
    low: float,
    high: float,
    title: str,
    columns: tuple[str, str] = ("image", "heatmap (red) · true defect (cyan)"),
) -> bytes:
    """A row per image: the image, the heatmap overlay, and the ground-truth mask outline.

    Args:
        images: ``(H, W, C)`` uint8 images.
        heatmaps: One anomaly heatmap per image.
        masks: Ground-truth masks (None where the image has none).
        captions: One caption per row, drawn over its image.
        low: Heatmap value drawn as no colour.
        high: Heatmap value drawn as full red.
        title: Figure title.
        columns: Captions of the two columns, drawn over the first row.

    Returns:
        PNG bytes.
    """
    rows = max(1, len(images))
    figure = Figure(figsize=(5.0, 2.2 * rows + 0.4))
    figure.suptitle(title)
    for row, (image, heatmap, mask, caption) in enumerate(
        zip(images, heatmaps, masks, captions, strict=True)
    ):
        left = figure.add_subplot(rows, 2, 2 * row + 1)
        right = figure.add_subplot(rows, 2, 2 * row + 2)
        left.imshow(image.squeeze(), cmap="gray" if image.shape[-1] == 1 else None)
        right.imshow(heatmap_overlay(image, heatmap, low, high))
        if mask is not None and mask.any():
            right.contour(mask > 0, levels=[0.5], colors=["cyan"], linewidths=1.0)
        head = (f"{columns[0]}\n", f"{columns[1]}\n") if row == 0 else ("", "")
        left.set_title(f"{head[0]}{caption}", fontsize=8)
        right.set_title(head[1] or " ", fontsize=8)
        for axes in (left, right):
            axes.set_axis_off()
    figure.tight_layout()
    return _png(figure)
