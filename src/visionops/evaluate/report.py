"""The evaluation report: one self-contained HTML file.

Plots are embedded as base64 PNG ``data:`` URIs and the style sheet is inline, so
``report.html`` opens anywhere — mailed, attached to a ticket, offline — with no other file.
:func:`metric_label` and :func:`format_value` are shared with the CLI so the terminal tables
and the report name and round numbers the same way.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Mapping, Sequence
from typing import Any

from visionops.artifacts import EvalMetrics

__all__ = ["COLUMN_LABELS", "format_value", "metric_label", "render_report"]

_METRICS: dict[str, tuple[str, str]] = {
    "accuracy": ("Accuracy", "share of images whose most probable class is right"),
    "balanced_accuracy": ("Balanced accuracy", "mean recall over classes (ignores imbalance)"),
    "f1_macro": ("Macro F1", "mean F1 over classes, each class counting the same"),
    "f1_weighted": ("Weighted F1", "mean F1 over classes, weighted by support"),
    "log_loss": ("Log loss", "cross-entropy of the probabilities; lower is better"),
    "ece": ("Calibration error (ECE)", "15 bins; 0 = confidence matches accuracy"),
    "map": ("mAP", "mean average precision over labels with positives; threshold-free"),
    "f1_micro": ("Micro F1", "F1 over all label decisions at the tuned thresholds"),
    "precision_micro": ("Micro precision", "share of predicted labels that are right"),
    "recall_micro": ("Micro recall", "share of true labels that are found"),
    "subset_accuracy": ("Exact match", "share of images with every label right"),
    "r2": ("R²", "coefficient of determination, mean over targets; 1 = exact"),
    "mae": ("MAE", "mean absolute error, mean over targets (see per-target units)"),
    "rmse": ("RMSE", "root mean squared error, mean over targets"),
    "mape": ("MAPE", "mean absolute percentage error, mean over targets"),
}

COLUMN_LABELS: dict[str, str] = {
    "class": "class",
    "target": "target",
    "unit": "unit",
    "ap": "AP",
    "precision": "precision",
    "recall": "recall",
    "f1": "F1",
    "support": "support",
    "predicted": "predicted",
    "threshold": "threshold",
    "mae": "MAE",
    "rmse": "RMSE",
    "r2": "R²",
    "mape": "MAPE",
    "mape_n": "MAPE items",
    "true_mean": "true mean",
    "true_std": "true std",
}
"""Display names of the per-class and per-target columns."""

_UNIT_SCORES = frozenset({"ap", "precision", "recall", "f1"})
"""Columns on 0..1 where higher is better: drawn with an in-cell bar."""
_PERCENT = frozenset({"mape"})
_SIGNIFICANT = frozenset({"mae", "rmse", "true_mean", "true_std"})


def metric_label(name: str) -> tuple[str, str]:
    """Display name and one-line meaning of a headline metric.

    Args:
        name: Key in ``metrics.json``'s ``metrics`` (``accuracy``, ``top5_accuracy``, ...).

    Returns:
        ``(label, description)``; unknown names come back as they are with no description.
    """
    if name.startswith("top") and name.endswith("_accuracy"):
        k = name[3 : -len("_accuracy")]
        return f"Top-{k} accuracy", f"share of images whose true class is among the {k} likeliest"
    return _METRICS.get(name, (name, ""))


def format_value(name: str, value: Any) -> str:
    """Format a metric or table value for people: None as an em dash, scores to 4 places.

    Args:
        name: The metric or column name (decides percent, significant digits or fixed).
        value: The value.

    Returns:
        The text to show.
    """
    if value is None:
        return "—"
    if not isinstance(value, float):
        return str(value)
    if name in _PERCENT:
        return f"{100 * value:.2f} %"
    if name in _SIGNIFICANT:
        return f"{value:.4g}"
    if name == "threshold":
        return f"{value:.2f}"
    return f"{value:.4f}"


_STYLE = """
:root { color-scheme: light; --ink: #1f2933; --muted: #616e7c; --line: #d9e2ec;
        --accent: #2f6fb0; --warn-bg: #fff8e1; --warn-line: #f0b429; }
* { box-sizing: border-box; }
body { margin: 0 auto; max-width: 1100px; padding: 28px 32px 48px; color: var(--ink);
       font: 15px/1.5 -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
h1 { font-size: 26px; margin: 0 0 4px; }
h2 { font-size: 19px; margin: 34px 0 12px; padding-bottom: 4px;
     border-bottom: 1px solid var(--line); }
.sub { color: var(--muted); margin: 0; }
.warnings { background: var(--warn-bg); border-left: 4px solid var(--warn-line);
            padding: 10px 16px; margin: 20px 0 0; }
.warnings ul { margin: 4px 0; padding-left: 20px; }
.cards { display: flex; flex-wrap: wrap; gap: 12px; margin-top: 20px; }
.card { border: 1px solid var(--line); border-radius: 8px; padding: 10px 16px; min-width: 150px; }
.card .value { font-size: 24px; font-weight: 600; color: var(--accent); }
.card .name { color: var(--muted); font-size: 13px; }
table { border-collapse: collapse; width: 100%; font-size: 14px; }
th, td { padding: 5px 10px; border-bottom: 1px solid var(--line); text-align: left; }
th { background: #f5f7fa; font-weight: 600; position: sticky; top: 0; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.desc { color: var(--muted); }
.bar { display: inline-block; width: 56px; height: 9px; margin-right: 8px;
       background: #eef2f7; border-radius: 2px; vertical-align: middle; }
.bar span { display: block; height: 100%; background: var(--accent); border-radius: 2px; }
dl.details { display: grid; grid-template-columns: max-content 1fr; gap: 4px 18px; margin: 0; }
dl.details dt { color: var(--muted); }
dl.details dd { margin: 0; word-break: break-all; }
code { font: 13px ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
.plots { display: flex; flex-wrap: wrap; gap: 18px; align-items: flex-start; }
figure { margin: 0; border: 1px solid var(--line); border-radius: 8px; padding: 10px;
         max-width: 100%; }
figure img { display: block; max-width: 100%; height: auto; }
figure.half { flex: 0 1 500px; }
figure.half img { width: 100%; }
figure.wide { flex: 1 1 100%; }
figcaption { color: var(--muted); font-size: 13px; margin-top: 6px; max-width: 520px; }
footer { margin-top: 40px; color: var(--muted); font-size: 12px; }
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _headline(metrics: Mapping[str, Any]) -> str:
    cards: list[str] = []
    rows: list[str] = []
    for name, value in metrics.items():
        label, description = metric_label(name)
        shown = format_value(name, value)
        if len(cards) < 4:
            cards.append(
                f'<div class="card"><div class="value">{_e(shown)}</div>'
                f'<div class="name">{_e(label)}</div></div>'
            )
        rows.append(
            f"<tr><td>{_e(label)}</td><td class=num>{_e(shown)}</td>"
            f'<td class="desc">{_e(description)}</td></tr>'
        )
    return (
        f'<div class="cards">{"".join(cards)}</div>'
        "<h2>Metrics</h2><table><thead><tr><th>metric</th><th class=num>value</th>"
        f"<th>meaning</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


def _cell(column: str, value: Any) -> str:
    shown = _e(format_value(column, value))
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if column in _UNIT_SCORES:
            pct = max(0.0, min(100.0, 100.0 * float(value)))
            bar = f'<span class="bar"><span style="width: {pct:.1f}%"></span></span>'
            return f"<td class=num>{bar}{shown}</td>"
        return f"<td class=num>{shown}</td>"
    if value is None:
        return f"<td class=num>{shown}</td>"
    return f"<td>{shown}</td>"


def _table(title: str, rows: Sequence[Mapping[str, Any]], note: str = "") -> str:
    if not rows:
        return ""
    columns = list(rows[0])
    numeric = {
        column
        for column in columns
        if all(isinstance(row.get(column), (int, float, type(None))) for row in rows)
    }
    head = "".join(
        f"<th{' class=num' if column in numeric else ''}>{_e(COLUMN_LABELS.get(column, column))}"
        "</th>"
        for column in columns
    )
    body = "".join(
        "<tr>" + "".join(_cell(column, row.get(column)) for column in columns) + "</tr>"
        for row in rows
    )
    note_html = f'<p class="sub">{_e(note)}</p>' if note else ""
    return (
        f"<h2>{_e(title)}</h2>{note_html}<table><thead><tr>{head}</tr></thead>"
        f"<tbody>{body}</tbody></table>"
    )


def _details(record: EvalMetrics) -> str:
    checkpoint, dataset = record.checkpoint, record.dataset
    inference, model = record.inference, record.model
    fingerprint = dataset.fingerprint or ""
    matches = dataset.fingerprint_matches
    same = ""
    if matches is True:
        same = " (same as at training)"
    elif matches is False:
        same = " (CHANGED since training)"
    asked = record.requested_split
    items = [
        ("run", record.run),
        ("task", record.task),
        (
            "split",
            record.split + (f" (asked for {asked})" if asked not in (None, record.split) else ""),
        ),
        ("images scored", record.n),
        (
            "checkpoint",
            f"{checkpoint.file} (epoch {checkpoint.epoch}), sha256 {checkpoint.sha256[:16]}…",
        ),
        ("dataset", f"{dataset.name} — {dataset.path}"),
        ("dataset fingerprint", f"{fingerprint[:16]}…" + same),
    ]
    if model is not None:
        items.insert(5, ("model", f"{model.name} ({model.num_outputs} outputs)"))
    if inference is not None:
        items.append(
            (
                "inference",
                f"{inference.device} ({inference.precision}), {inference.images_per_s} images/s",
            )
        )
    thresholds_from = (record.model_extra or {}).get("thresholds_from")
    if thresholds_from:
        items.append(("thresholds", f"per label, from {thresholds_from}"))
    body = "".join(f"<dt>{_e(key)}</dt><dd>{_e(value)}</dd>" for key, value in items)
    return f'<h2>Details</h2><dl class="details">{body}</dl>'


_HALF_ROW_PX = 800


def _png_width(png: bytes) -> int:
    """Pixel width from the PNG header (IHDR is always the first chunk)."""
    return int.from_bytes(png[16:20], "big") if png[:8] == b"\x89PNG\r\n\x1a\n" else 0


def _plots(captions: Mapping[str, str], images: Mapping[str, bytes]) -> str:
    figures = []
    for filename, caption in captions.items():
        png = images.get(filename)
        if png is None:
            continue
        data = base64.b64encode(png).decode("ascii")
        # Small figures go two to a row; a big one (a confusion matrix of many classes)
        # keeps a full row so its labels stay readable.
        size = "wide" if _png_width(png) > _HALF_ROW_PX else "half"
        figures.append(
            f'<figure class="{size}"><img src="data:image/png;base64,{data}" alt="{_e(caption)}">'
            f"<figcaption>{_e(caption)} <code>{_e(filename)}</code></figcaption></figure>"
        )
    if not figures:
        return ""
    return f'<h2>Plots</h2><div class="plots">{"".join(figures)}</div>'


def render_report(record: EvalMetrics | Mapping[str, Any], images: Mapping[str, bytes]) -> str:
    """Render the evaluation as one self-contained HTML page.

    Args:
        record: What ``metrics.json`` holds (the model, or its JSON data).
        images: PNG bytes by file name, for the names in ``record.plots``.

    Returns:
        The HTML text; it references no external file, script, font or style sheet.
    """
    from visionops.tasks import TASKS

    if not isinstance(record, EvalMetrics):
        record = EvalMetrics.model_validate(dict(record))
    title = f"visionops eval — {record.run} · {record.split}"
    warning_html = (
        '<section class="warnings"><strong>Warnings</strong><ul>'
        + "".join(f"<li>{_e(text)}</li>" for text in record.warnings)
        + "</ul></section>"
        if record.warnings
        else ""
    )
    per_class = [row.columns() for row in record.per_class or []]
    per_target = [row.columns() for row in record.per_target or []]
    tables = ""
    if per_class:
        task = TASKS.get(record.task)
        label = task.row_noun if task is not None else "class"
        tables += _table(
            f"Per {label}",
            per_class,
            "support = true items of the class in this split"
            + ("; predicted = items the model gave this class" if label == "class" else ""),
        )
    if per_target:
        tables += _table(
            "Per target",
            per_target,
            "errors in each target's own unit; MAPE leaves out items whose true value is 0",
        )
    subtitle = (
        f"{record.task} · {record.split} split · {record.n} images ·"
        f" {record.checkpoint.which} checkpoint"
    )
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title><style>{_STYLE}</style></head><body>"
        f"<header><h1>Evaluation of {_e(record.run)}</h1><p class=sub>{_e(subtitle)}</p></header>"
        f"{warning_html}"
        f"{_headline(record.metrics)}"
        f"{_plots(record.plots, images)}"
        f"{tables}"
        f"{_details(record)}"
        f"<footer>Written by visionops {_e(record.visionops_version or '')} at"
        f" {_e(record.created_at or '')}. Self-contained: plots are embedded.</footer>"
        "</body></html>\n"
    )
