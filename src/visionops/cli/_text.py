"""The one place user and data text is made safe for rich.

rich reads ``[...]`` as a style tag, so a path such as ``weird[red]dir/x.jpg``, an extra such as
``visionops[dvc]`` or a value such as ``[layer2, layer3]`` would lose its brackets. Every piece
of text that did not come from visionops' own markup goes through :func:`safe` (help, errors,
table cells, log lines) before rich renders it.
"""

from __future__ import annotations

import copy
from typing import Any

from rich.console import Console, ConsoleOptions, RenderableType, RenderResult
from rich.markup import escape
from rich.measure import Measurement
from rich.table import Column, Table
from rich.text import Text

__all__ = ["DataTable", "safe"]


def safe(value: object) -> str:
    r"""``value`` as text that rich prints exactly as written (its markup escaped).

    Examples:
        >>> safe("weird[red]dir/x.jpg")
        'weird\\[red]dir/x.jpg'
    """
    return escape(str(value))


class DataTable(Table):
    """A rich table of user and data text: never read as markup, never cut.

    A ``str`` cell, the title and the caption are plain text (a ``Text`` cell keeps its own
    styles, for a verdict in colour). Every column folds a value that does not fit instead of
    cutting it with an ellipsis; columns added with ``optional=True`` are dropped, the last
    one first, when even one word per cell does not fit the terminal, and the caption says
    which (``--json`` has them all).
    """

    def __init__(
        self, *, title: str | None = None, caption: str | None = None, **kwargs: Any
    ) -> None:
        super().__init__(
            title=Text(title) if title is not None else None,
            caption=Text(caption) if caption is not None else None,
            **kwargs,
        )
        self._optional: list[Column] = []

    def add_column(  # type: ignore[override]
        self, header: str = "", *, optional: bool = False, **kwargs: Any
    ) -> None:
        """Add a column; ``optional`` columns give way on a narrow terminal."""
        kwargs.setdefault("overflow", "fold")
        super().add_column(Text(header), **kwargs)
        if optional:
            self._optional.append(self.columns[-1])

    def add_row(self, *cells: RenderableType | None, **kwargs: Any) -> None:
        """Add a row; ``str`` cells are plain text."""
        super().add_row(*(Text(c) if isinstance(c, str) else c for c in cells), **kwargs)

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        shown = copy.copy(self)
        shown.columns = list(self.columns)
        optional = list(self._optional)
        dropped: list[str] = []
        while optional and _minimum(shown, console, options) > options.max_width:
            column = optional.pop()
            shown.columns.remove(column)
            dropped.insert(0, str(column.header))
        if dropped:
            note = f"not shown at this width: {', '.join(dropped)} (--json has them)"
            shown.caption = Text(note if self.caption is None else f"{self.caption}\n{note}")
        yield from Table.__rich_console__(shown, console, options)


def _minimum(table: Table, console: Console, options: ConsoleOptions) -> int:
    return Measurement.get(console, options.update(width=10_000), table).minimum
