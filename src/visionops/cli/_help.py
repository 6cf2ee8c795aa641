r"""Help text that wraps as paragraphs at any terminal width and shows text as written.

Docstrings are written with hard line breaks at 100 columns; rich keeps those breaks, so at
another width a sentence breaks mid-line. :func:`reflow_app_help` joins the lines of each
paragraph once, at start-up, and keeps what must stay on its own line (indented examples,
list items).

:func:`install_help_style` makes typer's rich help honest: help text is plain text (``[dvc]``
stays ``[dvc]``, through :func:`visionops.cli._text.safe`), a flag or a ``-v`` count shows no
value type, and an indented example line is shown as code, indented: where it does not fit
the terminal it continues on the next line after a shell ``\`` (between an option and the
next, never inside one), so a copied example still runs. A list of choices
(``<classification|multilabel|...>``) wraps after a ``|``, never inside a value.
"""

from __future__ import annotations

import inspect
import re
from typing import Any

import typer
import typer.core
import typer.rich_utils
from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.measure import Measurement
from rich.padding import Padding
from rich.text import Text

from visionops.cli._text import safe

__all__ = ["example_lines", "install_help_style", "reflow", "reflow_app_help"]

_EXAMPLE_INDENT = 4
_CONTINUATION = " \\"
_CONTINUATION_INDENT = "  "
_NAMES_MAX_WIDTH = 30

_KEEP_LINE = re.compile(r"^(\s+|[-*•] |\d+\. )")
_EXAMPLE = re.compile(r"^(Examples?): (visionops .*)$")


def reflow(text: str | None) -> str | None:
    r"""Join the hard-wrapped lines of each paragraph of ``text``.

    Paragraphs are separated by blank lines. A paragraph whose lines are indented or are list
    items keeps its line breaks.

    Examples:
        >>> reflow("one\\ntwo\\n\\n  $ cmd a\\n  $ cmd b")
        'one two\\n\\n  $ cmd a\\n  $ cmd b'
    """
    if text is None:
        return None
    paragraphs = re.split(r"\n\s*\n", inspect.cleandoc(text))
    joined = [
        paragraph
        if any(_KEEP_LINE.match(line) for line in paragraph.splitlines())
        else _example(" ".join(line.strip() for line in paragraph.splitlines()))
        for paragraph in paragraphs
    ]
    return "\n\n".join(joined)


def _example(paragraph: str) -> str:
    """``Example: visionops ...`` as a heading and an indented command line (shown as code)."""
    match = _EXAMPLE.match(paragraph)
    if match is None:
        return paragraph
    return f"{match.group(1)}:\n  {match.group(2)}"


def reflow_app_help(app: typer.Typer) -> None:
    """Reflow the help of every command and group of ``app``, recursively."""
    app.info.help = reflow(app.info.help if isinstance(app.info.help, str) else None)
    for command in app.registered_commands:
        doc = command.help or (inspect.getdoc(command.callback) if command.callback else None)
        command.help = reflow(doc)
    for group in app.registered_groups:
        if group.typer_instance is not None:
            reflow_app_help(group.typer_instance)
        if isinstance(group.help, str):
            group.help = reflow(group.help)


def example_lines(command: str, width: int) -> list[str]:
    r"""``command`` as lines of at most ``width`` characters, joined by shell continuations.

    A command that does not fit breaks after each ``&&`` and then between words, before an
    option (an option keeps its value); every line but the last ends with `` \``, and the
    ones after the first are indented, so the lines pasted into a shell run ``command``. A
    single word wider than ``width`` stays whole on its own line.

    Examples:
        >>> example_lines("visionops train --epochs 20 --device cuda", 30)
        ['visionops train --epochs 20 \\', '  --device cuda']
    """
    if len(command) <= width:
        return [command]
    lines: list[str] = []
    segments = command.split(" && ")
    for number, segment in enumerate(segments):
        last_segment = number == len(segments) - 1
        units = _units(segment)
        if not last_segment:
            units[-1] += " &&"
        current = units[0] if not lines else _CONTINUATION_INDENT + units[0]
        for index, unit in enumerate(units[1:], start=1):
            ends = last_segment and index == len(units) - 1
            room = width if ends else width - len(_CONTINUATION)
            if len(current) + 1 + len(unit) <= room:
                current += f" {unit}"
            else:
                lines.append(current)
                current = _CONTINUATION_INDENT + unit
        lines.append(current)
    return [line + _CONTINUATION for line in lines[:-1]] + lines[-1:]


def _units(segment: str) -> list[str]:
    """The words of ``segment``, an option and its value kept together."""
    units: list[str] = []
    for word in segment.split():
        value_of_option = units and units[-1].startswith("-") and " " not in units[-1]
        if value_of_option and not word.startswith("-"):
            units[-1] += f" {word}"
        else:
            units.append(word)
    return units


class _Example:
    r"""An example command shown as code: indented, continued with `` \`` where it must."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        width = max(options.max_width - _EXAMPLE_INDENT, 1)
        for line in example_lines(self.command, width):
            text = Text(line, style="bold", overflow="fold")
            yield Padding(text, (0, 0, 0, _EXAMPLE_INDENT))

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        longest = max(len(word) for word in self.command.split())
        return Measurement(longest + _EXAMPLE_INDENT, len(self.command) + _EXAMPLE_INDENT)


def _plain_help(*, text: str, style: str = "", markup_mode: Any = None) -> RenderableType:
    """Help text as written (never rich markup), indented example lines shown as code."""
    del markup_mode  # help is plain text in every mode
    text = text.strip("\n")  # not dedented: an example's indent is what marks it
    parts: list[RenderableType] = []
    prose: list[str] = []

    def flush() -> None:
        if prose:
            prose_text = Text.from_markup(safe("\n".join(prose)), style=style)
            parts.append(typer.rich_utils.highlighter(prose_text))
            prose.clear()

    for line in text.splitlines():
        if line.startswith((" ", "\t")) and line.strip():
            flush()
            parts.append(_Example(line.strip()))
        else:
            prose.append(line)
    flush()
    return parts[0] if len(parts) == 1 else Group(*parts)


def value_type(param: Any, ctx: Any) -> str | None:
    """What ``param`` takes, as help shows it: None for a flag or a ``-v`` count.

    A number range is folded in (``<int ≥1>``, ``<float 0..1>``) so the type stays short.
    """
    if getattr(param, "is_flag", False) or getattr(param, "count", False):
        return None
    shown = _ORIGINAL_VALUE_TYPE(param, ctx)
    low, high = getattr(param, "min", None), getattr(param, "max", None)
    if shown and (low is not None or high is not None) and " range" in shown:
        bound = f"≥{low}" if high is None else (f"≤{high}" if low is None else f"{low}..{high}")
        shown = shown.replace(" range>", f" {bound}>")
    return shown


_ORIGINAL_VALUE_TYPE = typer.core.TyperOption.display_type_rich


def _names(param: Any, ctx: Any) -> Text:
    """``--long/--no-long, -s <type>`` for an option; ``NAME`` for an argument."""
    if isinstance(param, typer.core.TyperArgument):
        return Text(param.display_name_raw, style=typer.rich_utils.STYLE_OPTION)
    names = Text()
    longs = [o for o in param.opts if o.startswith("--")]
    shorts = [o for o in param.opts if not o.startswith("--")]
    names.append(" / ".join(longs), style=typer.rich_utils.STYLE_OPTION)
    for negative in param.secondary_opts:
        names.append(" / ")
        names.append(negative, style=typer.rich_utils.STYLE_NEGATIVE_OPTION)
    if shorts:
        names.append(", ")
        names.append(", ".join(shorts), style=typer.rich_utils.STYLE_SWITCH)
    shown = value_type(param, ctx)
    if shown:
        pieces = _choice_lines(shown, len(names.plain) + 1)
        names.append("\n" if pieces[0] == "" else " ")
        names.append("\n".join(p for p in pieces if p), style=typer.rich_utils.STYLE_TYPES)
    return names


def _choice_lines(shown: str, used: int) -> list[str]:
    """``<a|b|c>`` as lines that fit the names column, broken after a ``|``.

    The first line continues the names (``used`` characters already on it); an empty first
    piece means the type starts on a line of its own.
    """
    if used + len(shown) <= _NAMES_MAX_WIDTH or "|" not in shown:
        return [shown]
    pieces = [f"{choice}|" for choice in shown.split("|")]
    pieces[-1] = pieces[-1].removesuffix("|")
    lines = [""]
    room = _NAMES_MAX_WIDTH
    for piece in pieces:
        if lines[-1] and len(lines[-1]) + len(piece) > room:
            lines.append("")
        lines[-1] += piece
    return ["", *lines]


def _options_panel(
    *, name: str, params: list[Any], ctx: Any, markup_mode: Any, console: Any
) -> None:
    """Two columns, names with their type and then help, so help keeps its width at 80."""
    from rich.panel import Panel
    from rich.table import Table

    if not params:
        return
    table = Table(
        show_header=False, expand=True, box=None, pad_edge=False, padding=(0, 1), highlight=False
    )
    table.add_column(max_width=_NAMES_MAX_WIDTH, overflow="fold")
    table.add_column(ratio=1, overflow="fold")
    for param in params:
        table.add_row(
            _names(param, ctx),
            typer.rich_utils._get_parameter_help(param=param, ctx=ctx, markup_mode=markup_mode),
        )
    console.print(
        Panel(
            table,
            border_style=typer.rich_utils.STYLE_OPTIONS_PANEL_BORDER,
            title=name,
            title_align=typer.rich_utils.ALIGN_OPTIONS_PANEL,
        )
    )


def _usage_name(self: Any) -> str:
    """A positional in the usage line: ``RECIPE`` if required, ``[RUN]`` if not."""
    name = str(self.display_name_raw)
    name = name if self.required else f"[{name}]"
    return name + ("..." if self.nargs != 1 else "")


_QUOTED_OPTION = re.compile(r"'(-{1,2}[\w-]+)'(?: / '(-{1,2}[\w-]+)')?")


def usage_error_line(message: str, command_path: str | None) -> str:
    """A usage error as visionops' one line: ``error: what is wrong — see `CMD -h```.

    Click's wording is kept, but options are written as typed (``--epochs/-e``, not
    ``'--epochs' / '-e'``) and pydantic's ``Value error,`` prefix is dropped.

    Examples:
        >>> usage_error_line("Invalid value for '--quantize': Value error, 'int4' is not one"
        ...     " of 'int8', 'none'.", "vo")
        "error: invalid value for --quantize: 'int4' is not one of 'int8', 'none' — see `vo -h`"
    """
    text = " ".join(message.replace("Value error, ", "").split()).rstrip(".")
    text = _QUOTED_OPTION.sub(lambda m: "/".join(filter(None, m.groups())), text)
    text = (text[:1].lower() + text[1:]).replace(". Did you mean", "; did you mean")
    return f"error: {text}" + (f" — see `{command_path} -h`" if command_path else "")


def _usage_error(self: Any) -> None:
    """Print a click usage error as one line on stderr, like every other visionops error."""
    if type(self).__name__ == "NoArgsIsHelpError":
        return
    from visionops.cli._common import console

    ctx = getattr(self, "ctx", None)
    line = usage_error_line(self.format_message(), _command_path(ctx) if ctx else None)
    console.print(Text(line), soft_wrap=True)


def _command_path(ctx: Any) -> str:
    """``visionops runs compare``, however the program was started (``python -m visionops``)."""
    names = []
    while ctx.parent is not None:
        names.append(ctx.info_name)
        ctx = ctx.parent
    return " ".join(["visionops", *reversed(names)])


def install_help_style() -> None:
    """Make typer's rich help show plain text, no value type on flags, examples as code.

    Usage errors (an unknown command or flag, a bad flag value) are printed as one
    ``error:`` line too, not in a box.
    """
    typer.rich_utils.rich_format_error = _usage_error
    typer.rich_utils._make_rich_text = _plain_help  # type: ignore[assignment]
    typer.core.TyperOption.display_type_rich = value_type  # type: ignore[method-assign,assignment]
    typer.core.TyperArgument._usage_display_name = _usage_name  # type: ignore[method-assign]
    typer.rich_utils._print_options_panel = _options_panel
