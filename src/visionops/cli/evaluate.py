"""``visionops eval``: score a trained run and write its report."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer

from visionops.cli._common import (
    ConfigFile,
    Device,
    JsonOutput,
    PrintConfig,
    Quiet,
    Recipe,
    Verbose,
    console,
    from_setting,
    one_positional,
    out,
    print_json,
    progress,
    resolve_settings,
    setup,
)
from visionops.cli._text import DataTable as Table
from visionops.cli._text import safe

if TYPE_CHECKING:
    from visionops.evaluate.stage import EvalResult

_TOP_ROWS = 10


def _headline_table(result: EvalResult) -> Table:
    from visionops.evaluate.report import format_value, metric_label

    table = Table(
        title=f"{result.payload['run']} · {result.task} · {result.split} ({result.n} images)"
    )
    table.add_column("metric", style="bold")
    table.add_column("value", justify="right")
    table.add_column("meaning", style="dim")
    for name, value in result.metrics.items():
        label, description = metric_label(name)
        table.add_row(label, format_value(name, value), description)
    return table


def _rows_table(result: EvalResult, show_all: bool) -> Table:
    from visionops.evaluate.report import COLUMN_LABELS, format_value
    from visionops.tasks import get_task

    task = get_task(result.task)
    rows: list[dict[str, Any]] = list(result.rows)
    shown = rows
    caption = None
    if not show_all and len(rows) > _TOP_ROWS:
        key = task.rank_rows_by
        if key is not None:
            # The classes the model struggles with are what a reader acts on.
            shown = sorted(rows, key=lambda row: (row.get(key) is None, row.get(key) or 0.0))
            caption = (
                f"weakest {_TOP_ROWS} of {len(rows)} by {COLUMN_LABELS[key]}"
                " — --all shows every row"
            )
        else:
            caption = f"first {_TOP_ROWS} of {len(rows)} {task.row_noun}s — --all shows every row"
        shown = shown[:_TOP_ROWS]
    table = Table(title=f"per {task.row_noun}", caption=caption)
    columns = [column for column in rows[0] if column not in {"mape_n", "true_std"}]
    for column in columns:
        first = rows[0][column]
        numeric = isinstance(first, (int, float)) or first is None
        table.add_column(COLUMN_LABELS.get(column, column), justify="right" if numeric else "left")
    for row in shown:
        table.add_row(*(format_value(column, row.get(column)) for column in columns))
    return table


def evaluate(
    args: Annotated[
        list[str] | None,
        typer.Argument(
            help="RUN (a run folder or name; default runs/latest), then key=value overrides.",
            metavar="RUN KEY=VALUE",
            show_default=False,
        ),
    ] = None,
    split: Annotated[
        Literal["train", "val", "test"],
        typer.Option("--split", "-s", help="Split to score (val when there is no test split)."),
    ] = "test",
    checkpoint: Annotated[
        Literal["best", "last"], typer.Option("--checkpoint", help="Which checkpoint.")
    ] = "best",
    device: Device = None,
    batch_size: Annotated[
        int | None,
        typer.Option(
            "--batch-size",
            "-b",
            min=1,
            help=from_setting("train.batch_size", "Images per forward pass."),
        ),
    ] = None,
    strict: Annotated[
        bool,
        typer.Option("--strict", help="Fail if the prepared dataset changed since training."),
    ] = False,
    show_all: Annotated[
        bool, typer.Option("--all", help="Show every per-class or per-target row.")
    ] = False,
    json_output: JsonOutput = False,
    config: ConfigFile = None,
    recipe: Recipe = None,
    print_config: PrintConfig = False,
    verbose: Verbose = 0,
    quiet: Quiet = False,
) -> None:
    """Score a trained run on its test split: metrics, plots and a self-contained report.

    Writes runs/<name>/eval/ (metrics.json, PNG plots, predictions.npz, report.html),
    replacing an earlier evaluation. Without a test split it scores val and says so.

    Example: visionops eval runs/run-001 --split test --checkpoint best
    """
    setup(verbose, quiet)
    run, overrides = one_positional(args, "RUN")
    settings = resolve_settings(
        config_file=config,
        overrides=overrides,
        recipe=recipe,
        print_config=print_config,
        device=device,
    )
    from visionops.evaluate.stage import evaluate_run

    with progress() as reporter:
        result = evaluate_run(
            settings,
            run,
            split=split,
            checkpoint=checkpoint,
            device=device,
            batch_size=batch_size,
            strict=strict,
            progress=reporter,
        )
    if json_output:
        print_json(result.payload)
        return
    out.print(_headline_table(result))
    if result.rows:
        out.print(_rows_table(result, show_all))
    console.print(f"report: {safe(result.report_path)}")


def register(app: typer.Typer) -> None:
    """Add ``eval``."""
    app.command("eval", rich_help_panel="Lifecycle")(evaluate)
