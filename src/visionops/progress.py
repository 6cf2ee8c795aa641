"""A progress-reporting protocol, so the core can report progress without importing rich.

The CLI passes a rich-backed reporter; library callers and tests get :data:`NULL_PROGRESS`.
"""

from __future__ import annotations

from typing import Any, Protocol

__all__ = ["NULL_PROGRESS", "ProgressReporter", "ProgressTask"]


class ProgressTask(Protocol):
    """One bar: advance it, optionally updating live fields (``loss=0.3``)."""

    def advance(self, amount: float = 1, **fields: Any) -> None:
        """Move the bar forward and update its live fields."""

    def close(self) -> None:
        """Finish the bar."""


class ProgressReporter(Protocol):
    """Something that can start progress bars."""

    def start(self, description: str, total: float | None = None) -> ProgressTask:
        """Start a bar of ``total`` steps (None: unknown length)."""
        ...


class _NullTask:
    def advance(self, amount: float = 1, **fields: Any) -> None:
        pass

    def close(self) -> None:
        pass


class _NullProgress:
    def start(self, description: str, total: float | None = None) -> ProgressTask:
        return _NullTask()


NULL_PROGRESS: ProgressReporter = _NullProgress()
