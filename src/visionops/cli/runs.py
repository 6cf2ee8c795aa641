"""``visionops runs list`` and ``visionops runs compare A B``."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.text import Text

from visionops.cli._common import JsonOutput, Quiet, Verbose, console, out, print_json, setup
from visionops.cli._text import DataTable as Table
from visionops.cli._text import safe

runs_app = typer.Typer(help="The training runs of this project.", no_args_is_help=True)

RunsRoot = Annotated[
    Path | None,
    typer.Option("--runs-root", help="Folder of runs (default: the runs_root setting, runs/)."),
]


def _runs_root(option: Path | None) -> Path:
    if option is not None:
        return option
    from visionops.config import load_settings

    return load_settings().runs_root


def _value(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


@runs_app.command("list")
def list_command(
    runs_root: RunsRoot = None,
    json_output: JsonOutput = False,
    verbose: Verbose = 0,
    quiet: Quiet = False,
) -> None:
    """List the runs: name, status, task, best metric, created, duration, then the rest.

    On a narrow terminal the columns at the end (dataset, model, epochs, bundle) give way
    first; --json has them all.

    Example: visionops runs list
    """
    setup(verbose, quiet)
    from visionops.compare import list_runs

    summaries = list_runs(_runs_root(runs_root))
    if json_output:
        print_json([asdict(summary) for summary in summaries])
        return
    if not summaries:
        console.print("no runs yet — train one with `visionops train`")
        return
    table = Table(title="runs", caption="* runs/latest")
    # Which run, how it ended and how good it is come first; the rest give way when narrow.
    table.add_column("name")
    table.add_column("status")
    table.add_column("task")
    table.add_column("best metric")
    table.add_column("created")
    table.add_column("duration", justify="right")
    for column in ("dataset", "model", "epochs", "bundle"):
        table.add_column(column, justify="right" if column == "epochs" else "left", optional=True)
    for summary in summaries:
        best = (
            f"{summary.metric} {summary.best_metric:.4f}"
            if summary.best_metric is not None
            else "-"
        )
        table.add_row(
            f"{summary.name}*" if summary.latest else summary.name,
            Text(summary.status, style=_STATUS_STYLE.get(summary.status, "")),
            summary.task,
            best,
            summary.created_at[:16].replace("T", " "),
            _duration(summary.duration_s),
            summary.dataset,
            summary.model,
            str(summary.epochs),
            summary.bundle,
            style="bold" if summary.latest else None,
        )
    out.print(table)


_STATUS_STYLE = {"completed": "green", "interrupted": "yellow", "failed": "red", "running": "cyan"}


def _duration(seconds: float | None) -> str:
    """``42s``, ``3m05s``, ``2h07m``: short enough for a narrow column."""
    if seconds is None:
        return "-"
    whole = round(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"


@runs_app.command("compare")
def compare_command(
    run_a: Annotated[
        str, typer.Argument(help="First run (a name under runs/ or a folder).", metavar="RUN_A")
    ],
    run_b: Annotated[str, typer.Argument(help="Second run.", metavar="RUN_B")],
    curves: Annotated[
        Path | None,
        typer.Option(
            "--curves",
            help="PNG of both runs' curves (default: runs/compare-A-vs-B.png).",
            dir_okay=False,
        ),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", "-f", help="Replace a --curves PNG that exists.")
    ] = False,
    runs_root: RunsRoot = None,
    json_output: JsonOutput = False,
    verbose: Verbose = 0,
    quiet: Quiet = False,
) -> None:
    """Compare two runs: settings that differ, metrics side by side, curves in one PNG.

    Example: visionops runs compare run-001 run-002
    """
    setup(verbose, quiet)
    from visionops.compare import compare_runs, plot_comparison

    root = _runs_root(runs_root)
    comparison = compare_runs(run_a, run_b, root)
    name_a, name_b = comparison.a.name, comparison.b.name
    target = curves or root / f"compare-{name_a}-vs-{name_b}.png"
    if any(comparison.histories):
        plot_comparison(comparison, target, force=force)
    if json_output:
        print_json(
            {
                "a": str(comparison.a),
                "b": str(comparison.b),
                "settings_differ": [asdict(d) for d in comparison.settings_differ],
                "metrics": [{**asdict(m), "delta": m.delta} for m in comparison.metrics],
                "curves": str(comparison.curves) if comparison.curves else None,
            }
        )
        return
    settings = Table(title=f"settings that differ ({len(comparison.settings_differ)})")
    settings.add_column("setting", style="bold")
    settings.add_column(name_a)
    settings.add_column(name_b)
    for difference in comparison.settings_differ:
        settings.add_row(difference.key, _value(difference.a), _value(difference.b))
    out.print(settings)
    metrics = Table(title="metrics")
    for column in ("from", "metric", name_a, name_b, "b - a"):
        metrics.add_column(column, justify="left" if column in {"from", "metric"} else "right")
    for row in comparison.metrics:
        delta = row.delta
        metrics.add_row(
            row.source,
            row.metric,
            _value(row.a),
            _value(row.b),
            f"{delta:+.4f}" if delta is not None else "-",
        )
    out.print(metrics)
    if comparison.curves is not None:
        console.print(f"curves: {safe(comparison.curves)}")


@runs_app.command("history")
def history_command(
    run: Annotated[
        str, typer.Argument(help="A run name under runs/ or a run folder.", metavar="RUN")
    ],
    out_file: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            help="Write every column as a CSV file instead, e.g. for `dvc plots` (default: a"
            " table on screen).",
            dir_okay=False,
        ),
    ] = None,
    csv_path: Annotated[
        Path | None,
        typer.Option("--csv", hidden=True, help="Old spelling of --out.", dir_okay=False),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", "-f", help="Replace an --out that exists.")
    ] = False,
    runs_root: RunsRoot = None,
    json_output: JsonOutput = False,
    verbose: Verbose = 0,
    quiet: Quiet = False,
) -> None:
    """Show a run's per-epoch history (history.jsonl), or write it as CSV with --out.

    Example: visionops runs history run-001

    Example: visionops runs history run-001 --out history.csv
    """
    setup(verbose, quiet)
    from visionops.compare import run_history, write_history_csv

    if csv_path is not None:
        console.print("[yellow]deprecated:[/] --csv FILE is now --out FILE")
        if out_file is not None:
            raise typer.BadParameter("--csv is the old spelling of --out: give one")
        out_file = csv_path
    if out_file is not None:
        written = write_history_csv(run, _runs_root(runs_root), out_file, force=force)
        if json_output:
            print_json({"csv": str(written)})
            return
        console.print(f"wrote {safe(written)}")
        return
    run_dir, history = run_history(run, _runs_root(runs_root))
    if json_output:
        print_json(history)
        return
    out.print(_history_table(run_dir, history))


_FIRST_HISTORY_COLUMNS = ("epoch", "train_loss", "val_loss")
_LAST_HISTORY_COLUMNS = ("lr", "seconds", "images_per_s")


def _history_table(run_dir: Path, history: list[dict[str, Any]]) -> Table:
    """Epochs as rows; loss and the validation metrics first, timing columns give way first."""
    keys = list(dict.fromkeys(key for row in history for key in row))
    first = [key for key in _FIRST_HISTORY_COLUMNS if key in keys]
    last = [key for key in _LAST_HISTORY_COLUMNS if key in keys]
    middle = [key for key in keys if key not in first and key not in last]
    table = Table(title=f"{run_dir.name} · {len(history)} epochs · history.jsonl")
    for key in first:
        table.add_column(key, justify="right")
    # The first validation metric is the monitored one; the rest may be dropped.
    for index, key in enumerate(middle):
        table.add_column(key, justify="right", optional=index > 0)
    for key in last:
        table.add_column(key, justify="right", optional=True)
    for row in history:
        table.add_row(*(_history_cell(row.get(key)) for key in first + middle + last))
    return table


def _history_cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def register(app: typer.Typer) -> None:
    """Add ``runs``."""
    app.add_typer(runs_app, name="runs", rich_help_panel="Lifecycle")
