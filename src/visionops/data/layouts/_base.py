"""What every layout reader shares.

The listing a reader returns, the folder scan it reads, and the path helpers for walking
relative POSIX paths.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import ClassVar, Final

from visionops.config import Task
from visionops.imaging import IMAGE_SUFFIXES

__all__ = [
    "ACCEPTED_LAYOUTS",
    "SOURCE_FILE",
    "SPLIT_ALIASES",
    "SPLIT_NAMES",
    "FolderScan",
    "LayoutReader",
    "RawItem",
    "RawListing",
    "ReadOptions",
    "Rejection",
    "children",
    "count_reasons",
    "is_image",
    "join",
    "list_files",
    "not_an_image",
    "reason_kind",
    "relative",
    "split_index",
    "under",
]

SPLIT_NAMES: Final = ("train", "val", "test")
"""Split names in the order of their code in ``splits.npy`` (0, 1, 2)."""

SOURCE_FILE: Final = "source.json"
"""The manifest ``visionops data fetch`` writes next to the raw files."""

ACCEPTED_LAYOUTS: Final = (
    "accepted layouts: class folders (<class>/<image>, optionally inside train/val/test"
    " folders), a CSV naming image files with labels or numeric targets, MVTec AD"
    " (train/good, test/<defect>, ground_truth/<defect>/*_mask.png), or Nutrition5k"
    " (dish_<id>/camera_<X>_frame_<NNN>.jpeg + dish_metadata_cafe*.csv)"
)

SPLIT_ALIASES: Final = {"train": 0, "val": 1, "valid": 1, "validation": 1, "test": 2}


def split_index(name: str) -> int:
    """Map a split name or alias (``train``, ``val``, ``valid``, ``validation``, ``test``) to 0/1/2.

    Raises:
        KeyError: Not a split name.
    """
    return SPLIT_ALIASES[name.strip().lower()]


@dataclass(frozen=True)
class RawItem:
    """One candidate image of a raw dataset.

    Attributes:
        path: File path relative to the raw folder, POSIX separators.
        target: Class index (classification, anomaly: 0 good / 1 defect) or a tuple of
            floats (multilabel 0/1 per class, regression values in original units).
        split: 0/1/2 when the source says which split the image is in, else None.
        stratum: What splitting is stratified by (class name, label set, defect type; empty
            for regression, whose strata are computed from the targets).
        mask: Ground-truth mask path relative to the raw folder (anomaly), if any.
    """

    path: str
    target: int | tuple[float, ...]
    split: int | None = None
    stratum: str = ""
    mask: str | None = None


@dataclass(frozen=True)
class Rejection:
    """A file (or CSV row, written ``file.csv:LINE``) that was skipped, and why."""

    path: str
    reason: str


@dataclass
class RawListing:
    """What a raw folder holds, as read by :func:`visionops.data.layouts.detect`.

    Attributes:
        root: The raw folder.
        layout: ``class-folders``, ``csv``, ``mvtec`` or ``nutrition5k``.
        task: The task the items are labelled for.
        tasks: Every task this layout can provide (the first is the inferred default).
        items: Candidate images, sorted by path.
        rejected: Files skipped while reading the layout.
        class_names: Label order of the targets (classification, multilabel, anomaly).
        target_names: Regression target names.
        target_units: Regression target units (empty string if unknown).
        splits_from_source: Whether the folder itself says which split each image is in.
        carve_val_from: The source split that validation images are taken from when the
            source has no validation split (0 = train; 2 = test, as for MVTec).
        notes: Human-readable remarks on how the layout was read.
    """

    root: Path
    layout: str
    task: Task
    tasks: tuple[Task, ...]
    items: list[RawItem]
    rejected: list[Rejection]
    class_names: list[str] | None = None
    target_names: list[str] | None = None
    target_units: list[str] | None = None
    splits_from_source: bool = False
    carve_val_from: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def source_splits(self) -> list[int | None] | None:
        """Each item's split as the source gives it, or None when visionops makes the splits."""
        return [item.split for item in self.items] if self.splits_from_source else None


@dataclass(frozen=True)
class ReadOptions:
    """What the user asked of a layout reader.

    Attributes:
        task: Force this task instead of the one the layout suggests.
        camera: Nutrition5k: which camera's first frame represents a dish.
    """

    task: Task | None = None
    camera: str = "A"


@dataclass(frozen=True)
class FolderScan:
    """A raw folder's files, listed once and handed to every reader.

    Attributes:
        root: The raw folder.
        files: Every visible file, sorted relative POSIX paths (:func:`list_files`).
        prefix: The folder the layout starts in: ``""`` or the one wrapper folder that
            downloads often add (``archive/train/...``).
    """

    root: Path
    files: list[str]
    prefix: str


class LayoutReader(ABC):
    """Reads one layout. :func:`visionops.data.layouts.detect` asks each in turn."""

    layout: ClassVar[str]
    """The name recorded in :attr:`RawListing.layout`."""

    @abstractmethod
    def read(self, scan: FolderScan, options: ReadOptions) -> RawListing | None:
        """List the folder's images if it has this layout.

        Returns:
            The listing (its ``task`` may still differ from ``options.task``; the caller
            checks it and asks :meth:`retask`), or None when the folder has another layout.

        Raises:
            LayoutError: The folder has this layout but cannot be read as it is.
        """

    def retask(self, listing: RawListing, task: Task) -> RawListing:
        """Re-label a listing for another of its ``tasks`` (only some layouts can)."""
        raise AssertionError(f"unhandled task {task} for {listing.layout}")  # pragma: no cover


# --------------------------------------------------------------------------- file walking


def _visible(name: str) -> bool:
    return not name.startswith(".") and name not in {"__MACOSX", "Thumbs.db", "desktop.ini"}


def list_files(root: Path) -> list[str]:
    """Every visible file under ``root`` as sorted POSIX paths relative to it.

    Hidden files and folders (``.name``), macOS resource forks and the top-level
    ``source.json`` are left out.
    """
    found: list[str] = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if _visible(d)]
        rel_folder = Path(folder).relative_to(root)
        for name in files:
            if not _visible(name):
                continue
            rel = (rel_folder / name).as_posix()
            if rel != SOURCE_FILE:
                found.append(rel)
    return sorted(found)


def is_image(path: str) -> bool:
    """Whether a path has an image file suffix."""
    return PurePosixPath(path).suffix.lower() in IMAGE_SUFFIXES


def not_an_image(path: str) -> Rejection:
    """The rejection of a file that is not an image."""
    suffix = PurePosixPath(path).suffix.lower() or "no suffix"
    return Rejection(path, f"not an image: {suffix} is not an image file type")


def under(prefix: str, path: str) -> bool:
    """Whether ``path`` lies under the folder ``prefix`` (``""`` is the top)."""
    return not prefix or path.startswith(prefix + "/")


def relative(prefix: str, path: str) -> str:
    """``path`` relative to the folder ``prefix``."""
    return path[len(prefix) + 1 :] if prefix else path


def join(prefix: str, name: str) -> str:
    """``prefix/name``, or ``name`` at the top."""
    return f"{prefix}/{name}" if prefix else name


def content_prefix(files: Sequence[str]) -> str:
    """The folder the layout starts in: the raw folder, or its only sub-folder.

    Downloads often wrap the data in one extra folder (``archive/train/...``); one such level
    is skipped when the top holds nothing else but stray non-image, non-CSV files.
    """
    top_dirs = {f.split("/", 1)[0] for f in files if "/" in f}
    top_files = [f for f in files if "/" not in f]
    wrapper_free = not any(is_image(f) or f.lower().endswith(".csv") for f in top_files)
    if len(top_dirs) == 1 and wrapper_free:
        (only,) = top_dirs
        # A folder holding images itself is a (single) class folder, not a wrapper.
        holds_images = any(is_image(f) and f.count("/") == 1 for f in files)
        if only.lower() not in SPLIT_ALIASES and not holds_images:
            return only
    return ""


def children(files: Iterable[str], prefix: str) -> tuple[set[str], list[str]]:
    """Immediate sub-folder names and files (as full relative paths) of ``prefix``."""
    dirs: set[str] = set()
    direct: list[str] = []
    for path in files:
        if not under(prefix, path):
            continue
        rest = relative(prefix, path)
        if "/" in rest:
            dirs.add(rest.split("/", 1)[0])
        else:
            direct.append(path)
    return dirs, direct


def reason_kind(reason: str) -> str:
    """The category of a rejection reason (the text before the first colon)."""
    return reason.split(":", 1)[0].strip()


def count_reasons(rejected: Iterable[Rejection]) -> Counter[str]:
    """Count rejections by :func:`reason_kind`."""
    return Counter(reason_kind(r.reason) for r in rejected)
