"""``visionops doctor``."""

from __future__ import annotations

from typing import Any

import typer
from rich.text import Text

from visionops.cli._common import (
    ConfigFile,
    Device,
    JsonOutput,
    Overrides,
    PrintConfig,
    Quiet,
    Recipe,
    Verbose,
    console,
    out,
    print_json,
    resolve_settings,
    setup,
)
from visionops.cli._text import DataTable as Table
from visionops.cli._text import safe


def _row(table: Table, name: str, value: Any, good: bool | None = None) -> None:
    colour = "" if good is None else ("green" if good else "yellow")
    table.add_row(name, Text(str(value), style=colour))


def doctor(
    overrides: Overrides = None,
    device: Device = None,
    config: ConfigFile = None,
    recipe: Recipe = None,
    print_config: PrintConfig = False,
    json_output: JsonOutput = False,
    verbose: Verbose = 0,
    quiet: Quiet = False,
) -> None:
    """Check this machine: versions, CUDA/MPS, the device `auto` picks and why, disk, W&B.

    Exits 1 when the device asked for (--device or the device setting) is not usable here.

    Example: visionops doctor --device cuda
    """
    setup(verbose, quiet)
    from visionops.doctor import collect_diagnostics

    settings = resolve_settings(
        config_file=config,
        overrides=overrides or [],
        recipe=recipe,
        print_config=print_config,
        device=device,
    )
    report = collect_diagnostics(settings)
    requested_ok = bool(report["requested_device"]["ok"])
    if json_output:
        print_json(report)
        if not requested_ok:
            raise typer.Exit(1)
        return
    table = Table(title="visionops doctor", show_header=False)
    table.add_column("check", style="bold")
    table.add_column("value")
    _row(table, "visionops", report["visionops"])
    _row(table, "python", f"{report['python']} on {report['platform']}")
    for name, ver in report["packages"].items():
        _row(table, name, ver or "not installed", ver is not None)
    cuda = report["cuda"]
    gpus = ", ".join(f"{d['name']} ({d['memory_gib']} GiB)" for d in cuda["devices"]) or "none"
    _row(table, "CUDA", f"{cuda['available']} (build {cuda['version']}); GPUs: {gpus}")
    _row(table, "Apple MPS", report["mps"])
    _row(table, "ONNX Runtime providers", ", ".join(report["onnxruntime_providers"]))
    auto = report["auto_device"]
    _row(table, "device auto picks", f"{auto['device']} ({auto['precision']}): {auto['reason']}")
    req = report["requested_device"]
    if req["setting"] != "auto":
        _row(table, f"device {req['setting']}", req.get("error") or req["device"], req["ok"])
    disk = report["disk"]
    free = f"{disk['free_gib']} GiB of {disk['total_gib']} GiB"
    _row(table, "free disk", free, disk["free_gib"] > 5)
    wandb = report["wandb"]
    _row(table, "W&B", f"mode={wandb['mode']} api_key_set={wandb['api_key_set']}")
    _row(table, "kagglehub cache", report["kagglehub_cache"])
    out.print(table)
    if not requested_ok:
        console.print(
            f"[bold red]error:[/] device {safe(req['setting'])} is not usable here:"
            f" {safe(req.get('error') or req['device'])}"
        )
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add ``doctor``."""
    app.command(rich_help_panel="Setup")(doctor)
