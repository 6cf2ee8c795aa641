"""Logging with loguru: to the console (through the CLI's sink) and into artifact folders."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

from loguru import logger

__all__ = ["configure_logging", "log_to_file", "logger"]

_FILE_FORMAT = "{time:YYYY-MM-DD HH:mm:ss.SSS} | {level:<7} | {name}:{line} | {message}"


def configure_logging(sink: Callable[[str], None], level: str = "INFO") -> None:
    """Send log records at ``level`` and above to ``sink`` (one formatted line each).

    Args:
        sink: Called with each formatted message (the CLI prints it through rich).
        level: Loguru level name: DEBUG, INFO, WARNING, ERROR.
    """
    logger.remove()
    logger.add(sink, level=level, format="{message}", colorize=False)


@contextlib.contextmanager
def log_to_file(path: Path, level: str = "DEBUG") -> Iterator[None]:
    """Also write every record to ``path`` while the block runs.

    Args:
        path: The log file; its folder is created.
        level: Lowest level written to the file.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logger.add(path, level=level, format=_FILE_FORMAT, enqueue=False)
    try:
        yield
    finally:
        logger.remove(handler)
