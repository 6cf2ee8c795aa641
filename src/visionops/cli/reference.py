"""The command reference page (``docs/reference/cli.md``), rendered from the Typer app itself.

``scripts/gen_docs.py`` writes it; a test renders it again and fails when the committed page
differs, so the reference cannot go stale. The output depends only on the app's commands,
help texts, options and defaults: no terminal width, colours or paths of this machine.
"""

from __future__ import annotations

from typing import Any

import typer

from visionops.cli._help import value_type

__all__ = ["render_reference"]

_HEADER = """\
# Command reference

<!-- Generated from the Typer app by `python scripts/gen_docs.py`: do not edit by hand. -->

Every command also accepts `-h/--help`, which prints the same text in the terminal. The
options every command shares, the exit codes and the environment variables are in
[conventions](conventions.md); settings a command reads can be overridden with `key=value`
arguments ([settings](../concepts.md#settings)).
"""


def _markdown(text: str) -> str:
    """Help text as Markdown: an indented example line becomes a code block."""
    out: list[str] = []
    for line in text.splitlines():
        if line.startswith("  ") and line.strip():
            if out[-2:] == ["```", ""]:  # examples a blank line apart share one block
                del out[-1]
            if out and out[-1] == "```":
                out.pop()
            else:
                out.append("```")
            out += [line.strip(), "```"]
        else:
            out.append(line)
    return "\n".join(out)


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _is_option(param: Any) -> bool:
    return bool(param.param_type_name == "option")


def _is_flag(param: Any) -> bool:
    return bool(getattr(param, "is_flag", False) or getattr(param, "count", False))


def _default(param: Any) -> str:
    default = param.default
    if _is_flag(param) and not param.secondary_opts:
        return ""
    if default is None or default in ((), []) or (_is_flag(param) and default is False):
        return ""
    if isinstance(default, list | tuple):
        default = " ".join(str(item) for item in default)
    return f"`{default}`"


def _type(param: Any, context: Any) -> str:
    shown = value_type(param, context) or ""
    return f"`{param.metavar or shown}`".replace("|", "\\|")


def _name(param: Any, context: Any) -> str:
    if _is_option(param):
        names = ", ".join(f"`{opt}`" for opt in [*param.opts, *param.secondary_opts])
        if not _is_flag(param):
            names += f" {_type(param, context)}"
        return names
    return f"`{(param.metavar or param.name.upper())}`" + ("..." if param.nargs == -1 else "")


def _usage(path: str, command: Any) -> str:
    pieces = [path]
    if any(_is_option(p) for p in command.params):
        pieces.append("[OPTIONS]")
    for param in command.params:
        if not _is_option(param):
            name = (param.metavar or param.name.upper()) + ("..." if param.nargs == -1 else "")
            pieces.append(name if param.required else f"[{name}]")
    if hasattr(command, "commands"):
        pieces.append("COMMAND [ARGS]...")
    return " ".join(pieces)


def _what(param: Any) -> str:
    """Help text plus what ``--help`` adds: required, environment variable."""
    text = _cell(param.help or "")
    if param.required:
        text += " **Required.**"
    envvar = getattr(param, "envvar", None)
    if envvar and getattr(param, "show_envvar", False):
        text += f" Environment variable: `{envvar}`."
    return text


def _section(path: str, command: Any, level: int) -> list[str]:
    lines = [f"{'#' * level} `{path}`", ""]
    if command.help:
        lines += [_markdown(command.help.strip()), ""]
    lines += ["```", _usage(path, command), "```", ""]
    params = [p for p in command.params if not p.hidden and p.name != "help"]
    if params:
        context = command.make_context(path, [], resilient_parsing=True)
        lines += ["| argument / option | default | what it does |", "|---|---|---|"]
        lines += [f"| {_name(p, context)} | {_default(p)} | {_what(p)} |" for p in params]
        lines.append("")
    for name, sub in getattr(command, "commands", {}).items():
        if not sub.hidden:
            lines += _section(f"{path} {name}", sub, min(level + 1, 4))
    return lines


def render_reference(app: typer.Typer) -> str:
    """Render every command of ``app`` (recursively) as one Markdown page.

    Args:
        app: The root Typer app (``visionops.cli.app.app``).

    Returns:
        The page, ending with one newline.
    """
    root: Any = typer.main.get_command(app)
    lines = [_HEADER]
    lines += ["## `visionops`", "", _markdown((root.help or "").strip()), ""]
    lines += ["```", "visionops [OPTIONS] COMMAND [ARGS]...", "```", ""]
    for name, command in root.commands.items():
        if not command.hidden:
            lines += _section(f"visionops {name}", command, 2)
    return "\n".join(lines).rstrip("\n") + "\n"


RECIPE_START = "<!-- recipe-settings:start (generated by `python scripts/gen_docs.py`) -->"
RECIPE_END = "<!-- recipe-settings:end -->"


def _yaml(value: object) -> str:
    import yaml

    return str(yaml.safe_dump(value, default_flow_style=True)).removesuffix("\n...\n").strip()


def render_recipe_settings(name: str, *, with_yaml: bool = True) -> str:
    """The generated block of a recipe page: what ``visionops recipes show NAME`` prints.

    Args:
        name: A shipped recipe name.
        with_yaml: Also include the recipe file itself (unless the page already does).

    Returns:
        The block, between its start and end markers, ending with one newline.
    """
    from visionops.recipes import describe_recipe

    recipe = describe_recipe(name)
    lines = [
        RECIPE_START,
        "",
        f"`{name}`: {recipe.summary}",
        "",
        "| setting | value | default | what it does |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| `{s.key}` | `{_cell(_yaml(s.value))}` | `{_cell(_yaml(s.default))}` | {_cell(s.help)} |"
        for s in recipe.settings
    ]
    lines += [
        "",
        "```bash",
        f"visionops recipes show {name}      # the same table in the terminal",
        f"visionops init --recipe {name}     # a project: visionops.yaml + dvc.yaml",
        "```",
        "",
    ]
    if with_yaml:
        lines += ["```yaml", f'--8<-- "src/visionops/recipes/{name}.yaml"', "```", ""]
    lines.append(RECIPE_END)
    return "\n".join(lines) + "\n"


def render_recipe_page(name: str, current: str | None) -> str:
    """A recipe page with its generated block brought up to date.

    Args:
        name: A shipped recipe name.
        current: The page as committed (None: no page yet, one is started).

    Returns:
        The page: the hand-written text around the block kept, the block regenerated.
    """
    include = f'--8<-- "src/visionops/recipes/{name}.yaml"'
    outside = current.split(RECIPE_START)[0] + current.split(RECIPE_END)[-1] if current else ""
    block = render_recipe_settings(name, with_yaml=include not in outside)
    if current is None or RECIPE_START not in current:
        from visionops.recipes import describe_recipe

        head = current if current is not None else f"# {name}\n\n{describe_recipe(name).summary}.\n"
        return head.rstrip("\n") + "\n\n## Settings\n\n" + block
    before, rest = current.split(RECIPE_START, 1)
    after = rest.split(RECIPE_END, 1)[1] if RECIPE_END in rest else ""
    return before + block.rstrip("\n") + after.rstrip("\n") + "\n"
