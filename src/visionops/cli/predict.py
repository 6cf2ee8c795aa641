"""``visionops predict``: batch inference over files and folders (never imports torch)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from visionops.cli._common import (
    ConfigFile,
    JsonOutput,
    PrintConfig,
    Quiet,
    Recipe,
    Verbose,
    console,
    out,
    print_json,
    progress,
    resolve_settings,
    setup,
    split_args,
)
from visionops.cli._text import DataTable as Table
from visionops.cli._text import safe

_SHOWN = 20


def _is_model(path: str, runs_root: Path) -> bool:
    candidate = Path(path)
    if (candidate / "visionops.json").is_file() or (candidate / "run.json").is_file():
        return True
    return not candidate.exists() and (runs_root / path / "run.json").is_file()


def predict(
    paths: Annotated[
        list[str],
        typer.Argument(
            help="An optional bundle or run first, then image files and folders (searched"
            " recursively), then key=value overrides. Without a bundle or run first,"
            " runs/latest's bundle predicts.",
            show_default=False,
            metavar="[RUN] IMAGE KEY=VALUE",
        ),
    ],
    out_file: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            help="Write every prediction to FILE.csv or FILE.jsonl (default: a table of the"
            f" first {_SHOWN} on screen).",
            dir_okay=False,
        ),
    ] = None,
    log: Annotated[
        bool,
        typer.Option(
            "--log", help="Append to the bundle's prediction log (serve's format) for drift."
        ),
    ] = False,
    log_dir: Annotated[
        Path | None,
        typer.Option(
            "--log-dir", help="Prediction log folder (default <run>/predictions).", file_okay=False
        ),
    ] = None,
    batch_size: Annotated[
        int, typer.Option("--batch-size", "-b", min=1, help="Images per model call.")
    ] = 16,
    json_output: JsonOutput = False,
    config: ConfigFile = None,
    recipe: Recipe = None,
    print_config: PrintConfig = False,
    verbose: Verbose = 0,
    quiet: Quiet = False,
) -> None:
    """Predict images without a server, exactly as `visionops serve` would answer.

    Example: visionops predict runs/run-001 photos/ --out predictions.csv --log
    """
    setup(verbose, quiet)
    inputs, overrides = split_args(paths)
    settings = resolve_settings(
        config_file=config, overrides=overrides, recipe=recipe, print_config=print_config
    )
    from visionops.drift.report import default_log_dir
    from visionops.inference.bundle import find_bundle, load_bundle
    from visionops.inference.predict import append_to_log, predict_files, write_predictions
    from visionops.tasks import get_task

    target: Path | None = None
    if inputs and _is_model(inputs[0], settings.runs_root):
        target = Path(inputs.pop(0))
    if not inputs:
        raise typer.BadParameter("name at least one image file or folder", param_hint="IMAGE")
    if out_file is not None and out_file.suffix.lower() not in {".csv", ".jsonl"}:
        raise typer.BadParameter("write .csv or .jsonl", param_hint="--out")
    bundle = load_bundle(find_bundle(target, settings.runs_root))
    with progress() as reporter:
        result = predict_files(
            bundle,
            [Path(p) for p in inputs],
            batch_size=batch_size,
            top_k=settings.serve.top_k,
            progress=reporter,
        )
    for path, reason in result.failures:
        console.print(f"[yellow]skipped[/] {safe(path)}: {safe(reason)}")
    if out_file is not None:
        write_predictions(result, bundle.task, out_file)
    if log:
        directory = log_dir or default_log_dir(bundle)
        written = append_to_log(result, directory)
        console.print(f"{written} records appended to the prediction log in {safe(directory)}")
    count = len(result.records)
    rate = count / result.seconds if result.seconds > 0 else 0.0
    if json_output:
        print_json(
            {
                "bundle": str(bundle.path),
                "model_version": bundle.model_version,
                "predictions": [r.model_dump(mode="json") for r in result.records],
                "skipped": [{"image": str(p), "reason": why} for p, why in result.failures],
                "out": str(out_file) if out_file is not None else None,
                "images_per_s": round(rate, 2),
            }
        )
    elif out_file is None:
        table = Table(title=f"{bundle.model_version} · {count} images · {rate:.1f} images/s")
        table.add_column("image")
        table.add_column("prediction")
        for record in result.records[:_SHOWN]:
            table.add_row(
                safe(record.source), safe(get_task(bundle.task).answer_text(record.prediction))
            )
        if count > _SHOWN:
            table.caption = f"first {_SHOWN} of {count} — --out FILE.csv writes all"
        out.print(table)
    else:
        out.print(f"{count} predictions written to {safe(out_file)} ({rate:.1f} images/s)")


def register(app: typer.Typer) -> None:
    """Add ``predict``."""
    app.command(rich_help_panel="Lifecycle")(predict)
