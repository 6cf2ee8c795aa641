"""``visionops config show``, ``visionops recipes list``, ``visionops init``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.syntax import Syntax
from rich.table import Table

from visionops.cli._common import (
    ConfigFile,
    JsonOutput,
    Overrides,
    Quiet,
    Recipe,
    Verbose,
    console,
    out,
    print_json,
    resolve_settings,
    setup,
)

config_app = typer.Typer(help="Inspect the resolved settings.", no_args_is_help=True)
recipes_app = typer.Typer(help="Shipped recipes: one per seed system plus the demos.")


@config_app.command("show")
def show(
    overrides: Overrides = None,
    config: ConfigFile = None,
    recipe: Recipe = None,
    json_output: JsonOutput = False,
    verbose: Verbose = 0,
    quiet: Quiet = False,
) -> None:
    """Print the resolved settings (defaults < recipe < visionops.yaml < --config < key=value).

    Example: visionops config show train.epochs=5 --recipe fer2013
    """
    setup(verbose, quiet)
    from visionops.config import settings_to_yaml

    settings = resolve_settings(config_file=config, overrides=overrides or [], recipe=recipe)
    if json_output:
        print_json(settings.model_dump(mode="json"))
    else:
        out.print(Syntax(settings_to_yaml(settings), "yaml", background_color="default"))


@recipes_app.command("list")
def list_recipes(json_output: JsonOutput = False) -> None:
    """List the shipped recipes.

    Example: visionops recipes list
    """
    from visionops.config import available_recipes

    recipes = available_recipes()
    if json_output:
        print_json(recipes)
        return
    table = Table(title="recipes")
    table.add_column("name", style="bold")
    table.add_column("what it is")
    for name, summary in recipes.items():
        table.add_row(name, summary)
    out.print(table)


def init(
    recipe: Annotated[str, typer.Option("--recipe", "-r", help="Recipe to start from.")] = (
        "demo-shapes"
    ),
    folder: Annotated[Path, typer.Argument(help="Project folder.")] = Path("."),
    force: Annotated[bool, typer.Option("--force", help="Overwrite existing files.")] = False,
    verbose: Verbose = 0,
    quiet: Quiet = False,
) -> None:
    """Start a project: visionops.yaml from a recipe plus dvc.yaml pipeline stages.

    Example: visionops init --recipe fruits-vegetables
    """
    setup(verbose, quiet)
    from visionops.project import init_project

    for path in init_project(folder, recipe, force=force):
        console.print(f"wrote {path}")


def register(app: typer.Typer) -> None:
    """Add ``config``, ``recipes`` and ``init``."""
    app.add_typer(config_app, name="config", rich_help_panel="Setup")
    app.add_typer(recipes_app, name="recipes", rich_help_panel="Setup")
    app.command(rich_help_panel="Setup")(init)
