"""Recognise the layout of a raw dataset folder and list its items.

One reader per layout, asked in this order by :func:`detect`, which returns a
:class:`RawListing`: every candidate image with its target and source split, plus every file
that was skipped and why. Nothing is decoded here; :mod:`visionops.data.preprocess` decodes the
listed images.

- **Nutrition5k** (:mod:`.nutrition5k`):
  ``dish_<id>/[frames_sampled30/]camera_<X>_frame_<NNN>.jpeg`` with the ragged
  ``dish_metadata_cafe1.csv``/``cafe2.csv`` holding the five totals per dish.
- **MVTec AD** (:mod:`.mvtec`): ``train/good``, ``test/<defect|good>``,
  ``ground_truth/<defect>/<name>_mask.png``.
- **CSV** (:mod:`.csv`): a CSV naming image files with labels or targets.
- **class folders** (:mod:`.folders`): ``<class>/<image>``, optionally under split folders.

A new layout is a new :class:`LayoutReader` in its own module, added to :data:`READERS`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from visionops.config import Task
from visionops.data.layouts._base import (
    ACCEPTED_LAYOUTS,
    SOURCE_FILE,
    SPLIT_NAMES,
    FolderScan,
    LayoutReader,
    RawItem,
    RawListing,
    ReadOptions,
    Rejection,
    content_prefix,
    count_reasons,
    is_image,
    list_files,
    reason_kind,
    split_index,
)
from visionops.data.layouts.csv import CsvReader
from visionops.data.layouts.folders import ClassFoldersReader
from visionops.data.layouts.mvtec import MvtecReader
from visionops.data.layouts.nutrition5k import (
    NUTRITION_TARGETS,
    NUTRITION_UNITS,
    Nutrition5kReader,
)
from visionops.errors import DatasetNotFoundError, LayoutError

__all__ = [
    "ACCEPTED_LAYOUTS",
    "NUTRITION_TARGETS",
    "NUTRITION_UNITS",
    "READERS",
    "SOURCE_FILE",
    "SPLIT_NAMES",
    "FolderScan",
    "LayoutReader",
    "RawItem",
    "RawListing",
    "ReadOptions",
    "Rejection",
    "count_reasons",
    "detect",
    "list_files",
    "reason_kind",
    "split_index",
]

READERS: Final[tuple[LayoutReader, ...]] = (
    Nutrition5kReader(),
    MvtecReader(),
    CsvReader(),
    ClassFoldersReader(),
)
"""Asked in order; the first that recognises a folder reads it. The most specific come first:
an MVTec or Nutrition5k folder would also pass for class folders."""


def _check_task(reader: LayoutReader, listing: RawListing, task: Task | None) -> RawListing:
    if task is None or task == listing.task:
        return listing
    if task not in listing.tasks:
        supported = " or ".join(listing.tasks)
        raise LayoutError(
            f"{listing.root} has the {listing.layout} layout, which provides {supported}, not"
            f" {task} — use --task {listing.tasks[0]} or arrange the files for {task}"
        )
    return reader.retask(listing, task)


def detect(raw: Path, *, task: Task | None = None, camera: str = "A") -> RawListing:
    """Detect the layout of a raw folder and list its images with their targets.

    Args:
        raw: The raw dataset folder.
        task: Force this task instead of the one the layout suggests.
        camera: Nutrition5k layout: which camera's first frame represents a dish.

    Returns:
        The listing, items sorted by path.

    Raises:
        DatasetNotFoundError: ``raw`` does not exist or is not a folder.
        LayoutError: The folder is empty, its layout is not one of the accepted ones, or the
            layout cannot provide ``task``.

    Examples:
        >>> listing = detect(Path("data/raw/shapes"))  # doctest: +SKIP
        >>> listing.layout, listing.task
        ('class-folders', 'classification')
    """
    if not raw.exists():
        raise DatasetNotFoundError(
            f"no raw dataset at {raw} — check the path or run `visionops data fetch SOURCE`"
            " (e.g. `visionops data fetch demo:shapes`)"
        )
    if not raw.is_dir():
        raise DatasetNotFoundError(
            f"{raw} is a file, not a folder — unpack it with `visionops data fetch {raw}`"
        )
    files = list_files(raw)
    if not files:
        raise LayoutError(f"{raw} is empty — put the images in it; {ACCEPTED_LAYOUTS}")
    scan = FolderScan(root=raw, files=files, prefix=content_prefix(files))
    options = ReadOptions(task=task, camera=camera)
    for reader in READERS:
        listing = reader.read(scan, options)
        if listing is not None:
            return _check_task(reader, listing, task)
    images = sum(is_image(f) for f in files)
    what = (
        f"{images} images but no class folders or labelling CSV"
        if images
        else f"{len(files)} files and no images"
    )
    raise LayoutError(f"cannot read the layout of {raw}: {what}; {ACCEPTED_LAYOUTS}")
