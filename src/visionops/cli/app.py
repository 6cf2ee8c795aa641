"""The ``visionops`` command: the root Typer app and the error boundary.

Each ``cli/<stage>.py`` module adds its commands through ``register(app)``; they import the
core lazily so ``visionops --help`` is fast and ``serve`` never imports torch.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from visionops import __version__
from visionops.cli import config as config_cli
from visionops.cli import data as data_cli
from visionops.cli import deploy as deploy_cli
from visionops.cli import doctor as doctor_cli
from visionops.cli import drift as drift_cli
from visionops.cli import evaluate as evaluate_cli
from visionops.cli import export as export_cli
from visionops.cli import predict as predict_cli
from visionops.cli import quickstart as quickstart_cli
from visionops.cli import runs as runs_cli
from visionops.cli import serve as serve_cli
from visionops.cli import train as train_cli
from visionops.cli._common import STATE, Quiet, Verbose, console, setup
from visionops.cli._help import install_help_style, reflow_app_help
from visionops.cli._text import safe
from visionops.errors import InterruptError, VisionOpsError

app = typer.Typer(
    name="visionops",
    help=(
        "Run the whole life of an image model: fetch, preprocess, train, evaluate, export,"
        " serve, watch for drift.\n\n"
        "Zero-config tour on the embedded demo:\n\n"
        "  visionops quickstart\n\n"
        "Or stage by stage:\n\n"
        "  visionops data fetch demo:shapes && visionops data preprocess data/raw/shapes\n\n"
        "  visionops train --epochs 20 --device auto\n\n"
        "  visionops serve --port 8000"
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    rich_markup_mode="rich",
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"visionops {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    verbose: Verbose = 0,
    quiet: Quiet = False,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """Root options apply to every command (each command also accepts -v and -q)."""
    setup(verbose, quiet)


for module in (
    quickstart_cli,
    data_cli,
    train_cli,
    evaluate_cli,
    export_cli,
    runs_cli,
    serve_cli,
    deploy_cli,
    predict_cli,
    drift_cli,
    config_cli,
    doctor_cli,
):
    module.register(app)
reflow_app_help(app)
install_help_style()


def main() -> None:
    """Entry point: run the app; turn visionops errors into one line and an exit code."""
    try:
        app()
    except InterruptError as exc:
        console.print(f"[yellow]interrupted:[/] {safe(exc)}", soft_wrap=True)
        sys.exit(exc.exit_code)
    except VisionOpsError as exc:
        if STATE.verbose:
            console.print_exception()
        console.print(f"[bold red]error:[/] {safe(exc)}", markup=True, soft_wrap=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]")
        sys.exit(130)
    except Exception as exc:  # a bug in visionops, not in the user's input
        if STATE.verbose:
            console.print_exception()
        console.print(
            f"[bold red]internal error:[/] {type(exc).__name__}: {safe(exc)} — rerun with -v for"
            " the traceback and report it",
            soft_wrap=True,
        )
        sys.exit(1)
