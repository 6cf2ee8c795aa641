"""``visionops train``, ``visionops models`` and ``visionops sweep``."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import typer

from visionops.cli._common import (
    OVERRIDES,
    ConfigFile,
    Device,
    JsonOutput,
    PrintConfig,
    Quiet,
    Recipe,
    Verbose,
    console,
    flag_errors,
    from_setting,
    one_positional,
    out,
    print_json,
    print_settings,
    print_wrapped,
    progress,
    resolve_settings,
    setup,
)
from visionops.cli._text import DataTable as Table
from visionops.cli._text import safe
from visionops.errors import VisionOpsError

if TYPE_CHECKING:
    from visionops.train import TrainResult

Args = Annotated[
    list[str] | None,
    typer.Argument(
        help=(
            "DATASET (a prepared or raw folder, a prepared name, or a source such as"
            " demo:multilabel; default: visionops.yaml's data.source, else the newest"
            " prepared dataset, else demo:shapes), or with --resume the RUN to continue;"
            " then key=value overrides."
        ),
        show_default=False,
        metavar=f"DATASET {OVERRIDES}",
    ),
]
_EXIT_INTERRUPTED = 130


def _metrics_table(result: TrainResult) -> Table:
    metrics = result.metrics
    splits = [split for split in ("val", "test") if isinstance(metrics.get(split), dict)]
    title = (
        f"{result.name} · {result.task} · best epoch {result.best_epoch}"
        f" of {result.epochs_completed}"
    )
    table = Table(title=title)
    table.add_column("metric", style="bold")
    for split in splits:
        table.add_column(split, justify="right")
    names = [key for key in metrics.get("val", {}) if "/" not in key]
    for key in names:
        cells = []
        for split in splits:
            value = metrics[split].get(key)
            cells.append(f"{value:.4f}" if isinstance(value, float) else "-")
        label = f"{key} (monitored)" if key == result.monitor else key
        table.add_row(label, *cells)
    return table


def _render(result: TrainResult, json_output: bool) -> None:
    from dataclasses import asdict

    if json_output:
        print_json(asdict(result))
        return
    if result.status == "interrupted":
        console.print(
            f"[yellow]interrupted:[/] {safe(result.run_dir)} keeps {safe(result.kept)} —"
            f" continue it with `{safe(result.resume_command)}`",
            soft_wrap=True,
        )
        return
    out.print(_metrics_table(result))
    console.print(outcome_line(result))
    run_dir = safe(result.run_dir)
    console.print(f"next:\n  visionops eval {run_dir}\n  visionops export {run_dir}")


def outcome_line(result: TrainResult) -> str:
    """``run runs/run-001 · cpu fp32 · 12 s · 730 img/s``; a one-pass fit says what it counts."""
    stopped = "  (stopped early)" if result.stopped_early else ""
    rate = ""
    if result.images_per_s:
        shown_rate = format(result.images_per_s, ".0f" if result.images_per_s >= 10 else ".2g")
        rate = f" · {shown_rate} {result.rate_unit}"
    return (
        f"run {safe(result.run_dir)} · {safe(result.device)} {safe(result.precision)} ·"
        f" {result.seconds:.0f} s{rate}{stopped}"
    )


def train(
    args: Args = None,
    epochs: Annotated[
        int | None,
        typer.Option("--epochs", "-e", min=1, help=from_setting("train.epochs", "Epochs.")),
    ] = None,
    batch_size: Annotated[
        int | None,
        typer.Option(
            "--batch-size",
            "-b",
            min=1,
            help=from_setting("train.batch_size", "Images per batch per process."),
        ),
    ] = None,
    lr: Annotated[
        float | None,
        typer.Option("--lr", min=0.0, help=from_setting("train.lr", "Peak AdamW learning rate.")),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            "-m",
            help=from_setting("model.name", "Backbone (`visionops models` lists them)."),
        ),
    ] = None,
    pretrained: Annotated[
        bool | None,
        typer.Option(
            "--pretrained/--no-pretrained",
            help="Start from ImageNet weights in the local cache (TORCH_HOME, the Hugging Face"
            " cache); model.pretrained=IMAGENET1K_V1 picks a torchvision file.",
            show_default=False,
        ),
    ] = None,
    freeze_backbone: Annotated[
        bool | None,
        typer.Option("--freeze-backbone", help="Train only the new head.", show_default=False),
    ] = None,
    device: Device = None,
    task: Annotated[
        Literal["classification", "multilabel", "regression", "anomaly"] | None,
        typer.Option(
            "--task", "-t", help="The task; it must fit the data (default: the dataset's)."
        ),
    ] = None,
    seed: Annotated[
        int | None, typer.Option("--seed", help=from_setting("train.seed", "Random seed."))
    ] = None,
    deterministic: Annotated[
        bool | None,
        typer.Option(
            "--deterministic",
            help="Deterministic algorithms (slower; same numbers every time).",
            show_default=False,
        ),
    ] = None,
    name: Annotated[
        str | None, typer.Option("--name", "-n", help="Run folder name (default run-NNN).")
    ] = None,
    exist_ok: Annotated[
        bool,
        typer.Option("--force", "-f", "--exist-ok", help="Replace an existing run of that --name."),
    ] = False,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume",
            help="Continue a run from its last.pt: the positional is then the RUN (a run"
            " folder or name; default runs/latest), not a dataset.",
        ),
    ] = False,
    resume_latest: Annotated[
        bool, typer.Option("--resume-latest", hidden=True, help="Old spelling of --resume.")
    ] = False,
    wandb: Annotated[
        bool, typer.Option("--wandb", help="Log to Weights & Biases (tracking.mode=online).")
    ] = False,
    reprepare: Annotated[
        bool,
        typer.Option(
            "--reprepare",
            help="Prepare the dataset again if it was prepared with another data.image_size"
            " (or channels, resize) than the settings ask for.",
        ),
    ] = False,
    nproc_per_node: Annotated[
        int | None,
        typer.Option(
            "--nproc-per-node",
            min=1,
            help="Data-parallel processes on this machine (one per GPU), via torchrun"
            " (default: 1, no torchrun).",
        ),
    ] = None,
    nnodes: Annotated[
        str | None,
        typer.Option(
            "--nnodes",
            help="Machines taking part: N, or MIN:MAX for elastic membership, e.g. 2."
            " Needs --rdzv-endpoint (default: this machine alone, or what a launcher's"
            " environment says).",
            rich_help_panel="Several machines",
        ),
    ] = None,
    node_rank: Annotated[
        int | None,
        typer.Option(
            "--node-rank",
            help="This machine's number, 0..N-1; node 0 hosts the rendezvous and writes the"
            " run, e.g. 1 (default: 0 on one machine; required with a fixed --nnodes).",
            rich_help_panel="Several machines",
        ),
    ] = None,
    rdzv_endpoint: Annotated[
        str | None,
        typer.Option(
            "--rdzv-endpoint",
            help="HOST:PORT of node 0, where the machines meet, e.g. 10.0.0.1:29500"
            " (default: none; needed with --nnodes).",
            rich_help_panel="Several machines",
        ),
    ] = None,
    rdzv_id: Annotated[
        str | None,
        typer.Option(
            "--rdzv-id",
            help="Job id, the same on every machine of one job, e.g. resnet-2024-06."
            " (default: visionops)",
            rich_help_panel="Several machines",
        ),
    ] = None,
    max_restarts: Annotated[
        int | None,
        typer.Option(
            "--max-restarts",
            help="Restarts of the whole group after a process dies; each resumes from the"
            " newest checkpoint, e.g. 5 (default: 3 with several processes).",
            rich_help_panel="Several machines",
        ),
    ] = None,
    rdzv_timeout: Annotated[
        int | None,
        typer.Option(
            "--rdzv-timeout",
            help="Seconds to wait for the other machines, e.g. 300 (default: 900).",
            rich_help_panel="Several machines",
        ),
    ] = None,
    json_output: JsonOutput = False,
    config: ConfigFile = None,
    recipe: Recipe = None,
    print_config: PrintConfig = False,
    verbose: Verbose = 0,
    quiet: Quiet = False,
) -> None:
    """Train a model on a prepared dataset and write runs/<name>/.

    With no DATASET it trains on visionops.yaml's dataset, the newest prepared dataset, or
    the embedded demo:shapes (fetched and prepared on the fly). Ctrl-C keeps the last
    finished epoch and prints the command that resumes it.

    On several machines, run the same command on each with its own --node-rank (see
    "Training at scale" in the docs); under torchrun, srun, a Kubeflow PyTorchJob or a
    Vertex AI job it joins from their environment, without flags.

    Example: visionops train data/prepared/shapes --epochs 20 --model resnet34 train.lr=0.001

    Example: visionops train --resume runs/run-003 --epochs 30

    Example: visionops train --nnodes 2 --node-rank 0 --rdzv-endpoint 10.0.0.1:29500
    """
    from visionops.distributed import adopt_launcher_environment, in_torchrun
    from visionops.train.launch import (
        TrainRequest,
        record_worker_error,
        resolve_train_settings,
        run_training,
    )

    adopt_launcher_environment(slurm=nnodes is None)
    worker = in_torchrun()
    setup(verbose, quiet or (worker and os.environ.get("RANK", "0") != "0"))
    dataset, overrides = one_positional(args, "RUN" if resume or resume_latest else "DATASET")
    if resume_latest:
        console.print("[yellow]deprecated:[/] --resume-latest is now --resume (with no RUN)")
        if dataset is not None:
            raise typer.BadParameter("--resume-latest takes no RUN: use --resume RUN")
        resume = True
    run_to_resume = (dataset or "latest") if resume else None
    if resume:
        dataset = None  # a resumed run trains on its own dataset
    flags = {
        "train.epochs": epochs,
        "train.batch_size": batch_size,
        "train.lr": lr,
        "model.name": model,
        "model.pretrained": pretrained,
        "model.freeze_backbone": freeze_backbone,
        "device": device,
        "data.task": task,
        "train.seed": seed,
        "train.deterministic": deterministic,
        "tracking.mode": "online" if wandb else None,
    }
    request = TrainRequest(
        dataset=dataset,
        overrides=overrides,
        flags=flags,
        config_file=config,
        recipe=recipe,
        name=name,
        exist_ok=exist_ok,
        resume=run_to_resume,
        reprepare=reprepare,
        nproc_per_node=nproc_per_node,
        nnodes=nnodes,
        node_rank=node_rank,
        rdzv_endpoint=rdzv_endpoint,
        rdzv_id=rdzv_id,
        max_restarts=max_restarts,
        rdzv_timeout=rdzv_timeout,
        verbose=verbose,
        quiet=quiet,
    )
    if print_config:
        with flag_errors(flags):
            print_settings(resolve_train_settings(request))
        raise typer.Exit(0)
    try:
        with flag_errors(flags), progress() as reporter:
            result = run_training(request, reporter)
    except VisionOpsError as exc:
        if not worker:
            raise
        record_worker_error(exc)  # the launcher prints it, once
        raise typer.Exit(exc.exit_code) from None
    if result is None or result.rank != 0:
        return
    _render(result, json_output)
    if result.status == "interrupted":
        raise typer.Exit(_EXIT_INTERRUPTED)


def models(
    pattern: Annotated[
        str | None,
        typer.Argument(
            help="Shell-style pattern on the name, e.g. 'timm:vit_*' or '*convnext*' (default:"
            " the backbones worth starting from).",
            metavar="PATTERN",
            show_default=False,
        ),
    ] = None,
    show_all: Annotated[
        bool, typer.Option("--all", help="List every backbone (about 1,400), not the starters.")
    ] = False,
    family: Annotated[
        Literal["all", "torchvision", "timm"],
        typer.Option("--family", help="Which family to list."),
    ] = "all",
    json_output: JsonOutput = False,
    verbose: Verbose = 0,
    quiet: Quiet = False,
) -> None:
    """List the backbones `--model` accepts: torchvision's, then timm's (`timm:<name>`).

    Without a PATTERN it shows the backbones worth starting from, each with why; --all or a
    PATTERN lists from every backbone. Parameters include the model's own ImageNet head,
    which training replaces. timm's parameters are counted when at most 60 timm models are
    listed; its pretrained tags go after the name as `timm:<name>.<tag>` (`--pretrained`
    reads them from the local Hugging Face cache).

    Example: visionops models 'timm:vit_*dinov2*'
    """
    setup(verbose, quiet)
    from visionops.models import describe_backbones, describe_starters, list_backbones

    starters = pattern is None and not show_all
    rows = describe_starters(family) if starters else describe_backbones(pattern or "*", family)
    if json_output:
        print_json([dataclasses.asdict(row) for row in rows])
        return
    torchvision_rows = [row for row in rows if row.family == "torchvision"]
    timm_rows = [row for row in rows if row.family == "timm"]
    which = "starter " if starters else ""
    if torchvision_rows or not timm_rows:
        title = _count(len(torchvision_rows), f"torchvision {which}backbone") + " (model.name)"
        table = Table(title=title)
        table.add_column("name", style="bold")
        if starters:
            table.add_column("why start here")
        table.add_column("params (M)", justify="right")
        table.add_column("GFLOPs @224", justify="right", optional=not starters)
        table.add_column("ImageNet top-1", justify="right", optional=starters)
        table.add_column("--pretrained weights", optional=True)
        for row in torchvision_rows:
            table.add_row(
                row.name,
                *([row.why or ""] if starters else []),
                _number(row.params_m, ".1f"),
                _number(row.gflops, ".2f"),
                _number(row.imagenet_top1, ".1f"),
                row.weights or "-",
            )
        out.print(table)
    if timm_rows:
        title = _count(len(timm_rows), f"timm {which}backbone")
        table = Table(title=f"{title} (model.name=timm:<name>[.<tag>])")
        table.add_column("name", style="bold")
        if starters:
            table.add_column("why start here")
        table.add_column("params (M)", justify="right")
        table.add_column("pretrained tags", optional=True)
        for row in timm_rows:
            tags = ", ".join(row.pretrained_tags[:3])
            more = len(row.pretrained_tags) - 3
            table.add_row(
                row.name,
                *([row.why or ""] if starters else []),
                _number(row.params_m, ".1f"),
                (tags + (f" (+{more})" if more > 0 else "")) or "-",
            )
        out.print(table)
        if any(row.params_m is None for row in timm_rows):
            console.print("timm parameters are counted for at most 60 models: give a PATTERN")
    if starters:
        counts = {f: len(list_backbones(f)) for f in ("torchvision", "timm")}
        print_wrapped(
            f"{counts['torchvision']:,} torchvision and {counts['timm']:,} timm backbones in all:"
            " `visionops models --all`, or a PATTERN such as 'timm:convnext*'"
        )


def _count(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _number(value: float | None, spec: str) -> str:
    return format(value, spec) if value is not None else "-"


def sweep(
    sweep_file: Annotated[
        Path,
        typer.Argument(
            help="Sweep YAML: method, parameters (setting keys), optional metric and dataset.",
            dir_okay=False,
            metavar="SWEEP_FILE",
        ),
    ],
    overrides: Annotated[
        list[str] | None,
        typer.Argument(
            help="key=value overrides (tracking.project=...).",
            show_default=False,
            metavar=OVERRIDES,
        ),
    ] = None,
    count: Annotated[
        int | None,
        typer.Option("--count", min=1, help="Runs the local agent does (default: until stopped)."),
    ] = None,
    create_only: Annotated[
        bool,
        typer.Option("--create-only", help="Only create the sweep; print the agent command."),
    ] = False,
    dataset: Annotated[
        str | None,
        typer.Option(
            "--dataset", help="DATASET argument of every run (default: the sweep file's)."
        ),
    ] = None,
    json_output: JsonOutput = False,
    config: ConfigFile = None,
    recipe: Recipe = None,
    print_config: PrintConfig = False,
    verbose: Verbose = 0,
    quiet: Quiet = False,
) -> None:
    """Create a Weights & Biases sweep whose agents run `visionops train key=value ...`.

    Parameter names are setting keys, e.g. `train.lr: {min: 0.0001, max: 0.01}`. The
    default metric is best_metric (the run's best monitored value), maximised. Needs the
    network and `wandb login`.

    Example: visionops sweep sweep.yaml --count 10
    """
    setup(verbose, quiet)
    settings = resolve_settings(
        config_file=config, overrides=overrides or [], recipe=recipe, print_config=print_config
    )
    from visionops.tracking.sweeps import create_sweep

    result = create_sweep(
        sweep_file, settings, count=count, create_only=create_only, dataset=dataset
    )
    if json_output:
        print_json(
            {
                "sweep_id": result.sweep_id,
                "agent_command": result.agent_command,
                "config": result.config,
            }
        )
        return
    console.print(f"sweep {safe(result.sweep_id)} created; start agents anywhere with:")
    out.print(f"  {safe(result.agent_command)}")


def register(app: typer.Typer) -> None:
    """Add ``train``, ``models`` and ``sweep`` to the root app."""
    app.command("train", rich_help_panel="Lifecycle")(train)
    app.command("models", rich_help_panel="Lifecycle")(models)
    app.command("sweep", rich_help_panel="Lifecycle")(sweep)
