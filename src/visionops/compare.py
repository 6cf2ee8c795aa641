"""``visionops runs list`` and ``visionops runs compare``: the runs of a project side by side.

Reads only what ``visionops train``, ``eval`` and ``export`` leave in each run folder
(``run.json``, ``config.yaml``, ``metrics.json``, ``history.jsonl``, ``eval/metrics.json``,
``bundle/visionops.json``); never loads a checkpoint, so it needs no torch.

Examples:
    >>> summaries = list_runs(Path("runs"))  # doctest: +SKIP
    >>> comparison = compare_runs("run-001", "run-002", Path("runs"))  # doctest: +SKIP
    >>> comparison.settings_differ  # doctest: +SKIP
    [SettingDifference(key='train.epochs', a=10, b=20)]
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import yaml

from visionops._io import atomic_write_text, read_json
from visionops.artifacts import Artifact, BundleMeta, EvalMetrics
from visionops.errors import ArtifactError
from visionops.runs import read_history, read_run_manifest, resolve_run

__all__ = [
    "MetricRow",
    "RunComparison",
    "RunSummary",
    "SettingDifference",
    "compare_runs",
    "list_runs",
    "plot_comparison",
    "run_history",
    "write_history_csv",
]


@dataclass(frozen=True)
class RunSummary:
    """One row of ``visionops runs list``.

    Attributes:
        name: Run folder name.
        status: ``running``, ``completed``, ``interrupted`` or ``failed``.
        task: The run's task.
        dataset: Prepared dataset name.
        model: Backbone name.
        epochs: Epochs completed.
        metric: Monitored metric name (``accuracy``, ``map``, ``r2``...).
        best_metric: Its best validation value, if any epoch finished.
        bundle: Whether ``visionops export`` wrote a bundle (``int8`` when quantised too).
        created_at: ISO time the run started.
        latest: Whether ``runs/latest`` points at it.
        duration_s: Seconds from its start to its last finish (a resumed run counts the
            pause); None while it runs or when a time is missing.
    """

    name: str
    status: str
    task: str
    dataset: str
    model: str
    epochs: int
    metric: str
    best_metric: float | None
    bundle: str
    created_at: str
    latest: bool
    duration_s: float | None = None


@dataclass(frozen=True)
class SettingDifference:
    """A dotted setting whose value differs between two runs (``None``: not set)."""

    key: str
    a: Any
    b: Any


@dataclass(frozen=True)
class MetricRow:
    """One metric of two runs side by side (``source`` is ``val``, ``test`` or ``eval``)."""

    source: str
    metric: str
    a: float | None
    b: float | None

    @property
    def delta(self) -> float | None:
        """``b - a`` when both are numbers."""
        if self.a is None or self.b is None:
            return None
        return self.b - self.a


@dataclass
class RunComparison:
    """What ``visionops runs compare A B`` shows.

    Attributes:
        a: First run folder.
        b: Second run folder.
        summaries: Their :class:`RunSummary` rows, A then B.
        settings_differ: Settings (from each ``config.yaml``) whose values differ.
        metrics: Final metrics side by side.
        curves: The PNG with both runs' curves overlaid, once written.
    """

    a: Path
    b: Path
    summaries: tuple[RunSummary, RunSummary]
    settings_differ: list[SettingDifference]
    metrics: list[MetricRow]
    curves: Path | None = None
    histories: tuple[list[dict[str, Any]], list[dict[str, Any]]] = field(
        default_factory=lambda: ([], [])
    )


def _read_optional_json(path: Path) -> dict[str, Any] | None:
    try:
        content = read_json(path)
    except (OSError, ValueError):
        return None
    return content if isinstance(content, dict) else None


_A = TypeVar("_A", bound=Artifact)


def _read_optional(model: type[_A], path: Path) -> _A | None:
    """The artifact at ``path``, or None when it is missing or unreadable (a summary shows "-")."""
    try:
        return model.read(path)
    except ArtifactError:
        return None


def _latest_name(runs_root: Path) -> str | None:
    from visionops.runs import latest_run

    found = latest_run(runs_root)
    return found.name if found is not None else None


def summarize_run(run_dir: Path, latest: str | None = None) -> RunSummary:
    """Summarise one run folder (see :class:`RunSummary`).

    Raises:
        ArtifactError: The folder has no readable ``run.json``.
    """
    manifest = read_run_manifest(run_dir)
    bundle = _read_optional(BundleMeta, run_dir / "bundle")
    bundle_text = "-"
    if bundle is not None:
        bundle_text = "fp32+int8" if bundle.int8_file is not None else "fp32"
    return RunSummary(
        name=run_dir.name,
        status=str(manifest.status),
        task=str(manifest.task),
        dataset=manifest.dataset.name,
        model=manifest.model.name,
        epochs=manifest.epochs_completed,
        metric=manifest.monitor.metric,
        best_metric=manifest.best_metric,
        bundle=bundle_text,
        created_at=manifest.created_at or "",
        latest=run_dir.name == latest,
        duration_s=_seconds_between(manifest.created_at, manifest.finished_at),
    )


def _seconds_between(start: str | None, end: str | None) -> float | None:
    """Seconds from ISO time ``start`` to ``end``; None when either is missing or unreadable."""
    if not start or not end:
        return None
    try:
        seconds = (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


def list_runs(runs_root: Path) -> list[RunSummary]:
    """Every run under ``runs_root``, oldest first.

    Folders without a ``run.json`` (and the ``latest`` pointer) are left out; a damaged
    ``run.json`` is an error, since the user would otherwise miss that run silently.

    Raises:
        ArtifactError: ``runs_root`` does not exist, or a run's ``run.json`` is damaged.
    """
    if not runs_root.is_dir():
        raise ArtifactError(f"no runs folder {runs_root}/ — train a model with `visionops train`")
    latest = _latest_name(runs_root)
    summaries = [
        summarize_run(entry, latest)
        for entry in sorted(runs_root.iterdir())
        if entry.is_dir() and not entry.is_symlink() and (entry / "run.json").is_file()
    ]
    return sorted(summaries, key=lambda s: (s.created_at, s.name))


def _flatten(mapping: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in mapping.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(_flatten(value, dotted + "."))
        else:
            flat[dotted] = value
    return flat


def _settings(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "config.yaml"
    try:
        content = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ArtifactError(
            f"{run_dir} has no config.yaml — it was not written by `visionops train`"
        ) from None
    except yaml.YAMLError:
        raise ArtifactError(f"{path} is not valid YAML — the run folder is damaged") from None
    return _flatten(content) if isinstance(content, Mapping) else {}


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _metric_sources(run_dir: Path) -> dict[str, dict[str, float | None]]:
    """``{source: {metric: value}}`` from ``metrics.json`` (val, test) and ``eval/``."""
    sources: dict[str, dict[str, float | None]] = {}
    final = _read_optional_json(run_dir / "metrics.json") or {}
    for split in ("val", "test"):
        values = final.get(split)
        if isinstance(values, dict):
            sources[split] = {k: _number(v) for k, v in values.items() if "/" not in k}
    evaluated = _read_optional(EvalMetrics, run_dir / "eval")
    if evaluated is not None:
        sources[f"eval ({evaluated.split})"] = {k: _number(v) for k, v in evaluated.metrics.items()}
    return sources


def _ignored(key: str) -> bool:
    # Where a run was written says nothing about how it was trained.
    return key in {"runs_root", "data.raw_root", "data.prepared_root"}


def compare_runs(a: str | Path, b: str | Path, runs_root: Path) -> RunComparison:
    """Compare two runs: settings that differ, metrics side by side, histories.

    Args:
        a: A run folder or run name (``latest`` allowed).
        b: The other run.
        runs_root: Where run names are looked up.

    Returns:
        The comparison (call :func:`plot_comparison` to draw the curves).

    Raises:
        ArtifactError: A run is missing or damaged, or both name the same folder.
    """
    run_a = resolve_run(str(a), runs_root)
    run_b = resolve_run(str(b), runs_root)
    if run_a.resolve() == run_b.resolve():
        raise ArtifactError(f"{a} and {b} are the same run — name two different runs")
    latest = _latest_name(runs_root)
    summaries = (summarize_run(run_a, latest), summarize_run(run_b, latest))
    settings_a, settings_b = _settings(run_a), _settings(run_b)
    differ = [
        SettingDifference(key, settings_a.get(key), settings_b.get(key))
        for key in sorted(set(settings_a) | set(settings_b))
        if not _ignored(key) and settings_a.get(key) != settings_b.get(key)
    ]
    sources_a, sources_b = _metric_sources(run_a), _metric_sources(run_b)
    rows: list[MetricRow] = []
    for source in dict.fromkeys([*sources_a, *sources_b]):
        values_a, values_b = sources_a.get(source, {}), sources_b.get(source, {})
        for metric in dict.fromkeys([*values_a, *values_b]):
            rows.append(MetricRow(source, metric, values_a.get(metric), values_b.get(metric)))
    return RunComparison(
        a=run_a,
        b=run_b,
        summaries=summaries,
        settings_differ=differ,
        metrics=rows,
        histories=(read_history(run_a), read_history(run_b)),
    )


def _curve_keys(histories: Sequence[Sequence[Mapping[str, Any]]], monitor: str) -> list[str]:
    keys = ["train_loss", "val_loss", f"val_{monitor}"]
    return [k for k in keys if any(k in row for history in histories for row in history)]


def plot_comparison(comparison: RunComparison, path: Path, *, force: bool = False) -> Path:
    """Draw both runs' loss and monitored-metric curves, overlaid, into one PNG.

    Args:
        comparison: What :func:`compare_runs` found.
        path: The PNG to write; it must not exist unless ``force``.
        force: Replace a PNG that exists.

    Raises:
        ArtifactError: Neither run has a finished epoch in ``history.jsonl``, or ``path``
            exists without ``force``.
    """
    from visionops.plots import new_figure, save_figure

    check_replaceable(path, force=force, flag="--curves")

    histories = comparison.histories
    if not any(histories):
        raise ArtifactError(
            f"neither {comparison.a.name} nor {comparison.b.name} has a finished epoch in"
            " history.jsonl — train them first"
        )
    monitor = comparison.summaries[0].metric
    keys = _curve_keys(histories, monitor)
    figure = new_figure(5.0 * len(keys) if len(keys) > 1 else 6.0, 4.0)
    axes = figure.subplots(1, len(keys), squeeze=False)[0]
    styles = ("-", "--")
    for axis, key in zip(axes, keys, strict=True):
        for summary, history, style in zip(comparison.summaries, histories, styles, strict=True):
            points = [
                (row["epoch"], row[key]) for row in history if _number(row.get(key)) is not None
            ]
            if points:
                epochs, values = zip(*points, strict=True)
                axis.plot(epochs, values, style, marker="o", markersize=3, label=summary.name)
        axis.set_title(key.replace("_", " "))
        axis.set_xlabel("epoch")
        axis.grid(alpha=0.3)
        axis.legend()
    comparison.curves = save_figure(figure, path)
    return path


def check_replaceable(path: Path, *, force: bool, flag: str) -> None:
    """Refuse to overwrite ``path`` unless ``force`` (the output-safety rule, exit 2).

    Raises:
        ArtifactError: ``path`` exists and ``force`` is False.
    """
    if path.exists() and not force:
        raise ArtifactError(
            f"{path} already exists — pass --force to replace it, or {flag} to write another"
        )


def run_history(run: str | Path, runs_root: Path) -> tuple[Path, list[dict[str, Any]]]:
    """A run's folder and its ``history.jsonl`` rows, one per finished epoch.

    Args:
        run: A run folder or name.
        runs_root: Where run names are looked up.

    Raises:
        ArtifactError: No such run, or it has no finished epoch.
    """
    run_dir = resolve_run(str(run), runs_root)
    history = read_history(run_dir)
    if not history:
        raise ArtifactError(
            f"{run_dir} has no finished epoch in history.jsonl — train it with `visionops train`"
        )
    return run_dir, history


def write_history_csv(run: str | Path, runs_root: Path, path: Path, *, force: bool = False) -> Path:
    """Write a run's ``history.jsonl`` as CSV: one row per epoch, one column per value.

    DVC's ``plots`` and spreadsheets read CSV, not JSON lines.

    Args:
        run: A run folder or name.
        runs_root: Where run names are looked up.
        path: The CSV to write (atomically); it must not exist unless ``force``.
        force: Replace a CSV that exists.

    Raises:
        ArtifactError: No such run, it has no finished epoch, or ``path`` exists without
            ``force``.
    """
    check_replaceable(path, force=force, flag="--out")
    _, history = run_history(run, runs_root)
    columns = list(dict.fromkeys(key for row in history for key in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(history)
    atomic_write_text(path, buffer.getvalue())
    return path
