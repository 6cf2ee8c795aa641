"""``visionops drift report``: compare current traffic with the bundle's reference.

Reads the bundle (``load_bundle``; never torch), its held-out ``reference.npz`` and either its
prediction log or a folder of images run through it, runs :func:`visionops.drift.detect.compare`
(and once per time window when the log spans time), then writes ``report.json`` and a
self-contained ``report.html`` — only after every test has run, so a failure writes nothing.

Examples:
    >>> report = drift_report(load_settings(), None)  # doctest: +SKIP
    >>> report.result.drifted, report.html_path.name
    (False, 'report.html')
"""

from __future__ import annotations

import html
import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from visionops import __version__
from visionops._io import atomic_dir, atomic_write_text
from visionops.config import Settings
from visionops.drift.detect import (
    FAMILY_TITLES,
    DriftResult,
    DriftTest,
    FamilyResult,
    KsTest,
    TimeWindow,
    compare,
)
from visionops.drift.features import feature_meaning
from visionops.drift.samples import (
    Sample,
    images_sample,
    log_sample,
    reference_sample,
    subset,
)
from visionops.errors import DriftError, VisionOpsError
from visionops.inference.bundle import Bundle, find_bundle, load_bundle
from visionops.progress import NULL_PROGRESS, ProgressReporter
from visionops.storage import is_url
from visionops.tasks import task_for

__all__ = ["REPORT_KIND", "DriftReport", "default_log_dir", "drift_report", "render_html"]

REPORT_KIND = "visionops.drift"
SCHEMA_VERSION = 1
MAX_WINDOWS = 6
WINDOW_PERMUTATIONS = 200
_TOP_PANELS = 4


@dataclass
class DriftReport:
    """What ``drift report`` produced.

    Attributes:
        result: The verdict and every test.
        payload: ``report.json`` as written.
        json_path: Where ``report.json`` is (the latest report, in the output folder).
        html_path: Where ``report.html`` is (the latest report, in the output folder).
        seconds: Wall time.
        dated_dir: The dated folder that keeps this report once later ones replace the
            latest (``<out>/2026-12-07T22-50-01Z/``).
    """

    result: DriftResult
    payload: dict[str, Any]
    json_path: Path
    html_path: Path
    seconds: float
    dated_dir: Path | None = None


def default_log_dir(bundle: Bundle) -> Path:
    """Where ``serve`` logs this bundle's predictions: ``<bundle>/../predictions``."""
    return bundle.path.resolve().parent / "predictions"


def _open_bundle(settings: Settings, target: Path | None) -> Bundle:
    try:
        return load_bundle(find_bundle(target, settings.runs_root))
    except VisionOpsError as exc:
        raise DriftError(str(exc)) from None


def _image_folder(location: str | Path) -> Path | None:
    """The local folder of images ``location`` names, or None when it is (or may be) a log."""
    text = str(location)
    if is_url(text) or any(char in text for char in "*?["):
        return None
    path = Path(text)
    if not path.exists():
        raise DriftError(
            f"--current {path} does not exist — pass a prediction-log folder or URL, or a folder"
            " of images"
        )
    if path.suffix == ".jsonl" or not path.is_dir():
        return None
    is_log = any(path.glob("predictions-*.jsonl")) or any(path.glob("*/predictions-*.jsonl"))
    return None if is_log else path


def _current(
    bundle: Bundle,
    current: Sequence[str | Path] | str | Path | None,
    last: int | None,
    since: datetime | None,
    progress: ProgressReporter,
) -> Sample:
    if current is None:
        return log_sample(bundle, default_log_dir(bundle), last=last, since=since)
    locations = [current] if isinstance(current, str | Path) else list(current)
    if not locations:
        return log_sample(bundle, default_log_dir(bundle), last=last, since=since)
    folders = [_image_folder(location) for location in locations]
    if len(locations) == 1 and folders[0] is not None:
        if last is not None or since is not None:
            raise DriftError(
                "--last and --since select log records; --current is a folder of images"
            )
        return images_sample(bundle, [folders[0]], progress)
    mixed = [str(location) for location, folder in zip(locations, folders, strict=True) if folder]
    if mixed:
        raise DriftError(
            f"--current {mixed[0]} is a folder of images, which cannot be merged with prediction"
            " logs — pass either one folder of images or only logs"
        )
    return log_sample(bundle, locations, last=last, since=since)


def _windows(
    reference: Sample, current: Sample, bundle: Bundle, settings: Settings
) -> list[TimeWindow]:
    """Overall p-value per equal-count time window, when the sample spans time."""
    times = current.times
    minimum = settings.drift.min_samples
    if times is None or current.count < 2 * minimum or min(times) == max(times):
        return []
    order = np.argsort(np.array([t.timestamp() for t in times]), kind="stable")
    count = min(MAX_WINDOWS, current.count // minimum)
    windows: list[TimeWindow] = []
    for chunk in np.array_split(order, count):
        part = subset(current, chunk.astype(np.int64), "window")
        result = compare(
            reference,
            part,
            task=task_for(bundle.meta),
            settings=settings.drift,
            channels=bundle.meta.input.channels,
            permutations=min(WINDOW_PERMUTATIONS, settings.drift.permutations),
        )
        first, last = times[int(chunk[0])], times[int(chunk[-1])]
        windows.append(
            TimeWindow(
                start=first.isoformat(),
                end=last.isoformat(),
                label=first.strftime("%m-%d %H:%M"),
                n=len(chunk),
                p_value=result.p_value,
                drifted=result.drifted,
            )
        )
    return windows


def _ks(family: FamilyResult) -> list[KsTest]:
    return [row for row in family.tests if isinstance(row, KsTest)]


def _plots(
    reference: Sample,
    current: Sample,
    result: DriftResult,
    bundle: Bundle,
    windows: list[TimeWindow],
) -> tuple[dict[str, str], dict[str, bytes]]:
    from visionops.drift import plots

    captions: dict[str, str] = {}
    images: dict[str, bytes] = {}
    images_family = result.family("images")
    if images_family is not None:
        top = sorted(_ks(images_family), key=lambda r: r.p_adjusted)[:_TOP_PANELS]
        panels = [
            (
                row.name,
                reference.features[row.key],
                current.features[row.key],
                f"KS {row.statistic:.2f}, p(adj) = {row.p_adjusted:.3g}",
            )
            for row in top
        ]
        images["image_statistics.png"] = plots.histograms_png(panels)
        captions["image_statistics.png"] = "Image statistics that moved most (smallest p first)"
    outputs_family = result.family("outputs")
    if outputs_family is not None and reference.outputs is not None and current.outputs is not None:
        rows = [r for r in _ks(outputs_family) if r.key.startswith("output_")]
        top = sorted(rows, key=lambda r: r.p_adjusted)[:_TOP_PANELS]
        panels = [
            (
                row.name,
                reference.outputs[:, int(row.key.split("_")[1])],
                current.outputs[:, int(row.key.split("_")[1])],
                f"KS {row.statistic:.2f}, p(adj) = {row.p_adjusted:.3g}",
            )
            for row in top
        ]
        if panels:
            images["outputs.png"] = plots.histograms_png(panels)
            captions["outputs.png"] = "Model outputs that moved most (smallest p first)"
    if reference.classes is not None and current.classes is not None:
        labels = bundle.labels
        images["classes.png"] = plots.class_distribution_png(
            labels,
            np.bincount(reference.classes, minlength=len(labels)).tolist(),
            np.bincount(current.classes, minlength=len(labels)).tolist(),
        )
        captions["classes.png"] = "Share of images predicted as each class"
    if (
        reference.embeddings is not None
        and current.embeddings is not None
        and min(len(reference.embeddings), reference.embeddings.shape[1]) >= 2
    ):
        images["embeddings.png"] = plots.projection_png(reference.embeddings, current.embeddings)
        captions["embeddings.png"] = (
            "2-D projection of the embeddings (PCA fitted on the reference)"
        )
    if windows:
        images["windows.png"] = plots.windows_png(windows, result.alpha)
        captions["windows.png"] = "Overall p-value per time window of the current sample"
    return captions, images


def drift_report(
    settings: Settings,
    target: Path | None,
    *,
    current: Sequence[str | Path] | str | Path | None = None,
    last: int | None = None,
    since: datetime | None = None,
    out: Path | None = None,
    progress: ProgressReporter = NULL_PROGRESS,
) -> DriftReport:
    """Compare current images with a bundle's held-out reference and write the report.

    Args:
        settings: Resolved settings (``drift.*``, ``runs_root``).
        target: A bundle, a run folder or name; None for ``runs/latest``.
        current: Prediction-log locations — folders, segments, URLs (``s3://bucket/logs``
            reads every replica under it), globs — merged by time; or one folder of images;
            None for the bundle's own log (``<run>/predictions``).
        last: Only the last N log records of this bundle.
        since: Only log records at or after this time.
        out: Output folder (default ``<run>/drift``). Each report goes to a new dated folder
            in it, which earlier reports keep theirs beside; ``report.html`` and
            ``report.json`` at its top are a copy of the latest.
        progress: Progress reporter.

    Returns:
        The verdict, the JSON payload and where the files are.

    Raises:
        DriftError: Any input problem (no bundle, no or empty log, a log from another bundle,
            too few images, a reference not from held-out images). Nothing is written then.
    """
    started = time.perf_counter()
    if last is not None and last < 1:
        raise DriftError(f"--last {last}: pass a positive number of records")
    bundle = _open_bundle(settings, target)
    reference = reference_sample(bundle)
    current_sample = _current(bundle, current, last, since, progress)
    channels = bundle.meta.input.channels
    result = compare(
        reference,
        current_sample,
        task=task_for(bundle.meta),
        settings=settings.drift,
        channels=channels,
    )
    windows = _windows(reference, current_sample, bundle, settings)
    captions, images = _plots(reference, current_sample, result, bundle, windows)
    times = current_sample.times or []
    payload: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "kind": REPORT_KIND,
        "verdict": {
            "drifted": result.drifted,
            "p_value": result.p_value,
            "alpha": result.alpha,
            "what_drifted": result.what_drifted,
        },
        "bundle": {
            "path": str(bundle.path),
            "model_version": bundle.model_version,
            "task": bundle.task,
        },
        "reference": {
            "source": reference.source,
            "split": reference.split,
            "n": reference.count,
        },
        "current": {
            "source": current_sample.source,
            "n": current_sample.count,
            "first_time": min(times).isoformat() if times else None,
            "last_time": max(times).isoformat() if times else None,
            "last": last,
            "since": since.isoformat() if since else None,
        },
        "families": [
            {**asdict(family), "title": FAMILY_TITLES[family.name]} for family in result.families
        ],
        "windows": [asdict(window) for window in windows],
        "notes": current_sample.notes + result.notes,
        "settings": settings.drift.model_dump(mode="json"),
        "plots": captions,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "visionops_version": __version__,
    }
    out_dir = out or bundle.path.resolve().parent / "drift"
    report_json = json.dumps(payload, indent=2, default=_json_default) + "\n"
    report_html = render_html(payload, result.families, windows, images)
    try:
        dated = _dated_folder(out_dir, payload["created_at"])
        with atomic_dir(dated) as staging:
            (staging / "report.json").write_text(report_json, encoding="utf-8")
            (staging / "report.html").write_text(report_html, encoding="utf-8")
        json_path, html_path = out_dir / "report.json", out_dir / "report.html"
        atomic_write_text(json_path, report_json)
        atomic_write_text(html_path, report_html)
    except OSError as exc:
        raise DriftError(
            f"cannot write the report in {out_dir} ({exc.strerror}) — pass another --out-dir"
        ) from None
    seconds = time.perf_counter() - started
    return DriftReport(result, payload, json_path, html_path, seconds, dated_dir=dated)


def _dated_folder(out_dir: Path, created_at: str) -> Path:
    """A new folder for one report, named by its UTC time (``2026-12-07T22-50-01Z``).

    The time has no colons, so the name is valid on every file system; a second report in
    the same second gets ``-2``, ``-3``.
    """
    stamp = created_at.replace("+00:00", "Z").replace(":", "-")
    candidate, number = out_dir / stamp, 1
    while candidate.exists():
        number += 1
        candidate = out_dir / f"{stamp}-{number}"
    return candidate


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


# ---------------------------------------------------------------------------------- HTML

_STYLE = """
:root { color-scheme: light; --ink: #1f2933; --muted: #616e7c; --line: #d9e2ec;
        --ok: #1f7a4d; --ok-bg: #e8f6ee; --bad: #b42318; --bad-bg: #fdecea;
        --warn-bg: #fff8e1; --warn-line: #f0b429; }
* { box-sizing: border-box; }
body { margin: 0 auto; max-width: 1100px; padding: 28px 32px 48px; color: var(--ink);
       font: 15px/1.5 -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
h1 { font-size: 26px; margin: 0 0 4px; }
h2 { font-size: 19px; margin: 34px 0 10px; padding-bottom: 4px;
     border-bottom: 1px solid var(--line); }
.sub { color: var(--muted); margin: 0; }
.verdict { margin-top: 20px; padding: 16px 20px; border-radius: 8px; }
.verdict.ok { background: var(--ok-bg); border-left: 6px solid var(--ok); }
.verdict.drift { background: var(--bad-bg); border-left: 6px solid var(--bad); }
.verdict .headline { font-size: 22px; font-weight: 700; }
.verdict.ok .headline { color: var(--ok); }
.verdict.drift .headline { color: var(--bad); }
.verdict ul { margin: 6px 0 0; padding-left: 20px; }
.warnings { background: var(--warn-bg); border-left: 4px solid var(--warn-line);
            padding: 10px 16px; margin: 20px 0 0; }
.warnings ul { margin: 4px 0; padding-left: 20px; }
table { border-collapse: collapse; width: 100%; font-size: 14px; margin-bottom: 6px; }
th, td { padding: 5px 10px; border-bottom: 1px solid var(--line); text-align: left; }
th { background: #f5f7fa; font-weight: 600; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr.hit td { background: var(--bad-bg); }
.tag { display: inline-block; padding: 1px 8px; border-radius: 10px; font-size: 12px;
       font-weight: 600; }
.tag.drift { background: var(--bad); color: white; }
.tag.ok { background: var(--ok-bg); color: var(--ok); }
.plots { display: flex; flex-wrap: wrap; gap: 18px; align-items: flex-start; }
figure { margin: 0; border: 1px solid var(--line); border-radius: 8px; padding: 10px;
         flex: 0 1 520px; max-width: 100%; }
figure img { display: block; width: 100%; height: auto; }
figcaption { color: var(--muted); font-size: 13px; margin-top: 6px; }
dl.details { display: grid; grid-template-columns: max-content 1fr; gap: 4px 18px; margin: 0; }
dl.details dt { color: var(--muted); }
dl.details dd { margin: 0; word-break: break-all; }
footer { margin-top: 40px; color: var(--muted); font-size: 12px; }
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _p(value: Any) -> str:
    number = float(value)
    return f"{number:.2e}" if number < 1e-3 else f"{number:.3f}"


def _number(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.4g}"
    return _e(value)


def _family_table(family: FamilyResult) -> str:
    rows = sorted(family.tests, key=lambda r: r.p_adjusted)
    body = []
    for row in rows:
        tag = '<span class="tag drift">drift</span>' if row.drifted else ""
        body.append(
            f"<tr{' class=hit' if row.drifted else ''}><td>{_e(row.name)} {tag}</td>"
            f"<td>{_e(row.test)}</td><td class=num>{_number(row.statistic)}</td>"
            f"<td class=num>{_p(row.p_value)}</td><td class=num>{_p(row.p_adjusted)}</td>"
            f"<td>{_e(row.detail())}</td></tr>"
        )
    status = (
        '<span class="tag drift">drift</span>'
        if family.drifted
        else '<span class="tag ok">no drift</span>'
    )
    return (
        f"<h2>{_e(FAMILY_TITLES[family.name])} {status}</h2>"
        f'<p class="sub">family p-value {_p(family.p_value)} — {_e(family.note)}</p>'
        "<table><thead><tr><th>what</th><th>test</th><th class=num>effect</th>"
        "<th class=num>p</th><th class=num>p (adjusted)</th><th>detail</th></tr></thead>"
        f"<tbody>{''.join(body)}</tbody></table>{_glossary(rows)}"
    )


def _glossary(rows: list[DriftTest]) -> str:
    """What each image statistic in a table measures, in words (empty for other families)."""
    seen: dict[str, str] = {}
    for row in rows:
        meaning = feature_meaning(row.key) if isinstance(row, KsTest) else ""
        if meaning and row.name not in seen:
            seen[row.name] = meaning
    if not seen:
        return ""
    items = "".join(f"<dt>{_e(name)}</dt><dd>{_e(text)}</dd>" for name, text in seen.items())
    return (
        "<details><summary>What these statistics measure</summary>"
        f"<dl class=details>{items}</dl></details>"
    )


def _figures(captions: dict[str, str], images: dict[str, bytes]) -> str:
    import base64

    figures = []
    for name, caption in captions.items():
        png = images.get(name)
        if png is None:
            continue
        data = base64.b64encode(png).decode("ascii")
        figures.append(
            f'<figure><img src="data:image/png;base64,{data}" alt="{_e(caption)}">'
            f"<figcaption>{_e(caption)}</figcaption></figure>"
        )
    return f'<h2>Plots</h2><div class="plots">{"".join(figures)}</div>' if figures else ""


def render_html(
    payload: dict[str, Any],
    families: list[FamilyResult],
    windows: list[TimeWindow],
    images: dict[str, bytes],
) -> str:
    """The report as one self-contained HTML page: verdict first, then tables and plots.

    Args:
        payload: ``report.json``'s content.
        families: The families of tests, one table each.
        windows: The verdict per time window (empty when the sample does not span time).
        images: PNG bytes by the file names in ``payload["plots"]``.

    Returns:
        HTML that references no other file, script, font or style sheet.
    """
    verdict = payload["verdict"]
    drifted = bool(verdict["drifted"])
    reference, current, bundle = payload["reference"], payload["current"], payload["bundle"]
    what = "".join(f"<li>{_e(text)}</li>" for text in verdict["what_drifted"])
    headline = "Drift detected" if drifted else "No drift detected"
    explanation = (
        f"overall p-value {_p(verdict['p_value'])} {'<' if drifted else '≥'} α ="
        f" {verdict['alpha']:g} (Bonferroni over {len(payload['families'])} families of tests)"
    )
    verdict_html = (
        f'<section id="verdict" class="verdict {"drift" if drifted else "ok"}">'
        f'<div class="headline">{headline}</div><div>{_e(explanation)}</div>'
        + (f"<strong>What drifted</strong><ul>{what}</ul>" if what else "")
        + "</section>"
    )
    notes = payload.get("notes") or []
    notes_html = (
        '<section class="warnings"><strong>Notes</strong><ul>'
        + "".join(f"<li>{_e(n)}</li>" for n in notes)
        + "</ul></section>"
        if notes
        else ""
    )
    tables = "".join(_family_table(family) for family in families)
    window_rows = "".join(
        f"<tr{' class=hit' if w.drifted else ''}><td>{_e(w.start)}</td><td>{_e(w.end)}"
        f"</td><td class=num>{w.n}</td><td class=num>{_p(w.p_value)}</td></tr>"
        for w in windows
    )
    windows_html = (
        "<h2>By time window</h2><table><thead><tr><th>from</th><th>to</th><th class=num>images"
        "</th><th class=num>overall p</th></tr></thead>"
        f"<tbody>{window_rows}</tbody></table>"
        if windows
        else ""
    )
    details = [
        ("bundle", f"{bundle['model_version']} ({bundle['task']}) — {bundle['path']}"),
        ("reference", f"{reference['n']} held-out images from the {reference['split']} split"),
        ("current", f"{current['n']} images — {current['source']}"),
    ]
    if current.get("first_time"):
        details.append(("time span", f"{current['first_time']} → {current['last_time']}"))
    details_html = "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in details)
    title = f"visionops drift — {bundle['model_version']}"
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title><style>{_STYLE}</style></head><body>"
        f"<header><h1>Drift report: {_e(bundle['model_version'])}</h1>"
        f"<p class=sub>{current['n']} current images vs {reference['n']} held-out reference"
        f" images ({_e(reference['split'])} split)</p></header>"
        f"{verdict_html}{notes_html}{tables}{_figures(payload.get('plots') or {}, images)}"
        f"{windows_html}<h2>Details</h2><dl class=details>{details_html}</dl>"
        f"<footer>Written by visionops {_e(payload['visionops_version'])} at"
        f" {_e(payload['created_at'])}. Self-contained: plots are embedded.</footer>"
        "</body></html>\n"
    )
