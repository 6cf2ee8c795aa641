"""``visionops export`` (a run → a verified ONNX bundle) and ``visionops benchmark``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Literal

import typer
from rich.text import Text

from visionops.cli._common import (
    OVERRIDES,
    ConfigFile,
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
    from visionops.export.benchmark import BenchmarkResult
    from visionops.export.stage import ExportResult

RunArgs = Annotated[
    list[str] | None,
    typer.Argument(
        help="RUN (a run folder or name; default runs/latest), then key=value overrides"
        " (e.g. export.opset=17).",
        show_default=False,
        metavar=f"RUN {OVERRIDES}",
    ),
]


def _one_run(args: list[str] | None) -> tuple[str | None, list[str]]:
    return one_positional(args, "RUN")


def _size(count: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if count < 1024 or unit == "GB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} GB"


def _metric(value: object) -> str:
    return f"{value:.4f}" if isinstance(value, float) else "—"


def _export_table(result: ExportResult) -> Table:
    meta, parity = result.meta, result.parity
    table = Table(
        title=f"bundle {result.bundle_dir}",
        caption="sha256: its first 12 digits (bundle.json has each whole)",
        show_header=False,
    )
    table.add_column("what", style="bold")
    table.add_column("value")
    spec = meta.input
    table.add_row("task", f"{meta.task} · {meta.model_version}")
    table.add_row(
        "input",
        f"{spec.name} uint8 {spec.layout} (batch, {spec.size}px, {spec.channels} ch),"
        f" resize {spec.resize}",
    )
    table.add_row("outputs", ", ".join(meta.outputs.values()))
    diffs = ", ".join(
        f"{name} {value:.1e} (≤ {parity.bound.get(name, parity.atol):.1e})"
        for name, value in parity.max_abs_diff.items()
    )
    agreement = parity.top1_agreement
    metric = parity.metric
    table.add_row(
        "parity",
        Text("passed", "green")
        + f" on {parity.images} {parity.split} images: max |diff| {diffs}"
        + (f", top-1 agreement {agreement:.2%}" if agreement is not None else "")
        + (
            f", {metric.name} {_metric(metric.pytorch)} → {_metric(metric.onnxruntime)}"
            if metric is not None
            else ""
        ),
    )
    split = meta.metrics_split.split if meta.metrics_split is not None else "?"
    shown = {k: v for k, v in meta.metrics.items() if "/" not in k}
    table.add_row(
        f"metrics ({split}, ONNX)",
        ", ".join(f"{name} {_metric(value)}" for name, value in shown.items()),
    )
    quantized = result.quantized
    if quantized is not None:
        verdict = Text("accepted", "green") if quantized.accepted else Text("refused", "yellow")
        detail = (
            f"{quantized.metric} {_metric(quantized.fp32)} → {_metric(quantized.int8)}"
            f" on {quantized.split} (drop {_metric(quantized.drop)}, tolerance"
            f" {quantized.tolerance:g}), {quantized.speedup}x faster at batch 1"
            if quantized.measured
            else "quantisation failed (see below)"
        )
        table.add_row("int8", verdict + f": {detail}")
    for name, digest in meta.files.items():
        path = result.bundle_dir / name
        table.add_row(name, f"{_size(path.stat().st_size)}  sha256 {digest[:12]}")
    return table


def export(
    args: RunArgs = None,
    force: Annotated[
        bool, typer.Option("--force", "-f", help="Replace an existing bundle.")
    ] = False,
    quantize: Annotated[
        Literal["int8", "none"] | None,
        typer.Option(
            "--quantize",
            help=from_setting(
                "export.quantize",
                "int8: also write a static int8 (QDQ) model, kept only if the metric drops by"
                " at most export.max_accuracy_drop; none: fp32 only.",
            ),
        ),
    ] = None,
    layout: Annotated[
        Literal["NCHW", "NHWC"] | None,
        typer.Option(
            "--layout", help=from_setting("export.layout", "Input pixel layout of the graph.")
        ),
    ] = None,
    opset: Annotated[
        int | None,
        typer.Option("--opset", min=13, help=from_setting("export.opset", "ONNX opset version.")),
    ] = None,
    checkpoint: Annotated[
        Literal["best", "last"], typer.Option("--checkpoint", help="Which checkpoint.")
    ] = "best",
    wandb: Annotated[
        bool,
        typer.Option(
            "--wandb", help="Also log the bundle as a W&B model artifact (tracking.mode)."
        ),
    ] = False,
    json_output: JsonOutput = False,
    config: ConfigFile = None,
    recipe: Recipe = None,
    print_config: PrintConfig = False,
    verbose: Verbose = 0,
    quiet: Quiet = False,
) -> None:
    """Export a trained run to a self-describing ONNX bundle, verified against PyTorch.

    Writes runs/<name>/bundle/: model.onnx (uint8 pixels in, normalisation and the task's
    post-processing inside, named outputs and an embedding), visionops.json (metadata and
    checksums), parity.json (ONNX Runtime vs PyTorch on validation images; the export fails
    without a pass) and reference.npz (the drift baseline). With --quantize int8 it adds
    model.int8.onnx when the accuracy cost is within tolerance.

    Example: visionops export runs/run-001 --quantize int8
    """
    setup(verbose, quiet)
    run, overrides = _one_run(args)
    settings = resolve_settings(
        config_file=config,
        overrides=overrides,
        recipe=recipe,
        print_config=print_config,
        export__quantize=quantize,
        export__layout=layout,
        export__opset=opset,
    )
    from visionops.export.stage import export_run

    with progress() as reporter:
        result = export_run(settings, run, force=force, checkpoint=checkpoint, progress=reporter)
    if wandb:
        from visionops.tracking.model_artifact import log_bundle_artifact

        logged = log_bundle_artifact(result.bundle_dir, settings.tracking)
        console.print(
            f"W&B model artifact {safe(logged.name)}:{safe(logged.aliases[-1])}"
            f" ({safe(logged.wandb_run_dir)})"
        )
    if json_output:
        print_json(
            {
                "bundle": str(result.bundle_dir),
                "manifest": result.meta.to_json(),
                "parity": result.parity.model_dump(mode="json"),
                "warnings": result.warnings,
                "seconds": round(result.seconds, 2),
            }
        )
        return
    out.print(_export_table(result))
    if result.quantized is not None and not result.quantized.accepted:
        console.print(f"[yellow]int8 not kept:[/] {safe(result.quantized.reason)}")
    console.print(f"serve it with: visionops serve {safe(result.bundle_dir.parent)}")


_ENGINE_LABELS = {
    "pytorch eager": "PyTorch eager",
    "onnxruntime fp32": "ORT fp32",
    "onnxruntime int8": "ORT int8",
}


def _benchmark_table(result: BenchmarkResult) -> Table:
    table = Table(
        title=f"{result.run} · {result.task} · CPU, {result.threads} threads",
        caption=f"latency at batch 1 · {result.metric} on {result.images} {result.split} images"
        " · speed-up = PyTorch p50 / engine p50",
    )
    table.add_column("engine", style="bold", no_wrap=True)
    table.add_column("p50 ms", justify="right", no_wrap=True)
    table.add_column("p95 ms", justify="right", no_wrap=True)
    for size in result.engines[0].throughput if result.engines else ():
        table.add_column(f"img/s @{size}", justify="right")
    table.add_column("size", justify="right", no_wrap=True)
    table.add_column(result.metric, justify="right", no_wrap=True)
    table.add_column("speed-up", justify="right", no_wrap=True)
    for row in result.engines:
        speedup = result.speedup(row.engine, "pytorch eager")
        table.add_row(
            _ENGINE_LABELS.get(row.engine, row.engine),
            f"{row.p50_ms:.2f}",
            f"{row.p95_ms:.2f}",
            *(f"{value:.0f}" for value in row.throughput.values()),
            _size(row.size_bytes),
            _metric(row.metric),
            f"{speedup:.2f}x" if speedup else "—",
        )
    return table


def benchmark(
    args: RunArgs = None,
    threads: Annotated[
        int | None,
        typer.Option("--threads", min=1, help="CPU threads for every engine (default: all cores)."),
    ] = None,
    seconds: Annotated[
        float,
        typer.Option("--seconds", min=0.05, help="Time spent on each measurement."),
    ] = 2.0,
    json_output: JsonOutput = False,
    config: ConfigFile = None,
    recipe: Recipe = None,
    print_config: PrintConfig = False,
    verbose: Verbose = 0,
    quiet: Quiet = False,
) -> None:
    """Compare PyTorch eager, ONNX Runtime fp32 and ONNX Runtime int8 on the CPU for a run.

    Needs the run's bundle (`visionops export`). Reports p50/p95 latency at batch 1,
    throughput at batch 8 and 32, file size and the metric on the test split; every engine
    uses the same threads and is warmed up before timing.

    Example: visionops benchmark runs/run-001 --threads 4
    """
    setup(verbose, quiet)
    run, overrides = _one_run(args)
    settings = resolve_settings(
        config_file=config, overrides=overrides, recipe=recipe, print_config=print_config
    )
    from visionops.export.benchmark import benchmark_run

    with progress() as reporter:
        result = benchmark_run(
            settings, run, threads=threads, min_seconds=seconds, progress=reporter
        )
    if json_output:
        print_json(result.to_json())
        return
    out.print(_benchmark_table(result))
    for note in result.notes:
        console.print(f"[yellow]note:[/] {safe(note)}")


def register(app: typer.Typer) -> None:
    """Add ``export`` and ``benchmark``."""
    app.command(rich_help_panel="Lifecycle")(export)
    app.command(rich_help_panel="Lifecycle")(benchmark)
