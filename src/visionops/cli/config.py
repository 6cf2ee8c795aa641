"""``visionops config show``, ``visionops recipes list``, ``visionops init``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.syntax import Syntax

from visionops.cli._common import (
    ConfigFile,
    JsonOutput,
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

config_app = typer.Typer(help="Inspect the resolved settings.", no_args_is_help=True)
recipes_app = typer.Typer(help="Shipped recipes: one per seed system plus the demos.")


ShowArgs = Annotated[
    list[str] | None,
    typer.Argument(
        help="KEY (a setting such as train.epochs, or a section such as train) to show only"
        " that one and the layer that set it; then key=value overrides.",
        show_default=False,
        metavar="[KEY] KEY=VALUE",
    ),
]


@config_app.command("show")
def show(
    args: ShowArgs = None,
    config: ConfigFile = None,
    recipe: Recipe = None,
    json_output: JsonOutput = False,
    verbose: Verbose = 0,
    quiet: Quiet = False,
) -> None:
    """Print the resolved settings (defaults < recipe < visionops.yaml < --config < key=value).

    With a KEY, print that setting and which layer set it: default, recipe NAME,
    visionops.yaml, --config FILE or key=value.

    Example: visionops config show train.epochs=5 --recipe fer2013

    Example: visionops config show train.epochs
    """
    setup(verbose, quiet)
    from visionops.config import explain_setting, settings_to_yaml

    keys = [item for item in args or [] if "=" not in item]
    overrides = [item for item in args or [] if "=" in item]
    if len(keys) > 1:
        raise typer.BadParameter(
            f"one KEY at a time, got {len(keys)}: {' '.join(keys)} (overrides are key=value)",
            param_hint="KEY",
        )
    if keys:
        source = explain_setting(keys[0], recipe=recipe, config_file=config, overrides=overrides)
        if json_output:
            print_json({"key": source.key, "value": source.value, "layer": source.layer})
            return
        # The layer as a YAML comment, so the output is still YAML.
        text = settings_to_yaml_value(source.key, source.value).rstrip("\n")
        if isinstance(source.value, dict):
            text = f"# set by: {source.layer}\n{text}"
        else:
            text = f"{text}  # set by: {source.layer}"
        out.print(Syntax(text, "yaml", background_color="default"))
        return
    settings = resolve_settings(config_file=config, overrides=overrides, recipe=recipe)
    if json_output:
        print_json(settings.model_dump(mode="json"))
    else:
        out.print(Syntax(settings_to_yaml(settings), "yaml", background_color="default"))


def settings_to_yaml_value(key: str, value: object) -> str:
    """``key: value`` as YAML (a section as its nested block)."""
    import yaml

    return yaml.safe_dump({key: value}, sort_keys=False)


@recipes_app.command("list")
def list_recipes(
    json_output: JsonOutput = False, verbose: Verbose = 0, quiet: Quiet = False
) -> None:
    """List the shipped recipes.

    Example: visionops recipes list
    """
    setup(verbose, quiet)
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


@recipes_app.command("show")
def show_recipe(
    name: Annotated[
        str, typer.Argument(help="A recipe name (`visionops recipes list`).", metavar="RECIPE")
    ],
    json_output: JsonOutput = False,
    verbose: Verbose = 0,
    quiet: Quiet = False,
) -> None:
    """Print a recipe: every setting it changes, its value, the default and what it does.

    Example: visionops recipes show movie-posters
    """
    setup(verbose, quiet)
    from visionops.recipes import describe_recipe

    recipe = describe_recipe(name)
    if json_output:
        print_json([vars(setting) for setting in recipe.settings])
        return
    table = Table(title=f"{name}: {recipe.summary}")
    table.add_column("setting", style="bold")
    table.add_column("value")
    table.add_column("what it does")
    table.add_column("default", optional=True)
    for setting in recipe.settings:
        table.add_row(
            setting.key, _yaml_value(setting.value), setting.help, _yaml_value(setting.default)
        )
    out.print(table)
    out.print(f"start a project with it: visionops init --recipe {safe(name)}")


def _yaml_value(value: object) -> str:
    """A setting value as YAML writes it (``true``, ``null``, ``0.001``)."""
    import yaml

    return str(yaml.safe_dump(value, default_flow_style=True)).removesuffix("\n...\n").strip()


def init(
    recipe: Annotated[str, typer.Option("--recipe", "-r", help="Recipe to start from.")] = (
        "demo-shapes"
    ),
    folder: Annotated[
        Path, typer.Argument(help="Project folder (created if missing).", metavar="FOLDER")
    ] = Path("."),
    force: Annotated[bool, typer.Option("--force", "-f", help="Overwrite existing files.")] = False,
    remote: Annotated[
        str | None,
        typer.Option(
            "--remote",
            help="Default DVC remote, e.g. gs://bucket/path (needs `pip install 'dvc[gs]'`;"
            " default: none).",
        ),
    ] = None,
    json_output: JsonOutput = False,
    verbose: Verbose = 0,
    quiet: Quiet = False,
) -> None:
    """Start a project: visionops.yaml from a recipe plus dvc.yaml pipeline stages.

    The dvc.yaml stages (fetch, preprocess, train, eval, export) track the visionops.yaml
    keys each one reads, so `dvc repro` re-runs only what a change affects. A folder that is
    not a DVC repository yet gets `dvc init` when DVC is installed and the folder is in git;
    otherwise init says the next step. Nothing is written when a step fails.

    Example: visionops init --recipe fruits-vegetables --remote gs://my-bucket/visionops
    """
    setup(verbose, quiet)
    from visionops.project import init_project

    result = init_project(folder, recipe, force=force, remote=remote)
    if json_output:
        print_json(
            {
                "written": [str(path) for path in result.written],
                "dvc_initialised": result.dvc_initialised,
                "next_step": result.next_step,
            }
        )
        return
    if result.dvc_initialised:
        console.print(f"ran dvc init in {safe(folder)}")
    for path in result.written:
        console.print(f"wrote {safe(path)}")
    if result.next_step is not None:
        console.print(f"[yellow]next:[/] {safe(result.next_step)}")
    else:
        console.print("next: dvc repro")


def register(app: typer.Typer) -> None:
    """Add ``config``, ``recipes`` and ``init``."""
    app.add_typer(config_app, name="config", rich_help_panel="Setup")
    app.add_typer(recipes_app, name="recipes", rich_help_panel="Setup")
    app.command(rich_help_panel="Setup")(init)
