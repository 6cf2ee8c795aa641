"""The one place user and data text is made safe for rich.

rich reads ``[...]`` as a style tag, so a path such as ``weird[red]dir/x.jpg``, an extra such as
``visionops[dvc]`` or a value such as ``[layer2, layer3]`` would lose its brackets. Every piece
of text that did not come from visionops' own markup goes through :func:`safe` (help, errors,
table cells, log lines) before rich renders it.
"""

from __future__ import annotations

import copy
from typing import Any

from rich import box
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
    styles, for a verdict in colour). Every table has the same rounded box as the help panels.
    No column is narrower than its longest word, so a value wraps between words and is never
    split inside one or cut with an ellipsis; the room left goes first to the columns that
    want little more, so short values stay on one line. Columns added with ``optional=True``
    are dropped, the last one first, when even one word per cell does not fit the terminal,
    and the caption says which (``--json`` has them all); when it still does not fit, each
    row is shown as a block of ``column  value`` lines, so a long word keeps its line.
    """

    def __init__(
        self, *, title: str | None = None, caption: str | None = None, **kwargs: Any
    ) -> None:
        super().__init__(
            title=Text(title) if title is not None else None,
            caption=Text(caption) if caption is not None else None,
            **{"box": box.ROUNDED, **kwargs},
        )
        self._optional: list[Column] = []
        self._stack = True

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
        too_wide = _minimum(shown, console, options) > options.max_width
        if too_wide and self._stack and self.show_header:
            shown = _stacked(self)  # every column again: stacked, they all fit
        # A title or caption wraps between words even where the console prints soft-wrapped.
        yield from Table.__rich_console__(
            shown, console, options.update(no_wrap=False, overflow=None)
        )

    def _calculate_column_widths(self, console: Console, options: ConsoleOptions) -> list[int]:
        """Each column at least its longest word; the room left shared fairly."""
        ranges = [self._measure_column(console, options, column) for column in self.columns]
        minimums = [r.minimum for r in ranges]
        spare = options.max_width - sum(minimums)
        if sum(r.maximum for r in ranges) <= options.max_width or spare < 0:
            return super()._calculate_column_widths(console, options)
        # What a column wants is room for its values on one line; a header may wrap instead.
        wants = [
            max(_body_width(self, console, options, column) - low, 0)
            for column, low in zip(self.columns, minimums, strict=True)
        ]
        return [low + extra for low, extra in zip(minimums, _share(spare, wants), strict=True)]


def _stacked(table: DataTable) -> DataTable:
    """``table`` one row per block, ``header  value`` a line: for values too wide side by side."""
    stacked = DataTable(show_header=False, box=table.box)
    stacked.title, stacked.caption = table.title, table.caption
    stacked._stack = False
    stacked.add_column("field", style="bold")
    stacked.add_column("value")
    last = len(table.columns) - 1
    for row in range(table.row_count):
        for index, column in enumerate(table.columns):
            header, cell = Text(str(column.header)), column._cells[row]
            stacked.add_row(header, cell, end_section=index == last)
    return stacked


def _body_width(table: Table, console: Console, options: ConsoleOptions, column: Column) -> int:
    """The width of ``column``'s widest value on one line, its padding included."""
    values = [Measurement.get(console, options, cell).maximum for cell in column._cells]
    return max(values, default=0) + table._get_padding_width(column._index)


def _share(total: int, wants: list[int]) -> list[int]:
    """``total`` cells shared fairly: small wants met in full, the rest split evenly."""
    given = [0] * len(wants)
    order = sorted(range(len(wants)), key=lambda i: wants[i])
    for position, index in enumerate(order):
        fair = total // (len(order) - position)
        given[index] = min(wants[index], fair)
        total -= given[index]
    return given


def _minimum(table: Table, console: Console, options: ConsoleOptions) -> int:
    return Measurement.get(console, options.update(width=10_000), table).minimum
