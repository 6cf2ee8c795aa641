"""``visionops predict``: batch prediction over files, folders and buckets (never imports torch)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

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
_FAILURES_SHOWN = 5


def _is_model(path: str, runs_root: Path) -> bool:
    candidate = Path(path)
    if (candidate / "visionops.json").is_file() or (candidate / "run.json").is_file():
        return True
    return not candidate.exists() and (runs_root / path / "run.json").is_file()


def predict(
    paths: Annotated[
        list[str],
        typer.Argument(
            help="An optional bundle or run first, then images: files, folders (searched"
            " recursively), bucket prefixes (s3://bucket/prefix, gs://..., any fsspec URL) or"
            " .txt files with one path or URL per line; then key=value overrides. Without a"
            " bundle or run first, runs/latest's bundle predicts.",
            show_default=False,
            metavar="[RUN] IMAGE KEY=VALUE",
        ),
    ],
    out_file: Annotated[
        str | None,
        typer.Option(
            "--out",
            "-o",
            help="Write every prediction, batch by batch, to FILE.csv, FILE.jsonl or"
            " FILE.parquet (a folder of parquet shards); a path or a URL (default: a table of"
            f" the first {_SHOWN} on screen).",
        ),
    ] = None,
    resume: Annotated[
        bool,
        typer.Option("--resume", help="Continue --out: skip the images it already has a row for."),
    ] = False,
    force: Annotated[
        bool, typer.Option("--force", "-f", help="Replace an --out that exists.")
    ] = False,
    fail_on_error: Annotated[
        bool,
        typer.Option(
            "--fail-on-error",
            help="Exit 1 when an image cannot be read or decoded (a pipeline step, CI); every"
            " other image is still predicted and written.",
        ),
    ] = False,
    log: Annotated[
        bool,
        typer.Option(
            "--log", help="Append to the bundle's prediction log (serve's format) for drift."
        ),
    ] = False,
    log_dir: Annotated[
        str | None,
        typer.Option(
            "--log-dir",
            help="Prediction log folder or bucket URL (default <run>/predictions).",
            metavar="DIR|URL",
        ),
    ] = None,
    batch_size: Annotated[
        int, typer.Option("--batch-size", "-b", min=1, help="Images per model call.")
    ] = 16,
    precision: Annotated[
        Literal["auto", "fp32", "int8"] | None,
        typer.Option(
            "--precision",
            help=from_setting("serve.precision", "auto: int8 when export kept one, else fp32."),
        ),
    ] = None,
    threads: Annotated[
        int | None,
        typer.Option(
            "--threads",
            min=0,
            help=from_setting(
                "serve.threads", "ONNX Runtime threads (per Ray actor); 0 = every core (Ray: 1)."
            ),
        ),
    ] = None,
    device: Device = None,
    engine: Annotated[
        Literal["local", "ray"],
        typer.Option(
            "--engine",
            help="local: stream in this process; ray: a Ray Data actor pool writing parquet"
            " shards (pip install 'visionops[ray]').",
        ),
    ] = "local",
    ray_address: Annotated[
        str | None,
        typer.Option(
            "--ray-address",
            help="Join this Ray cluster (ray://head:10001, auto) (default: a local Ray for"
            " the job).",
        ),
    ] = None,
    actors: Annotated[
        int,
        typer.Option(
            "--actors",
            min=0,
            help="Ray actors, each with one ONNX Runtime session; 0 = one per --threads CPUs"
            " of the cluster, or one per GPU.",
        ),
    ] = 0,
    json_output: JsonOutput = False,
    config: ConfigFile = None,
    recipe: Recipe = None,
    print_config: PrintConfig = False,
    verbose: Verbose = 0,
    quiet: Quiet = False,
) -> None:
    """Predict images without a server, exactly as `visionops serve` would answer.

    Rows are written as each batch finishes; a killed job continues with --resume. An image
    that cannot be read or decoded is a row with an error, never an abort; the last line
    counts them, and --fail-on-error makes them exit 1.

    Example: visionops predict runs/run-001 photos/ --out predictions.csv --log

    Example: visionops predict s3://archive/2026-11/ --out s3://archive/scores.parquet --resume

    Example: visionops predict images.txt --engine ray --ray-address auto --out scores.parquet
    """
    setup(verbose, quiet)
    inputs, overrides = split_args(paths)
    settings = resolve_settings(
        config_file=config,
        overrides=overrides,
        recipe=recipe,
        print_config=print_config,
        device=device,
        serve__precision=precision,
        serve__threads=threads,
    )
    from visionops.drift.report import default_log_dir
    from visionops.inference.bundle import find_bundle, load_bundle
    from visionops.inference.predict import PredictJob, run_predict_job
    from visionops.tasks import get_task

    target: Path | None = None
    if inputs and _is_model(inputs[0], settings.runs_root):
        target = Path(inputs.pop(0))
    if not inputs:
        raise typer.BadParameter("name at least one image file, folder or URL", param_hint="IMAGE")
    if resume and force:
        raise typer.BadParameter("--resume keeps --out, --force replaces it: pick one")
    bundle = load_bundle(find_bundle(target, settings.runs_root))
    job = PredictJob(
        locations=inputs,
        out=out_file,
        resume=resume,
        force=force,
        log_dir=(log_dir or str(default_log_dir(bundle))) if log else None,
        engine=engine,
        batch_size=batch_size,
        threads=settings.serve.threads,
        precision=settings.serve.precision,
        device=settings.device,
        top_k=settings.serve.top_k,
        ray_address=ray_address,
        actors=actors,
        keep=None if json_output else _SHOWN,
    )
    with progress() as reporter:
        result = run_predict_job(bundle, job, progress=reporter)
    summary = result.summary
    for path, reason in summary.failures[:_FAILURES_SHOWN]:
        console.print(f"[yellow]unreadable[/] {safe(path)}: {safe(reason)}")
    if summary.failed > _FAILURES_SHOWN:
        console.print(f"[yellow]{summary.failed - _FAILURES_SHOWN} more unreadable files[/]")
    if result.skipped:
        console.print(f"{result.skipped} of {result.listed} images already in {safe(out_file)}")
    if job.log_dir is not None:
        console.print(
            f"{result.logged} records appended to the prediction log in {safe(job.log_dir)}"
        )
    rate = result.images_per_s
    if json_output:
        print_json(
            {
                "bundle": str(bundle.path),
                "model_version": bundle.model_version,
                "precision": result.precision,
                "engine": engine,
                "images": result.listed,
                "skipped": result.skipped,
                "predicted": summary.predicted,
                "failed": summary.failed,
                "failures": [{"image": p, "reason": why} for p, why in summary.failures],
                "out": out_file,
                "log_dir": job.log_dir,
                "images_per_s": round(rate, 2),
                "predictions": [
                    {"path": p.path, **(p.answer or {}), "error": p.error} for p in result.shown
                ],
            }
        )
    elif out_file is None:
        count = summary.inputs
        table = Table(
            title=f"{bundle.model_version} · {result.precision} · {count} images ·"
            f" {rate:.1f} images/s"
        )
        table.add_column("image")
        table.add_column("prediction")
        for prediction in result.shown:
            text = (
                get_task(bundle.task).answer_text(prediction.answer)
                if prediction.answer is not None
                else f"error: {prediction.error}"
            )
            table.add_row(safe(prediction.path), safe(text))
        if count > _SHOWN:
            table.caption = f"first {_SHOWN} of {count} — --out FILE.csv writes all"
        out.print(table)
    else:
        out.print(
            f"{summary.inputs} predictions written to {safe(out_file)} ({result.precision},"
            f" {rate:.1f} images/s)"
        )
    console.print(_summary_line(summary.inputs, summary.failed, fail_on_error), soft_wrap=True)
    if fail_on_error and summary.failed:
        raise typer.Exit(1)


def _summary_line(inputs: int, failed: int, fail_on_error: bool) -> str:
    """The last line of a job: how many images failed, and what that means for the exit code."""
    if not failed:
        return f"[green]all {inputs} images predicted[/]"
    exit_note = "exit 1 (--fail-on-error)" if fail_on_error else "--fail-on-error makes this exit 1"
    return (
        f"[yellow]{failed} of {inputs} images failed[/] (unreadable or not images; their rows"
        f" carry the reason) — {exit_note}"
    )


def register(app: typer.Typer) -> None:
    """Add ``predict``."""
    app.command(rich_help_panel="Lifecycle")(predict)
