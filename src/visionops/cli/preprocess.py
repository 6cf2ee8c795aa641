"""``visionops data preprocess`` and ``visionops data info``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import typer

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
    from visionops.data.info import PreparedInfo, RawInfo
    from visionops.data.preprocess import PrepareResult

Args = Annotated[
    list[str] | None,
    typer.Argument(
        help="The dataset folder, then setting overrides as key=value (e.g. data.seed=1).",
        show_default=False,
        metavar=f"DATASET {OVERRIDES}",
    ),
]
_SPLITS = ("train", "val", "test")


def _shown(path: Path) -> str:
    """A path relative to the working folder when it is inside it (for copy-paste)."""
    try:
        return os.path.relpath(path) if not os.path.relpath(path).startswith("..") else str(path)
    except ValueError:  # another drive on Windows
        return str(path)


def _names(values: list[str] | None, units: list[str] | None = None, limit: int = 8) -> str:
    if not values:
        return "-"
    units = units or [""] * len(values)
    shown = [f"{v} ({u})" if u else v for v, u in zip(values, units, strict=True)]
    more = f" and {len(values) - limit} more" if len(values) > limit else ""
    return f"{len(values)}: " + ", ".join(shown[:limit]) + more


def _render_summary(result: PrepareResult) -> None:
    manifest = result.manifest
    counts = manifest.counts
    table = Table(title=f"prepared dataset {manifest.name}", show_header=False)
    table.add_column("what", style="bold")
    table.add_column("value")
    table.add_row("folder", _shown(result.path))
    table.add_row("task", manifest.task)
    if manifest.target_names:
        table.add_row("targets", _names(manifest.target_names, manifest.target_units))
    else:
        table.add_row("classes", _names(manifest.class_names))
    table.add_row(
        "images",
        "  ".join(f"{split} {counts.get(split, 0)}" for split in _SPLITS)
        + ("  (splits from the source)" if manifest.splits_from_source else ""),
    )
    table.add_row(
        "stored as",
        f"{manifest.image_size}×{manifest.image_size}×{manifest.channels} uint8,"
        f" resize {manifest.resize}",
    )
    rejected = f"{counts.get('rejected', 0)}"
    if result.rejected_by_reason:
        top = list(result.rejected_by_reason.items())[:3]
        rejected += " (" + ", ".join(f"{n} {kind}" for kind, n in top) + "; see rejected.csv)"
    table.add_row("rejected", rejected)
    table.add_row("duplicates across splits", str(counts.get("duplicates_across_splits", 0)))
    if not result.skipped:
        table.add_row("speed", f"{result.images_per_s:.0f} images/s ({result.seconds:.1f} s)")
    out.print(table)


def preprocess(
    args: Args = None,
    task: Annotated[
        Literal["classification", "multilabel", "regression", "anomaly"] | None,
        typer.Option("--task", "-t", help="The task (default: inferred from the layout)."),
    ] = None,
    channels: Annotated[
        int | None,
        typer.Option(
            "--channels",
            min=1,
            max=3,
            help=from_setting("data.channels", "3 = RGB, 1 = grayscale."),
        ),
    ] = None,
    size: Annotated[
        int | None,
        typer.Option(
            "--size",
            min=1,
            help=from_setting("data.image_size", "Side of the stored square images."),
        ),
    ] = None,
    resize: Annotated[
        Literal["crop", "letterbox"] | None,
        typer.Option(
            "--resize",
            help=from_setting("data.resize", "crop: centre square; letterbox: pad."),
        ),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", "-f", help="Redo it even if an identical one exists.")
    ] = False,
    workers: Annotated[
        int | None,
        typer.Option(
            "--workers",
            "-j",
            min=0,
            help=from_setting("data.workers", "Decoding processes; 0 = one per core."),
        ),
    ] = None,
    json_output: JsonOutput = False,
    config: ConfigFile = None,
    recipe: Recipe = None,
    print_config: PrintConfig = False,
    verbose: Verbose = 0,
    quiet: Quiet = False,
) -> None:
    """Decode a raw dataset once into data/prepared/<name>: uint8 arrays, splits, manifest.

    Layouts: class folders (optionally in train/val/test), a labelling CSV, MVTec AD, Nutrition5k.

    Bad files are skipped and listed in rejected.csv. Same inputs again: nothing to do.

    Example: visionops data preprocess data/raw/shapes --size 64
    """
    setup(verbose, quiet)
    raw_arg, overrides = one_positional(args, "DATASET")
    settings = resolve_settings(
        config_file=config,
        overrides=overrides,
        recipe=recipe,
        print_config=print_config,
        data__task=task,
        data__channels=channels,
        data__image_size=size,
        data__resize=resize,
        data__workers=workers,
    )
    from visionops.data.preprocess import prepare_dataset

    with progress() as reporter:
        result = prepare_dataset(
            Path(raw_arg) if raw_arg else None, settings, force=force, progress=reporter
        )
    if json_output:
        print_json(
            {
                "path": str(result.path),
                "skipped": result.skipped,
                "manifest": result.manifest.model_dump(mode="json"),
                "rejected_by_reason": result.rejected_by_reason,
                "seconds": round(result.seconds, 2),
            }
        )
        return
    _render_summary(result)
    console.print(f"next: [bold]visionops train {safe(_shown(result.path))}[/]")


def _balance_table(balance: dict[str, dict[str, int]]) -> Table | None:
    splits = [split for split in balance if balance[split]]
    if not splits:
        return None
    table = Table(title="class balance")
    table.add_column("class", style="bold")
    names: list[str] = []
    for split in splits:
        table.add_column(split, justify="right")
        names.extend(name for name in balance[split] if name not in names)
    for name in names:
        table.add_row(name, *(str(balance[split].get(name, 0)) for split in splits))
    return table


def _render_info(report: PreparedInfo | RawInfo) -> None:
    from visionops.data.info import PreparedInfo

    table = Table(title=f"{report.kind} dataset {report.path}", show_header=False)
    table.add_column("what", style="bold")
    table.add_column("value")
    if isinstance(report, PreparedInfo):
        manifest = report.manifest
        table.add_row("name", manifest.name)
        table.add_row("task", manifest.task)
        table.add_row("image_size", str(manifest.image_size))
        table.add_row("channels", str(manifest.channels))
        table.add_row("resize", manifest.resize)
        table.add_row("splits_from_source", str(manifest.splits_from_source))
        if manifest.target_names:
            table.add_row("targets", _names(manifest.target_names, manifest.target_units))
            table.add_row("target mean", str(manifest.target_mean))
            table.add_row("target std", str(manifest.target_std))
        else:
            table.add_row("classes", _names(manifest.class_names, limit=50))
        table.add_row("counts", ", ".join(f"{k} {v}" for k, v in manifest.counts.items()))
        table.add_row("pixel mean", str(manifest.mean))
        table.add_row("pixel std", str(manifest.std))
        source = manifest.source
        table.add_row("source", f"{source.source} ({source.file_count} files)")
        table.add_row("fingerprint", manifest.fingerprint)
        table.add_row("created", str(manifest.created_at))
    else:
        table.add_row("layout", report.layout)
        table.add_row("task", f"{report.task} (possible: {', '.join(report.tasks)})")
        table.add_row("images", str(report.images))
        table.add_row("splits", ", ".join(f"{k} {v}" for k, v in report.splits.items()))
        if report.target_names:
            table.add_row("targets", _names(report.target_names))
        else:
            table.add_row("classes", _names(report.class_names, limit=50))
        for note in report.notes:
            table.add_row("note", note)
        table.add_row("prepared", str(report.prepared) if report.prepared else "not yet")
    out.print(table)
    balance = _balance_table(report.class_balance)
    if balance is not None:
        out.print(balance)
    rejected = report.rejected
    if rejected:
        reasons = Table(title="rejected files")
        reasons.add_column("reason", style="bold")
        reasons.add_column("files", justify="right")
        for kind, count in rejected.items():
            reasons.add_row(kind, str(count))
        out.print(reasons)
    else:
        out.print("rejected files: none")


def info(
    args: Args = None,
    json_output: JsonOutput = False,
    config: ConfigFile = None,
    recipe: Recipe = None,
    print_config: PrintConfig = False,
    verbose: Verbose = 0,
    quiet: Quiet = False,
) -> None:
    """Describe a prepared or raw dataset: manifest, class balance per split, rejected files.

    Without a folder, describes the newest dataset under data/prepared.

    Example: visionops data info data/prepared/shapes --json
    """
    setup(verbose, quiet)
    path_arg, overrides = one_positional(args, "DATASET")
    settings = resolve_settings(
        config_file=config, overrides=overrides, recipe=recipe, print_config=print_config
    )
    from visionops.data.info import dataset_info
    from visionops.data.prepared import find_prepared
    from visionops.errors import DatasetNotFoundError

    if path_arg:
        path = Path(path_arg)
    else:
        newest = find_prepared(settings)
        if newest is None:
            raise DatasetNotFoundError(
                f"no prepared dataset in {settings.data.prepared_root} — run `visionops data"
                " preprocess data/raw/<name>` (after `visionops data fetch`), or pass a folder"
            )
        path = newest
    report = dataset_info(path, settings)
    if json_output:
        print_json(report.to_json())
    else:
        _render_info(report)
