"""``visionops data ...``: fetch, preprocess, info."""

from __future__ import annotations

import typer

data_app = typer.Typer(help="Get datasets and prepare them for training.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    """Add the ``data`` command group."""
    # Imported here so each stage's command module stays independent of the others.
    from visionops.cli.fetch import fetch
    from visionops.cli.preprocess import info, preprocess

    data_app.command("fetch")(fetch)
    data_app.command("preprocess")(preprocess)
    data_app.command("info")(info)
    app.add_typer(data_app, name="data", rich_help_panel="Lifecycle")
