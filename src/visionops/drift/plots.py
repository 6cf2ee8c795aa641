"""The drift report's figures, as PNG bytes (matplotlib Agg; no display, no pyplot state)."""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from visionops.drift.detect import TimeWindow
from visionops.plots import new_figure

__all__ = [
    "class_distribution_png",
    "histograms_figure",
    "histograms_png",
    "projection_png",
    "windows_png",
]

REFERENCE_COLOUR = "#2f6fb0"
CURRENT_COLOUR = "#d64545"


def _png(figure: Any) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def histograms_png(
    panels: Sequence[tuple[str, NDArray[np.float64], NDArray[np.float64], str]],
) -> bytes:
    """Reference-vs-current histograms, one panel per ``(title, reference, current, note)``."""
    return _png(histograms_figure(panels))


def histograms_figure(
    panels: Sequence[tuple[str, NDArray[np.float64], NDArray[np.float64], str]],
) -> Any:
    """The figure :func:`histograms_png` renders (each sample's bars sum to 1)."""
    count = len(panels)
    columns = min(count, 2)
    rows = (count + columns - 1) // columns
    figure = new_figure(5.0 * columns, 3.0 * rows)
    for index, (title, reference, current, note) in enumerate(panels):
        axes = figure.add_subplot(rows, columns, index + 1)
        ref = reference[np.isfinite(reference)]
        cur = current[np.isfinite(current)]
        both = np.concatenate([ref, cur])
        low, high = (float(both.min()), float(both.max())) if both.size else (0.0, 1.0)
        if high <= low:
            high = low + 1e-6
        bins = np.linspace(low, high, 31)
        # Each sample's bars sum to 1, so samples of different sizes compare bin by bin.
        axes.hist(
            ref,
            bins=bins,
            weights=np.full(len(ref), 1.0 / max(len(ref), 1)),
            alpha=0.55,
            color=REFERENCE_COLOUR,
            label=f"reference (n={len(ref)})",
        )
        axes.hist(
            cur,
            bins=bins,
            weights=np.full(len(cur), 1.0 / max(len(cur), 1)),
            alpha=0.55,
            color=CURRENT_COLOUR,
            label=f"current (n={len(cur)})",
        )
        axes.set_title(f"{title}\n{note}", fontsize=9)
        axes.set_ylabel("share of images", fontsize=8)
        axes.tick_params(labelsize=8)
        if index == 0:
            axes.legend(fontsize=8)
    return figure


def projection_png(reference: NDArray[np.float32], current: NDArray[np.float32]) -> bytes:
    """Both samples' embeddings on the reference's first two principal components."""
    from sklearn.decomposition import PCA

    pca = PCA(n_components=2, random_state=0).fit(reference)
    ref, cur = pca.transform(reference), pca.transform(current)
    figure = new_figure(6.0, 4.6)
    axes = figure.add_subplot(1, 1, 1)
    axes.scatter(
        ref[:, 0],
        ref[:, 1],
        s=9,
        alpha=0.5,
        color=REFERENCE_COLOUR,
        label=f"reference (n={len(ref)})",
    )
    axes.scatter(
        cur[:, 0], cur[:, 1], s=9, alpha=0.5, color=CURRENT_COLOUR, label=f"current (n={len(cur)})"
    )
    explained = pca.explained_variance_ratio_
    axes.set_xlabel(f"PC 1 ({explained[0]:.0%} of reference variance)")
    axes.set_ylabel(f"PC 2 ({explained[1]:.0%})")
    axes.set_title("Embeddings projected on the reference's principal components", fontsize=10)
    axes.legend(fontsize=8)
    return _png(figure)


def class_distribution_png(
    labels: Sequence[str], reference_counts: Sequence[int], current_counts: Sequence[int]
) -> bytes:
    """Share of images predicted as each class, reference beside current."""
    ref = np.asarray(reference_counts, np.float64)
    cur = np.asarray(current_counts, np.float64)
    ref_share = ref / max(ref.sum(), 1.0)
    cur_share = cur / max(cur.sum(), 1.0)
    positions = np.arange(len(labels))
    figure = new_figure(max(5.0, 0.55 * len(labels) + 2.0), 3.8)
    axes = figure.add_subplot(1, 1, 1)
    axes.bar(positions - 0.2, ref_share, width=0.4, color=REFERENCE_COLOUR, label="reference")
    axes.bar(positions + 0.2, cur_share, width=0.4, color=CURRENT_COLOUR, label="current")
    axes.set_xticks(
        positions, [str(label) for label in labels], rotation=45, ha="right", fontsize=8
    )
    axes.set_ylabel("share of images")
    axes.set_title("Predicted-class distribution", fontsize=10)
    axes.legend(fontsize=8)
    return _png(figure)


def windows_png(windows: Sequence[TimeWindow], alpha: float) -> bytes:
    """Overall p-value per time window of the current sample, with the α line."""
    figure = new_figure(6.5, 3.6)
    axes = figure.add_subplot(1, 1, 1)
    positions = np.arange(len(windows))
    values = [max(w.p_value, 1e-6) for w in windows]
    colours = [CURRENT_COLOUR if w.drifted else REFERENCE_COLOUR for w in windows]
    axes.bar(positions, values, color=colours)
    axes.axhline(alpha, color="#444", linestyle="--", linewidth=1, label=f"α = {alpha:g}")
    axes.set_yscale("log")
    axes.set_ylim(1e-4, 1.5)
    axes.set_xticks(positions, [w.label for w in windows], rotation=30, ha="right", fontsize=8)
    axes.set_ylabel("overall p-value")
    axes.set_title("Drift by time window (red = drift)", fontsize=10)
    axes.legend(fontsize=8)
    return _png(figure)
