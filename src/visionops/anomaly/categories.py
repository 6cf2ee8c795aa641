"""Choosing one category of a multi-category MVTec AD download (``anomaly.category``).

The MVTec AD archive holds fifteen categories side by side (``carpet/``, ``bottle/``, ...),
each an MVTec tree (``train/good``, ``test/<defect>``, ``ground_truth/<defect>``); a model is
built for one of them.

Examples:
    >>> select_category(Path("data/raw/mvtec-ad"), "carpet")  # doctest: +SKIP
    PosixPath('data/raw/mvtec-ad/mvtec_anomaly_detection/carpet')
"""

from __future__ import annotations

import difflib
from pathlib import Path

from visionops.errors import DatasetNotFoundError

__all__ = ["find_categories", "select_category"]

_MAX_DEPTH = 3


def _is_category(folder: Path) -> bool:
    names = {child.name.lower() for child in folder.iterdir() if child.is_dir()}
    return {"train", "test"} <= names


def find_categories(raw: Path) -> dict[str, Path]:
    """MVTec category folders under ``raw`` (a few levels deep), by folder name."""
    found: dict[str, Path] = {}
    level = [raw]
    for _ in range(_MAX_DEPTH):
        following: list[Path] = []
        for folder in level:
            for child in sorted(p for p in folder.iterdir() if p.is_dir()):
                if _is_category(child):
                    found.setdefault(child.name, child)
                else:
                    following.append(child)
        level = following
    return found


def select_category(raw: Path, category: str) -> Path:
    """The folder of ``category`` inside the raw download ``raw``.

    Raises:
        DatasetNotFoundError: No such category; the message lists the ones present.
    """
    if _is_category(raw) and raw.name.lower() == category.lower():
        return raw
    categories = find_categories(raw)
    by_lower = {name.lower(): path for name, path in categories.items()}
    if category.lower() in by_lower:
        return by_lower[category.lower()]
    close = difflib.get_close_matches(category, list(categories), n=1)
    hint = f"did you mean '{close[0]}'? " if close else ""
    present = ", ".join(sorted(categories)) or "none"
    raise DatasetNotFoundError(
        f"{raw} has no MVTec AD category '{category}' — {hint}set anomaly.category to one of:"
        f" {present}"
    )
