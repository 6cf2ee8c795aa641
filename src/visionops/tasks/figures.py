"""Evaluation plots, rendered straight to PNG bytes (no pyplot, no global state, no display).

Each function takes plain arrays and returns the PNG file content, so ``visionops eval`` can
write it into ``runs/<name>/eval/`` and embed the same bytes in ``report.html``.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "confusion_matrix_png",
    "image_gallery_png",
    "per_class_bars_png",
    "regression_scatter_png",
    "reliability_diagram_png",
]

_DPI = 110
_LABEL_CHARS = 18
"""Longer class names are shortened on axes (the tables keep them whole)."""


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    # No "Software" stamp: the same inputs give the same bytes across matplotlib versions.
    figure.savefig(buffer, format="png", dpi=_DPI, metadata={"Software": None})
    return buffer.getvalue()


def _short(name: str) -> str:
    return name if len(name) <= _LABEL_CHARS else name[: _LABEL_CHARS - 1] + "…"


def confusion_matrix_png(
    matrix: ArrayLike, class_names: Sequence[str], *, title: str = "Confusion matrix"
) -> bytes:
    """Draw a row-normalised confusion matrix (rows: true class, columns: predicted).

    Args:
        matrix: ``(K, K)`` values in 0..1, each row summing to 1 (or 0 for absent classes).
        class_names: The ``K`` class names, in matrix order.
        title: Figure title.

    Returns:
        PNG bytes.
    """
    values = np.asarray(matrix, dtype=np.float64)
    k = values.shape[0]
    # Capped so the report (about 1000 px wide at 110 dpi) shows it near its real size.
    side = float(np.clip(0.3 * k + 3.0, 4.5, 10.5))
    figure = Figure(figsize=(side + 1.2, side), layout="constrained")
    axes = figure.add_subplot()
    image = axes.imshow(values, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04, label="share of true class")
    labels = [_short(name) for name in class_names]
    font = 9 if k <= 12 else 8 if k <= 24 else 7 if k <= 40 else 5
    axes.set_xticks(range(k), labels, rotation=45 if k > 4 else 0, ha="right", fontsize=font)
    axes.set_yticks(range(k), labels, fontsize=font)
    axes.set_xlabel("predicted class")
    axes.set_ylabel("true class")
    axes.set_title(title)
    if k <= 16:  # beyond that the numbers are unreadable; the colour carries the information
        for row in range(k):
            for col in range(k):
                value = values[row, col]
                if value > 0:
                    axes.text(
                        col,
                        row,
                        f"{value:.2f}",
                        ha="center",
                        va="center",
                        fontsize=font - 1,
                        color="white" if value > 0.5 else "black",
                    )
    return _png(figure)


def reliability_diagram_png(
    bin_edges: ArrayLike,
    bin_accuracy: ArrayLike,
    bin_confidence: ArrayLike,
    bin_counts: ArrayLike,
    *,
    ece: float,
) -> bytes:
    """Draw a reliability diagram: accuracy against confidence per bin, with bin sizes below.

    Args:
        bin_edges: ``n_bins + 1`` edges on 0..1.
        bin_accuracy: Accuracy of each bin (NaN for empty bins).
        bin_confidence: Mean confidence of each bin (NaN for empty bins).
        bin_counts: Items per bin.
        ece: The expected calibration error, shown in the title.

    Returns:
        PNG bytes.
    """
    edges = np.asarray(bin_edges, dtype=np.float64)
    accuracy = np.asarray(bin_accuracy, dtype=np.float64)
    confidence = np.asarray(bin_confidence, dtype=np.float64)
    counts = np.asarray(bin_counts, dtype=np.int64)
    width = np.diff(edges)
    filled = counts > 0
    figure = Figure(figsize=(5.5, 6.0), layout="constrained")
    top, bottom = figure.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    top.bar(
        edges[:-1][filled],
        accuracy[filled],
        width=width[filled],
        align="edge",
        color="#4c72b0",
        edgecolor="white",
        label="accuracy",
    )
    top.bar(
        edges[:-1][filled],
        (confidence - accuracy)[filled],
        bottom=accuracy[filled],
        width=width[filled],
        align="edge",
        fill=False,
        edgecolor="#c44e52",
        hatch="///",
        label="gap to mean confidence",
    )
    top.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="perfect calibration")
    top.set_xlim(0, 1)
    top.set_ylim(0, 1)
    top.set_ylabel("accuracy")
    top.set_title(f"Reliability diagram (ECE = {ece:.3f})")
    top.legend(loc="upper left", fontsize=8)
    bottom.bar(edges[:-1], counts, width=width, align="edge", color="#8c8c8c", edgecolor="white")
    bottom.set_xlabel("confidence (top class probability)")
    bottom.set_ylabel("items")
    return _png(figure)


def regression_scatter_png(
    true: ArrayLike,
    predicted: ArrayLike,
    *,
    name: str,
    unit: str = "",
    r2: float | None = None,
    mae: float | None = None,
) -> bytes:
    """Draw predicted against true values for one regression target, with the y = x line.

    Args:
        true: ``(N,)`` true values in original units.
        predicted: ``(N,)`` predictions in original units.
        name: Target name.
        unit: Target unit (may be empty).
        r2: R² shown in the title, if given.
        mae: MAE shown in the title, if given.

    Returns:
        PNG bytes.
    """
    y_true = np.asarray(true, dtype=np.float64)
    y_pred = np.asarray(predicted, dtype=np.float64)
    figure = Figure(figsize=(5.0, 5.0), layout="constrained")
    axes = figure.add_subplot()
    alpha = 0.7 if y_true.size <= 500 else 0.3
    axes.scatter(y_true, y_pred, s=12, alpha=alpha, color="#4c72b0", edgecolors="none")
    both = np.concatenate([y_true, y_pred]) if y_true.size else np.array([0.0, 1.0])
    low, high = float(np.min(both)), float(np.max(both))
    pad = 0.05 * (high - low) if high > low else 1.0
    limits = (low - pad, high + pad)
    axes.plot(limits, limits, linestyle="--", color="grey", linewidth=1, label="y = x")
    axes.set_xlim(limits)
    axes.set_ylim(limits)
    axes.set_aspect("equal")
    suffix = f" ({unit})" if unit else ""
    axes.set_xlabel(f"true {name}{suffix}")
    axes.set_ylabel(f"predicted {name}{suffix}")
    scores = []
    if r2 is not None:
        scores.append(f"R² = {r2:.3f}")
    if mae is not None:
        scores.append(f"MAE = {mae:.3g}{' ' + unit if unit else ''}")
    axes.set_title(name + (f"\n{', '.join(scores)}" if scores else ""))
    axes.legend(loc="upper left", fontsize=8)
    axes.grid(alpha=0.3)
    return _png(figure)


def per_class_bars_png(
    class_names: Sequence[str],
    series: dict[str, Sequence[float | None]],
    *,
    title: str,
    xlabel: str = "score",
) -> bytes:
    """Draw one horizontal bar group per class (e.g. average precision and F1 per label).

    Args:
        class_names: The class names, drawn top to bottom in this order.
        series: ``{legend name: one value per class}``; None values are left out.
        title: Figure title.
        xlabel: Label of the value axis (values are expected on 0..1).

    Returns:
        PNG bytes.
    """
    k = len(class_names)
    height = float(np.clip(0.32 * k * max(1, len(series)) / 1.5 + 1.5, 3.0, 24.0))
    figure = Figure(figsize=(6.5, height), layout="constrained")
    axes = figure.add_subplot()
    positions = np.arange(k)
    bar_height = 0.8 / max(1, len(series))
    for offset, (label, values) in enumerate(series.items()):
        numbers = np.array([np.nan if v is None else float(v) for v in values], dtype=np.float64)
        axes.barh(
            positions + offset * bar_height - 0.4 + bar_height / 2,
            np.nan_to_num(numbers, nan=0.0),
            height=bar_height,
            label=label,
        )
    font = 9 if k <= 20 else 6
    axes.set_yticks(positions, [_short(name) for name in class_names], fontsize=font)
    axes.invert_yaxis()
    axes.set_xlim(0, 1)
    axes.set_xlabel(xlabel)
    axes.set_title(title)
    axes.grid(axis="x", alpha=0.3)
    axes.legend(loc="lower right", fontsize=8)
    return _png(figure)


def image_gallery_png(
    images: Sequence[NDArray[np.uint8]],
    captions: Sequence[str],
    *,
    title: str,
    columns: int = 4,
) -> bytes:
    """Draw images in a grid, each with its caption above it (e.g. the worst mistakes).

    Args:
        images: ``(H, W, C)`` uint8 images, shown in this order, row by row.
        captions: One short caption per image (two lines at most read well).
        title: Figure title.
        columns: Images per row.

    Returns:
        PNG bytes.
    """
    count = max(1, len(images))
    columns = min(columns, count)
    rows = -(-count // columns)
    figure = Figure(figsize=(2.1 * columns, 2.3 * rows + 0.5), layout="constrained")
    figure.suptitle(title)
    for position, (image, caption) in enumerate(zip(images, captions, strict=True)):
        axes = figure.add_subplot(rows, columns, position + 1)
        pixels = np.asarray(image)
        gray = pixels.ndim == 3 and pixels.shape[-1] == 1
        axes.imshow(pixels.squeeze(), cmap="gray" if gray else None, vmin=0, vmax=255)
        axes.set_title(caption, fontsize=7)
        axes.set_axis_off()
    return _png(figure)
