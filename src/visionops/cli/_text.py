"""The one place user and data text is made safe for rich.

rich reads ``[...]`` as a style tag, so a path such as ``weird[red]dir/x.jpg``, an extra such as
``visionops[dvc]`` or a value such as ``[layer2, layer3]`` would lose its brackets. Every piece
of text that did not come from visionops' own markup goes through :func:`safe` (help, errors,
table cells, log lines) before rich renders it.
"""

from __future__ import annotations

from rich.markup import escape

__all__ = ["safe"]


def safe(value: object) -> str:
    """``value`` as text that rich prints exactly as written (its markup escaped).

    Examples:
        >>> safe("weird[red]dir/x.jpg")
        'weird\\\\[red]dir/x.jpg'
    """
    return escape(str(value))
