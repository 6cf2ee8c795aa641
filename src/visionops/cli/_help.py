"""Help text that wraps as paragraphs at any terminal width.

Docstrings are written with hard line breaks at 100 columns; rich keeps those breaks, so at
another width a sentence breaks mid-line. :func:`reflow_app_help` joins the lines of each
paragraph once, at start-up, and keeps what must stay on its own line (indented examples,
list items).
"""

from __future__ import annotations

import inspect
import re

import typer

__all__ = ["reflow", "reflow_app_help"]

_KEEP_LINE = re.compile(r"^(\s+|[-*•] |\d+\. )")


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
        else " ".join(line.strip() for line in paragraph.splitlines())
        for paragraph in paragraphs
    ]
    return "\n\n".join(joined)


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
