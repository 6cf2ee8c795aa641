"""``visionops drift ...``: report, reference, simulate (never imports torch).

Exit codes: 0 = no drift (or the command did its job); 1 = drift, with ``--fail-on-drift``
(for cron and CI); 2 = a usage or input error (no log, too few images, a foreign log, ...).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import typer
from rich.text import Text

from visionops.cli._common import (
    ConfigFile,
    JsonOutput,
    PrintConfig,
    Quiet,
    Recipe,
    Verbose,
    one_positional,
    out,
    print_json,
    print_wrapped,
    progress,
    resolve_settings,
    setup,
    split_args,
)
from visionops.cli._text import DataTable as Table
from visionops.cli._text import safe
from visionops.errors import DriftError, VisionOpsError

if TYPE_CHECKING:
    from visionops.drift.report import DriftReport

drift_app = typer.Typer(
    help="Has what the model sees drifted from what it was validated on?",
    no_args_is_help=True,
)

Args = Annotated[
    list[str] | None,
    typer.Argument(
        help="A bundle folder or a run (folder or name; default runs/latest), then setting"
        " overrides as key=value (e.g. drift.alpha=0.01).",
        show_default=False,
        metavar="RUN KEY=VALUE",
    ),
]


@contextmanager
def _input_errors() -> Iterator[None]:
    """Every visionops error of a drift command is an input error: exit 2, one line."""
    try:
        yield
    except DriftError:
        raise
    except VisionOpsError as exc:
        raise DriftError(str(exc)) from None


def _summary(report: DriftReport) -> None:
    result = report.result
    if result.drifted:
        print_wrapped(
            f"[bold red]DRIFT DETECTED[/] — overall p = {result.p_value:.3g} < α = {result.alpha:g}"
        )
        for text in result.what_drifted:
            print_wrapped(safe(text), bullet="  • ")
    else:
        print_wrapped(
            f"[bold green]NO DRIFT[/] — overall p = {result.p_value:.3g} ≥ α = {result.alpha:g}"
        )
    table = Table(
        title=f"{result.current_count} current vs {result.reference_count} reference images"
        f" ({report.payload['reference']['split']} split)"
    )
    table.add_column("family", style="bold")
    table.add_column("p-value", justify="right")
    table.add_column("verdict")
    table.add_column("strongest signal")
    for family in result.families:
        top = min(family.tests, key=lambda row: row.p_adjusted)
        table.add_row(
            family.name,
            f"{family.p_value:.3g}",
            Text("drift", style="red") if family.drifted else Text("ok", style="green"),
            f"{top.name} ({top.test}, effect {top.statistic:.3g})",
        )
    out.print(table)
    for note in report.payload.get("notes") or []:
        print_wrapped(f"[yellow]note:[/] {safe(note)}")
    # One path a line, never broken inside: it is meant to be copied.
    out.print(f"report: {safe(_shown(report.html_path))}")
    out.print(f"json:   {safe(_shown(report.json_path))}")
    if report.dated_dir is not None:
        out.print(f"kept:   {safe(_shown(report.dated_dir))}/")


def _shown(path: Path) -> str:
    """``path`` relative to the working folder when it is inside it: short, to copy."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def report(
    args: Args = None,
    current: Annotated[
        list[str] | None,
        typer.Option(
            "--current",
            help="A prediction-log folder or URL (s3://bucket/logs reads every replica under"
            " it), a quoted glob, or a folder of images to run through the bundle; repeat it"
            " to merge several logs by time (default: the bundle's own log, <run>/predictions).",
            metavar="DIR|URL",
        ),
    ] = None,
    last: Annotated[
        int | None,
        typer.Option(
            "--last", min=1, help="Only the last N predictions of the log (default: all)."
        ),
    ] = None,
    since: Annotated[
        str | None,
        typer.Option(
            "--since",
            help="Only predictions since a time (2026-11-22T06:00) or 24h/7d (default: all).",
        ),
    ] = None,
    out_dir: Annotated[
        Path | None,
        typer.Option(
            "--out-dir",
            help="Folder of reports: each run adds a dated folder and refreshes report.html"
            " and report.json, the latest (default <run>/drift).",
            file_okay=False,
        ),
    ] = None,
    fail_on_drift: Annotated[
        bool, typer.Option("--fail-on-drift", help="Exit 1 when drift is detected (cron, CI).")
    ] = False,
    json_output: JsonOutput = False,
    config: ConfigFile = None,
    recipe: Recipe = None,
    print_config: PrintConfig = False,
    verbose: Verbose = 0,
    quiet: Quiet = False,
) -> None:
    """Compare recent traffic with the bundle's held-out reference; write report.html.

    Three families of tests — embeddings (MMD²), model outputs (KS + chi-square), image
    statistics (KS) — give one verdict whose false-alarm rate is α.

    Example: visionops drift report --last 500 --fail-on-drift

    Example: visionops drift report runs/run-001 --current s3://my-bucket/predictions --since 24h
    """
    setup(verbose, quiet)
    with _input_errors():
        target_arg, overrides = one_positional(args, "BUNDLE|RUN")
        settings = resolve_settings(
            config_file=config, overrides=overrides, recipe=recipe, print_config=print_config
        )
        from visionops.drift.report import drift_report
        from visionops.drift.samples import parse_since

        with progress() as reporter:
            result = drift_report(
                settings,
                Path(target_arg) if target_arg else None,
                current=current or None,
                last=last,
                since=parse_since(since) if since else None,
                out=out_dir,
                progress=reporter,
            )
    if json_output:
        print_json(result.payload)
    else:
        _summary(result)
    if fail_on_drift and result.result.drifted:
        raise typer.Exit(1)


ReferenceArgs = Annotated[
    list[str] | None,
    typer.Argument(
        help="A bundle folder or a run (folder or name; default runs/latest), optionally the"
        " prepared dataset to draw from (default: the run's own), then setting overrides as"
        " key=value.",
        show_default=False,
        metavar="RUN DATASET KEY=VALUE",
    ),
]


def reference(
    args: ReferenceArgs = None,
    split: Annotated[
        Literal["val", "test"] | None,
        typer.Option(
            "--split", "-s", help="Held-out split (default: the drift.reference_split setting)."
        ),
    ] = None,
    json_output: JsonOutput = False,
    config: ConfigFile = None,
    recipe: Recipe = None,
    print_config: PrintConfig = False,
    verbose: Verbose = 0,
    quiet: Quiet = False,
) -> None:
    """Rebuild a bundle's drift reference from held-out images (ONNX Runtime, no torch).

    Example: visionops drift reference runs/run-001 data/prepared/shapes --split test
    """
    setup(verbose, quiet)
    with _input_errors():
        positionals, overrides = split_args(args)
        if len(positionals) > 2:
            raise DriftError(
                f"expected RUN [DATASET], got {len(positionals)} paths: {' '.join(positionals)}"
                " (settings are key=value)"
            )
        target_arg, dataset = [*positionals, None, None][:2]
        settings = resolve_settings(
            config_file=config, overrides=overrides, recipe=recipe, print_config=print_config
        )
        from visionops.drift.reference import rebuild_reference

        with progress() as reporter:
            result = rebuild_reference(
                settings,
                Path(target_arg) if target_arg else None,
                dataset=Path(dataset) if dataset else None,
                split=split,
                progress=reporter,
            )
    if json_output:
        print_json(
            {
                "bundle": str(result.bundle_dir),
                "samples": result.samples,
                "split": result.split,
                "dataset": str(result.dataset),
                "notes": list(result.notes),
            }
        )
        return
    for note in result.notes:
        print_wrapped(f"[yellow]note:[/] {safe(note)}")
    print_wrapped(
        f"reference of {safe(_shown(result.bundle_dir))}: {result.samples} {result.split} images"
        f" from {safe(_shown(result.dataset))}"
    )


def simulate(
    source: Annotated[
        Path, typer.Argument(help="An image file or a folder of images.", metavar="IMAGES")
    ],
    shift: Annotated[
        str,
        typer.Option(
            "--shift",
            help="name=value pairs, comma-separated: brightness, contrast, blur, noise,"
            " rotation, jpeg, occlusion, cast, resize (e.g. brightness=1.3,blur=2).",
        ),
    ],
    out_dir: Annotated[
        Path, typer.Option("--out-dir", help="Folder for the shifted copies.", file_okay=False)
    ],
    seed: Annotated[int, typer.Option("--seed", help="Seed of noise and occlusion.")] = 0,
    force: Annotated[
        bool, typer.Option("--force", "-f", help="Replace an --out-dir that exists.")
    ] = False,
    json_output: JsonOutput = False,
    verbose: Verbose = 0,
    quiet: Quiet = False,
) -> None:
    """Write shifted copies of images (same layout) for demos, tests and fire drills.

    Example: visionops drift simulate data/raw/shapes/test --shift brightness=1.3 --out-dir shifted
    """
    setup(verbose, quiet)
    with _input_errors():
        from visionops.drift.simulate import parse_shifts, simulate_folder

        result = simulate_folder(source, parse_shifts(shift), out_dir, seed=seed, force=force)
    if json_output:
        print_json(
            {
                "written": result.written,
                "out_dir": str(result.out_dir),
                "skipped": [{"image": str(p), "reason": why} for p, why in result.skipped],
            }
        )
        return
    for path, reason in result.skipped[:5]:
        out.print(f"[yellow]skipped[/] {safe(path)}: {safe(reason)}")
    out.print(f"{safe(result.written)} shifted images written to {safe(result.out_dir)}")


def register(app: typer.Typer) -> None:
    """Add the ``drift`` command group."""
    drift_app.command("report")(report)
    drift_app.command("reference")(reference)
    drift_app.command("simulate")(simulate)
    app.add_typer(drift_app, name="drift", rich_help_panel="Lifecycle")
