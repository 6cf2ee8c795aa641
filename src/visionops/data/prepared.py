"""Read a prepared dataset (``data/prepared/<name>/``, see ``docs/artifacts.md``).

:meth:`PreparedDataset.open` validates the manifest and the arrays and memory-maps the
images, so opening a dataset of any size is instant and training reads only the pages it
touches. This module never imports torch.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, cast

import numpy as np
from numpy.typing import NDArray

from visionops.artifacts import PreparedManifest
from visionops.config import Settings, Task
from visionops.data.layouts import Rejection
from visionops.errors import ArtifactError, DatasetNotFoundError
from visionops.tasks import TASKS, get_task

__all__ = [
    "PREPARED_FILES",
    "SPLIT_CODES",
    "PreparedDataset",
    "PreparedItem",
    "find_prepared",
    "read_rejected",
]

SPLIT_CODES: Final = {"train": 0, "val": 1, "test": 2}
PREPARED_FILES: Final = (
    "manifest.json",
    "images.npy",
    "targets.npy",
    "splits.npy",
    "items.csv",
    "rejected.csv",
)
"""Files every prepared dataset holds (``masks.npy`` too when its task has masks)."""


def _remake(name: str) -> str:
    return f"re-run `visionops data preprocess data/raw/{name} --force`"


@dataclass(frozen=True)
class PreparedItem:
    """One row of ``items.csv``: a kept image.

    Attributes:
        index: Its row in the arrays.
        path: Its file, relative to the raw folder.
        split: ``train``, ``val`` or ``test``.
        target: The target as text (class name, ``;``-joined labels or values).
        sha256: The file's content hash.
        width: Width before resizing (None in datasets prepared before sizes were kept).
        height: Height before resizing.
    """

    index: int
    path: str
    split: str
    target: str
    sha256: str
    width: int | None
    height: int | None


class PreparedDataset:
    """A validated, memory-mapped prepared dataset.

    Attributes:
        path: The dataset folder.
        manifest: The validated ``manifest.json``.
        images: ``(N, H, W, C)`` uint8, memory-mapped read-only.
        targets: ``(N,)`` int64 (classification, anomaly) or ``(N, K)`` float32.
        splits: ``(N,)`` uint8, 0 = train, 1 = val, 2 = test.
        masks: ``(N, H, W)`` uint8 0/255 for anomaly datasets, else None.

    Examples:
        >>> dataset = PreparedDataset.open(Path("data/prepared/shapes"))  # doctest: +SKIP
        >>> dataset.images[dataset.indices("train")[:4]].shape
        (4, 64, 64, 3)
    """

    def __init__(
        self,
        path: Path,
        manifest: PreparedManifest,
        images: NDArray[np.uint8],
        targets: NDArray[Any],
        splits: NDArray[np.uint8],
        masks: NDArray[np.uint8] | None = None,
    ) -> None:
        self.path = path
        self.manifest = manifest
        self.images = images
        self.targets = targets
        self.splits = splits
        self.masks = masks

    # ------------------------------------------------------------------ opening

    @classmethod
    def open(cls, path: Path) -> PreparedDataset:
        """Validate and memory-map a prepared dataset.

        Args:
            path: The folder ``visionops data preprocess`` wrote.

        Returns:
            The dataset.

        Raises:
            DatasetNotFoundError: No folder there, or it is not a prepared dataset.
            ArtifactError: The manifest or an array is missing, foreign, corrupt or
                inconsistent.
        """
        path = Path(path)
        if not path.is_dir():
            raise DatasetNotFoundError(
                f"no prepared dataset at {path} — run `visionops data preprocess"
                f" data/raw/{path.name}` (or `visionops data fetch` first)"
            )
        manifest_path = path / "manifest.json"
        if not manifest_path.is_file():
            if (path / "source.json").is_file() or any(path.iterdir()):
                raise DatasetNotFoundError(
                    f"{path} is not a prepared dataset (no manifest.json) — if it is a raw"
                    f" dataset, run `visionops data preprocess {path}`"
                )
            raise DatasetNotFoundError(
                f"{path} is empty — run `visionops data preprocess data/raw/{path.name}`"
            )
        manifest = PreparedManifest.read(manifest_path)
        name = manifest.name or path.name
        if manifest.task not in TASKS:
            raise ArtifactError(
                f"{manifest_path} names an unknown task {manifest.task!r} — {_remake(name)}"
            )
        has_masks = TASKS[manifest.task].has_masks
        needed = ["images.npy", "targets.npy", "splits.npy"]
        if has_masks:
            needed.append("masks.npy")
        for file in needed:
            if not (path / file).is_file():
                raise ArtifactError(f"{path} is missing {file} — {_remake(name)}")
        try:
            images = np.load(path / "images.npy", mmap_mode="r")
            targets = np.load(path / "targets.npy")
            splits = np.load(path / "splits.npy")
            masks = np.load(path / "masks.npy", mmap_mode="r") if has_masks else None
        except (OSError, ValueError, EOFError) as exc:
            raise ArtifactError(
                f"{path} has an unreadable array ({exc}) — {_remake(name)}"
            ) from None
        dataset = cls(path, manifest, images, targets, splits, masks)
        dataset._validate()
        return dataset

    def _validate(self) -> None:
        name = self.name
        size, channels = self.image_size, self.channels
        problems: list[str] = []
        n = self.images.shape[0] if self.images.ndim == 4 else -1
        if self.images.dtype != np.uint8 or self.images.shape[1:] != (size, size, channels):
            problems.append(
                f"images.npy is {self.images.dtype} {self.images.shape}, expected uint8"
                f" (N, {size}, {size}, {channels})"
            )
        by_index = TASKS[self.task].target_kind == "class_index"
        expected_dtype = np.int64 if by_index else np.float32
        expected_ndim = 1 if by_index else 2
        if (
            self.targets.dtype != expected_dtype
            or self.targets.ndim != expected_ndim
            or self.targets.shape[0] != n
        ):
            problems.append(
                f"targets.npy is {self.targets.dtype} {self.targets.shape}, expected"
                f" {np.dtype(expected_dtype)} with {n} rows"
            )
        width = len(self.manifest.labels)
        if expected_ndim == 2 and self.targets.ndim == 2 and self.targets.shape[1] != width:
            problems.append(f"targets.npy has {self.targets.shape[1]} columns, manifest {width}")
        if self.splits.dtype != np.uint8 or self.splits.shape != (n,):
            problems.append(f"splits.npy is {self.splits.dtype} {self.splits.shape}, expected (N,)")
        elif n and int(self.splits.max()) > 2:
            problems.append("splits.npy holds codes other than 0, 1, 2")
        if self.masks is not None and self.masks.shape != (n, size, size):
            problems.append(f"masks.npy is {self.masks.shape}, expected ({n}, {size}, {size})")
        counts = self.manifest.counts
        if not problems:
            for split, code in SPLIT_CODES.items():
                actual = int(np.count_nonzero(self.splits == code))
                if counts.get(split, actual) != actual:
                    problems.append(
                        f"manifest counts {counts.get(split)} {split} images, found {actual}"
                    )
        if problems:
            raise ArtifactError(f"{self.path} is inconsistent: {problems[0]} — {_remake(name)}")

    # ------------------------------------------------------------------ metadata

    @property
    def name(self) -> str:
        """Dataset name (the raw folder's name)."""
        return self.manifest.name or self.path.name

    @property
    def task(self) -> Task:
        """``classification``, ``multilabel``, ``regression`` or ``anomaly``."""
        return cast(Task, self.manifest.task)

    @property
    def class_names(self) -> list[str] | None:
        """Label order of the targets (None for regression)."""
        return _copy(self.manifest.class_names)

    @property
    def target_names(self) -> list[str] | None:
        """Regression target names (None for other tasks)."""
        return _copy(self.manifest.target_names)

    @property
    def target_units(self) -> list[str] | None:
        """Regression target units, e.g. ``kcal`` (empty string if unknown)."""
        return _copy(self.manifest.target_units)

    @property
    def target_mean(self) -> list[float] | None:
        """Per-target mean over the train split (regression)."""
        return _copy(self.manifest.target_mean)

    @property
    def target_std(self) -> list[float] | None:
        """Per-target standard deviation over the train split (regression; never 0)."""
        return _copy(self.manifest.target_std)

    @property
    def num_outputs(self) -> int:
        """Width of a model's main output: classes, labels or targets (1 for anomaly)."""
        return get_task(self.task).from_manifest(self.manifest).num_outputs

    @property
    def image_size(self) -> int:
        """Side of the stored square images, pixels."""
        return self.manifest.image_size

    @property
    def channels(self) -> int:
        """1 (grayscale) or 3 (RGB)."""
        return self.manifest.channels

    @property
    def resize(self) -> str:
        """Resize policy used: ``crop`` or ``letterbox`` (serving must use the same)."""
        return self.manifest.resize

    @property
    def mean(self) -> list[float]:
        """Per-channel pixel mean over the train split, 0..1 scale."""
        return list(self.manifest.mean)

    @property
    def std(self) -> list[float]:
        """Per-channel pixel standard deviation over the train split, 0..1 scale."""
        return list(self.manifest.std)

    @property
    def fingerprint(self) -> str:
        """The manifest fingerprint (source data + preprocessing parameters)."""
        return self.manifest.fingerprint

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __repr__(self) -> str:
        return (
            f"PreparedDataset({str(self.path)!r}, task={self.task!r}, n={len(self)},"
            f" size={self.image_size}, channels={self.channels})"
        )

    # ------------------------------------------------------------------ access

    def indices(self, split: str) -> NDArray[np.int64]:
        """Indices of the images in one split, ascending.

        Args:
            split: ``train``, ``val`` or ``test``.

        Raises:
            ValueError: Not a split name.
        """
        if split not in SPLIT_CODES:
            raise ValueError(f"unknown split {split!r}; use one of {', '.join(SPLIT_CODES)}")
        return np.flatnonzero(self.splits == SPLIT_CODES[split]).astype(np.int64)

    def read_items(self) -> list[PreparedItem]:
        """The rows of ``items.csv``, one per image, in row order."""
        return [
            PreparedItem(
                index=int(row["index"]),
                path=row["path"],
                split=row["split"],
                target=row["target"],
                sha256=row["sha256"],
                width=int(row["width"]) if row.get("width") else None,
                height=int(row["height"]) if row.get("height") else None,
            )
            for row in _read_csv(self.path / "items.csv")
        ]

    def original_sizes(self, indices: NDArray[np.int64]) -> NDArray[np.float64] | None:
        """Width and height of the source images at ``indices``, before resizing.

        Args:
            indices: Rows of the dataset.

        Returns:
            ``(len(indices), 2)`` float64, or None when ``items.csv`` does not record sizes
            (datasets prepared before visionops kept them).
        """
        try:
            sizes = [(row.width, row.height) for row in self.read_items()]
        except (KeyError, ValueError):
            return None
        if len(sizes) != len(self) or any(None in size for size in sizes):
            return None
        return np.array(sizes, dtype=np.float64)[np.asarray(indices, dtype=np.int64)]

    def read_rejected(self) -> list[Rejection]:
        """The files preprocess skipped, with the reason (``rejected.csv``)."""
        return read_rejected(self.path)


def read_rejected(folder: Path) -> list[Rejection]:
    """The rows of ``rejected.csv`` in a prepared dataset folder (empty when it has none)."""
    return [
        Rejection(row.get("path", ""), row.get("reason", ""))
        for row in _read_csv(folder / "rejected.csv")
    ]


def _copy(values: list[Any] | None) -> list[Any] | None:
    return list(values) if values is not None else None


def _read_csv(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def find_prepared(settings: Settings) -> Path | None:
    """The most recently prepared dataset under ``settings.data.prepared_root``.

    Args:
        settings: Resolved settings (only ``data.prepared_root`` is used).

    Returns:
        The folder, or None when there is none.
    """
    root = settings.data.prepared_root
    if not root.is_dir():
        return None
    candidates = [
        entry
        for entry in root.iterdir()
        if entry.is_dir() and not entry.name.startswith(".") and PreparedManifest.exists(entry)
    ]
    if not candidates:
        return None
    return max(candidates, key=lambda entry: (entry / "manifest.json").stat().st_mtime_ns)
