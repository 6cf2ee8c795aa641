"""``visionops data fetch``: get a dataset into ``data/raw/<name>/``."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape

from visionops.cli._common import (
    STATE,
    ConfigFile,
    JsonOutput,
    PrintConfig,
    Quiet,
    Recipe,
    Verbose,
    console,
    one_positional,
    out,
    print_json,
    progress,
    resolve_settings,
    setup,
)


def _size(num_bytes: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if num_bytes < 1024 or unit == "GB":
            return f"{num_bytes:.0f} {unit}" if unit == "B" else f"{num_bytes:.1f} {unit}"
        num_bytes /= 1024
    return f"{num_bytes:.1f} GB"  # pragma: no cover


def fetch(
    args: Annotated[
        list[str] | None,
        typer.Argument(
            help=(
                "SOURCE then key=value overrides. SOURCE: demo:<name> (demo:shapes,"
                " demo:multilabel, demo:regression, demo:anomaly),"
                " kaggle:<owner>/<dataset> (optionally /versions/<N>), a folder, or a"
                " .zip/.tar/.tar.gz/.tgz/.tar.bz2/.tar.xz archive; default: the data.source"
                " setting."
            ),
            show_default=False,
            metavar="SOURCE KEY=VALUE",
        ),
    ] = None,
    name: Annotated[
        str | None,
        typer.Option(
            "--name", "-n", help="Folder name under data.raw_root (default: from the source)."
        ),
    ] = None,
    force: Annotated[
        bool,
        typer.Option(
            "--force", "-f", help="Fetch again, replacing what is there (even non-visionops data)."
        ),
    ] = False,
    json_output: JsonOutput = False,
    config: ConfigFile = None,
    recipe: Recipe = None,
    print_config: PrintConfig = False,
    verbose: Verbose = 0,
    quiet: Quiet = False,
) -> None:
    """Get a dataset into data/raw/<name>/ with a source.json (same source again: a no-op).

    Archives are unpacked safely: no absolute paths, '..', links or devices, size capped.
    Kaggle datasets come through kagglehub; its cache (KAGGLEHUB_CACHE) also works offline.

    Example: visionops data fetch demo:shapes data.demo.images_per_class=40
    """
    setup(verbose, quiet)
    source, overrides = one_positional(args, "SOURCE")
    settings = resolve_settings(
        config_file=config, overrides=overrides, recipe=recipe, print_config=print_config
    )
    from visionops.data.fetch import fetch_dataset

    with progress() as reporter:
        result = fetch_dataset(source, settings, name=name, force=force, progress=reporter)

    info = result.source_info
    if json_output:
        print_json(
            {
                "path": str(result.path),
                "skipped": result.skipped,
                "source": info.model_dump(mode="json"),
            }
        )
        return
    where = escape(str(result.path))
    what = escape(info.source)
    fingerprint = info.fingerprint[:12]
    quiet_now = bool(getattr(STATE, "quiet", False))
    if result.skipped:
        console.print(
            f"[yellow]{where}[/] already holds {what} (fetched"
            f" {info.fetched_at}) — nothing to do; pass --force to fetch it again"
        )
    elif not quiet_now:
        console.print(f"[green]fetched[/] {what} → [bold]{where}[/]")
    out.print(
        f"{where}: {info.file_count} files, {_size(float(info.bytes))}, fingerprint {fingerprint}"
    )
    if not quiet_now:
        console.print(f"next: visionops data preprocess {where}")
