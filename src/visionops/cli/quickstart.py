"""``visionops quickstart``: every stage on an embedded demo, in one command."""

from __future__ import annotations

from typing import Annotated, Literal

import typer

from visionops.cli._common import (
    ConfigFile,
    Device,
    JsonOutput,
    Overrides,
    PrintConfig,
    Quiet,
    Verbose,
    console,
    out,
    print_json,
    progress,
    resolve_settings,
    setup,
)
from visionops.cli._text import DataTable as Table
from visionops.cli._text import safe

_RECIPES = {
    "classification": "demo-shapes",
    "multilabel": "demo-multilabel",
    "regression": "demo-regression",
    "anomaly": "demo-anomaly",
}


def quickstart(
    overrides: Overrides = None,
    task: Annotated[
        Literal["classification", "multilabel", "regression", "anomaly"],
        typer.Option(
            "--task",
            "-t",
            help="Which demo: classification (shapes), multilabel, regression (plates) or"
            " anomaly (a texture with defects).",
        ),
    ] = "classification",
    epochs: Annotated[
        int | None,
        typer.Option("--epochs", "-e", min=1, help="Training epochs (default: the recipe's)."),
    ] = None,
    device: Device = None,
    json_output: JsonOutput = False,
    config: ConfigFile = None,
    recipe: Annotated[
        str | None,
        typer.Option(
            "--recipe",
            "-r",
            help="Start from another shipped recipe (default: the --task demo's recipe).",
        ),
    ] = None,
    print_config: PrintConfig = False,
    verbose: Verbose = 0,
    quiet: Quiet = False,
) -> None:
    """Run fetch → preprocess → train → eval → export → serve check on an embedded demo.

    Everything lands in the current folder (data/, runs/). The serve check posts raw test
    images to the real server and proves its answers match the exported model's on the
    training-time arrays: no train/serve skew.

    Example: visionops quickstart --task multilabel --epochs 5
    """
    setup(verbose, quiet)
    from visionops.quickstart import StageReport, run_quickstart
    from visionops.serve.app import create_app

    settings = resolve_settings(
        config_file=config,
        overrides=overrides or [],
        recipe=recipe or _RECIPES[task],
        print_config=print_config,
        device=device,
        train__epochs=epochs,
    )

    def show(stage: StageReport) -> None:
        mark = "[yellow]-[/]" if stage.skipped else "[green]✓[/]"
        said = f"skipped: {safe(stage.summary)}" if stage.skipped else safe(stage.summary)
        console.print(f"{mark} [bold]{safe(stage.stage)}[/] ({stage.seconds:.1f} s): {said}")

    with progress() as reporter:
        result = run_quickstart(settings, create_app, task=task, progress=reporter, on_stage=show)
    if json_output:
        print_json(
            {
                "stages": [
                    {
                        "stage": stage.stage,
                        "seconds": round(stage.seconds, 2),
                        "summary": stage.summary,
                        "skipped": stage.skipped,
                        "artifact": str(stage.artifact),
                    }
                    for stage in result.stages
                ],
                "report": str(result.report),
                "run": str(result.run_dir),
            }
        )
        return
    table = Table(title="quickstart", show_lines=False)
    table.add_column("stage", style="bold")
    table.add_column("seconds", justify="right")
    table.add_column("result")
    table.add_column("artifact")
    for stage in result.stages:
        summary = f"skipped: {stage.summary}" if stage.skipped else stage.summary
        table.add_row(stage.stage, f"{stage.seconds:.1f}", summary, str(stage.artifact))
    out.print(table)
    out.print(
        f"\nReport: {safe(result.report)}\nNext: visionops serve {safe(result.run_dir)}  "
        "(then open http://127.0.0.1:8000/)"
    )


def register(app: typer.Typer) -> None:
    """Add ``quickstart``."""
    app.command(rich_help_panel="Start here")(quickstart)
