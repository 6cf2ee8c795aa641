"""PNG plots for run folders, drawn with matplotlib's Agg backend (no display needed).

Each function draws one figure from plain data and writes it atomically; they share nothing
but :func:`save_figure`, so stages can add their own plots here independently.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from visionops._io import atomic_write_bytes

__all__ = [
    "new_figure",
    "plot_learning_rate",
    "plot_loss_curves",
    "plot_metric_curves",
    "save_figure",
]


def new_figure(width: float = 6.0, height: float = 4.0) -> Any:
    """A matplotlib ``Figure`` on the Agg canvas (never pyplot: no global state, no GUI)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def save_figure(figure: Any, path: Path) -> Path:
    """Write ``figure`` as PNG to ``path`` atomically and return the path."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    atomic_write_bytes(path, buffer.getvalue())
    return path


def _series(history: Sequence[Mapping[str, Any]], key: str) -> tuple[list[int], list[float]]:
    epochs, values = [], []
    for row in history:
        value = row.get(key)
        if isinstance(value, int | float):
            epochs.append(int(row["epoch"]))
            values.append(float(value))
    return epochs, values


def plot_loss_curves(history: Sequence[Mapping[str, Any]], path: Path) -> Path:
    """Training and validation loss per epoch.

    Args:
        history: Rows of ``history.jsonl`` (``epoch``, ``train_loss``, ``val_loss``).
        path: The PNG to write.
    """
    figure = new_figure()
    axes = figure.add_subplot()
    for key, label in (("train_loss", "train"), ("val_loss", "validation")):
        epochs, values = _series(history, key)
        if values:
            axes.plot(epochs, values, marker="o", label=label)
    axes.set(xlabel="epoch", ylabel="loss", title="Loss")
    axes.grid(alpha=0.3)
    axes.legend()
    return save_figure(figure, path)


def plot_metric_curves(
    history: Sequence[Mapping[str, Any]],
    metrics: Sequence[str],
    path: Path,
    best_epoch: int | None = None,
) -> Path:
    """Validation metrics per epoch, with the best epoch marked.

    Args:
        history: Rows of ``history.jsonl`` (metrics stored as ``val_<name>``).
        metrics: Metric names to draw (``accuracy``, ``map``, ``r2`` ...).
        path: The PNG to write.
        best_epoch: Epoch of the best checkpoint, drawn as a dashed line.
    """
    figure = new_figure()
    axes = figure.add_subplot()
    for name in metrics:
        epochs, values = _series(history, f"val_{name}")
        if values:
            axes.plot(epochs, values, marker="o", label=name)
    if best_epoch is not None:
        axes.axvline(best_epoch, color="grey", linestyle="--", label=f"best (epoch {best_epoch})")
    axes.set(xlabel="epoch", ylabel="value", title="Validation metrics")
    axes.grid(alpha=0.3)
    axes.legend()
    return save_figure(figure, path)


def plot_learning_rate(history: Sequence[Mapping[str, Any]], path: Path) -> Path:
    """Learning rate at the end of each epoch."""
    figure = new_figure(6.0, 3.0)
    axes = figure.add_subplot()
    epochs, values = _series(history, "lr")
    axes.plot(epochs, values, marker="o")
    axes.set(xlabel="epoch", ylabel="learning rate", title="Learning rate")
    axes.grid(alpha=0.3)
    return save_figure(figure, path)
