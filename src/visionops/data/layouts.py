"""Recognise the layout of a raw dataset folder and list its items.

Four layouts are understood; :func:`read_layout` detects which one a folder has, infers the
task (or checks a requested one) and returns a :class:`RawListing`: every candidate image with
its target and source split, plus every file that was skipped and why. Nothing is decoded
here; :mod:`visionops.data.prepare` decodes the listed images.

- **class folders**: ``<class>/<image>``, optionally under split folders (``train``,
  ``val``/``valid``/``validation``, ``test``, any case), optionally nested one level deeper.
- **CSV**: a CSV naming image files with labels or targets (one label column →
  classification; several 0/1 columns or a list-valued column → multilabel, e.g. the movie
  posters' ``Multi_Label_dataset/train.csv``; numeric columns → regression).
- **MVTec AD**: ``train/good``, ``test/<defect|good>``, ``ground_truth/<defect>/<name>_mask.png``.
- **Nutrition5k**: ``dish_<id>/[frames_sampled30/]camera_<X>_frame_<NNN>.jpeg`` with the ragged
  ``dish_metadata_cafe1.csv``/``cafe2.csv`` holding the five totals per dish.
"""

from __future__ import annotations

import ast
import csv
import io
import math
import os
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Final

from loguru import logger

from visionops.config import Task
from visionops.errors import DatasetNotFoundError, LayoutError
from visionops.imaging import IMAGE_SUFFIXES

__all__ = [
    "ACCEPTED_LAYOUTS",
    "NUTRITION_TARGETS",
    "NUTRITION_UNITS",
    "SOURCE_FILE",
    "SPLIT_NAMES",
    "RawItem",
    "RawListing",
    "Rejection",
    "count_reasons",
    "list_files",
    "read_layout",
    "reason_kind",
    "split_index",
]

SPLIT_NAMES: Final = ("train", "val", "test")
"""Split names in the order of their code in ``splits.npy`` (0, 1, 2)."""

SOURCE_FILE: Final = "source.json"
"""The manifest ``visionops data fetch`` writes next to the raw files."""

NUTRITION_TARGETS: Final = ("calories", "mass", "fat", "carb", "protein")
NUTRITION_UNITS: Final = ("kcal", "g", "g", "g", "g")

ACCEPTED_LAYOUTS: Final = (
    "accepted layouts: class folders (<class>/<image>, optionally inside train/val/test"
    " folders), a CSV naming image files with labels or numeric targets, MVTec AD"
    " (train/good, test/<defect>, ground_truth/<defect>/*_mask.png), or Nutrition5k"
    " (dish_<id>/camera_<X>_frame_<NNN>.jpeg + dish_metadata_cafe*.csv)"
)

_SPLIT_ALIASES: Final = {"train": 0, "val": 1, "valid": 1, "validation": 1, "test": 2}
_LABEL_COLUMNS: Final = frozenset(
    {
        "label",
        "labels",
        "class",
        "classes",
        "category",
        "categories",
        "target",
        "targets",
        "genre",
        "genres",
        "emotion",
        "tag",
        "tags",
        "y",
    }
)
_ID_COLUMNS: Final = frozenset({"id", "index", "idx", "image_id", "img_id", "row", "unnamed: 0"})
_SPLIT_COLUMNS: Final = frozenset({"split", "set", "subset", "fold", "partition"})
_DISH_DIR: Final = re.compile(r"^dish_(\d+)$", re.IGNORECASE)
_FRAME_FILE: Final = re.compile(r"^camera_([A-Za-z0-9]+)_frame_(\d+)\.jpe?g$", re.IGNORECASE)
_NUTRITION_META: Final = re.compile(r"^dish_metadata_cafe\d+\.csv$", re.IGNORECASE)
_NUMERIC_SHARE: Final = 0.5
"""A column is numeric when more than this share of its non-empty values parse as numbers;
the rows whose value does not parse are then rejected as wrong rows."""


def split_index(name: str) -> int:
    """Map a split name or alias (``train``, ``val``, ``valid``, ``validation``, ``test``) to 0/1/2.

    Raises:
        KeyError: Not a split name.
    """
    return _SPLIT_ALIASES[name.strip().lower()]


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
    """What a raw folder holds, as read by :func:`read_layout`.

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


def _is_image(path: str) -> bool:
    return PurePosixPath(path).suffix.lower() in IMAGE_SUFFIXES


def _not_an_image(path: str) -> Rejection:
    suffix = PurePosixPath(path).suffix.lower() or "no suffix"
    return Rejection(path, f"not an image: {suffix} is not an image file type")


def _under(prefix: str, path: str) -> bool:
    return not prefix or path.startswith(prefix + "/")


def _relative(prefix: str, path: str) -> str:
    return path[len(prefix) + 1 :] if prefix else path


def _content_prefix(files: Sequence[str]) -> str:
    """The folder the layout starts in: the raw folder, or its only sub-folder.

    Downloads often wrap the data in one extra folder (``archive/train/...``); one such level
    is skipped when the top holds nothing else but stray non-image, non-CSV files.
    """
    top_dirs = {f.split("/", 1)[0] for f in files if "/" in f}
    top_files = [f for f in files if "/" not in f]
    wrapper_free = not any(_is_image(f) or f.lower().endswith(".csv") for f in top_files)
    if len(top_dirs) == 1 and wrapper_free:
        (only,) = top_dirs
        # A folder holding images itself is a (single) class folder, not a wrapper.
        holds_images = any(_is_image(f) and f.count("/") == 1 for f in files)
        if only.lower() not in _SPLIT_ALIASES and not holds_images:
            return only
    return ""


def _children(files: Iterable[str], prefix: str) -> tuple[set[str], list[str]]:
    """Immediate sub-folder names and files (as full relative paths) of ``prefix``."""
    dirs: set[str] = set()
    direct: list[str] = []
    for path in files:
        if not _under(prefix, path):
            continue
        rest = _relative(prefix, path)
        if "/" in rest:
            dirs.add(rest.split("/", 1)[0])
        else:
            direct.append(path)
    return dirs, direct


def _join(prefix: str, name: str) -> str:
    return f"{prefix}/{name}" if prefix else name


# --------------------------------------------------------------------------- class folders


def _read_class_folders(root: Path, files: list[str], prefix: str) -> RawListing | None:
    dirs, _ = _children(files, prefix)
    split_dirs = {d: _SPLIT_ALIASES[d.lower()] for d in dirs if d.lower() in _SPLIT_ALIASES}
    rejected: list[Rejection] = []
    found: list[tuple[str, str, int | None]] = []  # (path, class name, split)
    for path in files:
        parts = _relative(prefix, path).split("/") if _under(prefix, path) else [path]
        if split_dirs and parts[0] in split_dirs:
            if len(parts) < 3:
                rejected.append(
                    Rejection(path, f"outside a class folder: put it in {parts[0]}/<class>/")
                )
            elif _is_image(path):
                found.append((path, parts[1], split_dirs[parts[0]]))
            else:
                rejected.append(_not_an_image(path))
        elif not _is_image(path):
            rejected.append(_not_an_image(path))
        elif split_dirs:
            rejected.append(Rejection(path, "outside a split folder: not under train/val/test"))
        elif len(parts) >= 2:
            found.append((path, parts[0], None))
        else:
            rejected.append(Rejection(path, "outside a class folder: put it in <class>/"))
    if not found:
        return None

    class_names = sorted({name for _, name, _ in found})
    index = {name: i for i, name in enumerate(class_names)}
    sources = {split for _, _, split in found}
    items = [
        RawItem(path=path, target=index[name], split=split, stratum=name)
        for path, name, split in sorted(found)
    ]
    has_good = any(name.lower() == "good" for name in class_names)
    tasks: tuple[Task, ...] = ("classification", "anomaly") if has_good else ("classification",)
    where = f"split folders {', '.join(sorted(split_dirs))}" if split_dirs else "no split folders"
    return RawListing(
        root=root,
        layout="class-folders",
        task="classification",
        tasks=tasks,
        items=items,
        rejected=rejected,
        class_names=class_names,
        splits_from_source=bool(split_dirs) and sources != {0},
        notes=[f"class folders: {len(class_names)} classes, {where}"],
    )


def _class_folders_as_anomaly(listing: RawListing) -> RawListing:
    """Re-label a class-folder listing as good (0) versus defect (1)."""
    items = [
        RawItem(
            path=item.path,
            target=0 if item.stratum.lower() == "good" else 1,
            split=item.split,
            stratum=item.stratum,
        )
        for item in listing.items
    ]
    listing.items = items
    listing.class_names = ["good", "defect"]
    listing.task = "anomaly"
    return listing


# --------------------------------------------------------------------------- MVTec AD


def _is_mvtec(files: Sequence[str], prefix: str) -> bool:
    dirs, _ = _children(files, prefix)
    lower = {d.lower(): d for d in dirs}
    if "train" not in lower or "test" not in lower:
        return False
    train_dirs, _ = _children(files, _join(prefix, lower["train"]))
    return {d.lower() for d in train_dirs} == {"good"} or "ground_truth" in lower


def _read_mvtec(root: Path, files: list[str], prefix: str) -> RawListing:
    dirs, _ = _children(files, prefix)
    lower = {d.lower(): d for d in dirs}
    train_prefix = _join(prefix, lower["train"])
    test_prefix = _join(prefix, lower["test"])
    truth_prefix = _join(prefix, lower["ground_truth"]) if "ground_truth" in lower else None
    masks = {path.lower(): path for path in files if truth_prefix and _under(truth_prefix, path)}
    items: list[RawItem] = []
    rejected: list[Rejection] = []
    missing_masks = 0
    for path in files:
        if truth_prefix and _under(truth_prefix, path):
            continue
        if not _is_image(path):
            rejected.append(_not_an_image(path))
            continue
        parts = _relative(prefix, path).split("/")
        if _under(train_prefix, path):
            if len(parts) >= 3 and parts[1].lower() == "good":
                items.append(RawItem(path=path, target=0, split=0, stratum="good"))
            else:
                rejected.append(
                    Rejection(path, "outside train/good: MVTec training images must be good")
                )
        elif _under(test_prefix, path) and len(parts) >= 3:
            defect = parts[1]
            if defect.lower() == "good":
                items.append(RawItem(path=path, target=0, split=2, stratum="good"))
                continue
            mask = None
            if truth_prefix is not None:
                stem = PurePosixPath(path).stem
                wanted = f"{truth_prefix}/{defect}/{stem}_mask.png".lower()
                mask = masks.get(wanted)
            if mask is None:
                missing_masks += 1
            items.append(RawItem(path=path, target=1, split=2, stratum=defect, mask=mask))
        else:
            rejected.append(Rejection(path, "outside train/good and test/<defect> folders"))
    defects = sorted({item.stratum for item in items if item.target == 1})
    notes = [f"MVTec AD: {len(defects)} defect types ({', '.join(defects) or 'none'})"]
    if missing_masks:
        notes.append(f"{missing_masks} defect images have no ground-truth mask (zeros stored)")
    return RawListing(
        root=root,
        layout="mvtec",
        task="anomaly",
        tasks=("anomaly",),
        items=sorted(items, key=lambda item: item.path),
        rejected=rejected,
        class_names=["good", "defect"],
        splits_from_source=True,
        carve_val_from=2,
        notes=notes,
    )


# --------------------------------------------------------------------------- Nutrition5k


def _read_nutrition_metadata(
    root: Path, meta_files: Sequence[str]
) -> tuple[dict[str, tuple[float, ...]], list[Rejection]]:
    """Read the ragged, headerless dish metadata CSVs: the first six fields of each row."""
    totals: dict[str, tuple[float, ...]] = {}
    rejected: list[Rejection] = []
    for meta in meta_files:
        text = (root / meta).read_text(encoding="utf-8", errors="replace")
        # csv.reader, unlike a table reader, does not insist that every row has as many
        # fields as the first: each dish row has 7 more fields per ingredient.
        for line, row in enumerate(csv.reader(io.StringIO(text)), start=1):
            if not row or not "".join(row).strip():
                continue
            where = f"{meta}:{line}"
            if len(row) < 6:
                rejected.append(
                    Rejection(where, f"bad CSV row: {len(row)} fields, a dish row needs 6 or more")
                )
                continue
            dish = row[0].strip()
            if not _DISH_DIR.match(dish):
                if line > 1:  # a header line is tolerated
                    rejected.append(Rejection(where, f"bad CSV row: '{dish}' is not a dish id"))
                continue
            try:
                values = tuple(float(value) for value in row[1:6])
            except ValueError:
                rejected.append(Rejection(where, "bad CSV row: a dish total is not a number"))
                continue
            if not all(math.isfinite(value) for value in values):
                rejected.append(Rejection(where, "bad CSV row: a dish total is not finite"))
                continue
            totals.setdefault(dish.lower(), values)
    return totals, rejected


def _read_nutrition(root: Path, files: list[str], meta_files: list[str], camera: str) -> RawListing:
    totals, rejected = _read_nutrition_metadata(root, meta_files)
    # dish id -> (dish folder, {camera: [(frame, path)]})
    frames: dict[str, tuple[str, dict[str, list[tuple[int, str]]]]] = {}
    for path in files:
        if path in meta_files:
            continue
        parts = path.split("/")
        dish_index = next((i for i, p in enumerate(parts[:-1]) if _DISH_DIR.match(p)), None)
        match = _FRAME_FILE.match(parts[-1])
        if dish_index is None or match is None:
            if not _is_image(path) and not path.lower().endswith(".csv"):
                rejected.append(_not_an_image(path))
            continue
        dish = parts[dish_index].lower()
        folder = "/".join(parts[: dish_index + 1])
        cams = frames.setdefault(dish, (folder, defaultdict(list)))[1]
        cams[match.group(1).upper()].append((int(match.group(2)), path))
    wanted = camera.upper()
    items: list[RawItem] = []
    unused = 0
    for dish, (folder, cams) in sorted(frames.items()):
        if wanted not in cams:
            found = ", ".join(sorted(cams))
            rejected.append(
                Rejection(folder, f"no frame: no camera {wanted} image (cameras here: {found})")
            )
            continue
        if dish not in totals:
            rejected.append(Rejection(folder, "no metadata: dish not in dish_metadata_cafe*.csv"))
            continue
        _, first = min(cams[wanted])
        unused += sum(len(v) for v in cams.values()) - 1
        items.append(RawItem(path=first, target=totals[dish], stratum=""))
    notes = [
        f"Nutrition5k: {len(frames)} dishes, camera {wanted}, first frame per dish"
        f" ({unused} other frames not used)"
    ]
    return RawListing(
        root=root,
        layout="nutrition5k",
        task="regression",
        tasks=("regression",),
        items=sorted(items, key=lambda item: item.path),
        rejected=rejected,
        target_names=list(NUTRITION_TARGETS),
        target_units=list(NUTRITION_UNITS),
        notes=notes,
    )


# --------------------------------------------------------------------------- CSV


def _parse_float(value: str) -> float | None:
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _parse_list(value: str) -> list[str] | None:
    """Parse a list-valued cell: ``['Drama', 'Romance']``, ``Drama|Romance`` or ``a;b``."""
    text = value.strip()
    if text.startswith("[") and text.endswith("]"):
        try:
            parsed = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            parsed = [p.strip(" '\"") for p in text[1:-1].split(",")]
        if isinstance(parsed, list | tuple):
            return [str(p).strip() for p in parsed if str(p).strip()]
        return None
    for separator in ("|", ";"):
        if separator in text:
            return [p.strip() for p in text.split(separator) if p.strip()]
    return None


class _ImageIndex:
    """Resolve the file names a CSV gives (with or without folder or suffix) to real files."""

    def __init__(self, files: Sequence[str], base: str) -> None:
        self.base = base
        self.exact = {f.lower(): f for f in files}
        by_name: dict[str, list[str]] = defaultdict(list)
        by_stem: dict[str, list[str]] = defaultdict(list)
        for path in files:
            if _is_image(path):
                pure = PurePosixPath(path)
                by_name[pure.name.lower()].append(path)
                by_stem[pure.stem.lower()].append(path)
        self.by_name = by_name
        self.by_stem = by_stem

    def resolve(self, value: str) -> str | None:
        text = value.strip().replace("\\", "/").lstrip("./")
        if not text:
            return None
        key = text.lower()
        for candidate in (_join(self.base, key), key):
            if candidate in self.exact:
                return self.exact[candidate]
        for table, name in ((self.by_name, PurePosixPath(key).name), (self.by_stem, key)):
            hits = table.get(name, [])
            if len(hits) == 1:
                return hits[0]
        return None


@dataclass
class _CsvTable:
    path: str
    header: list[str]
    rows: list[tuple[int, list[str]]]
    split: int | None


def _read_csv_table(root: Path, rel: str, split: int | None) -> _CsvTable | None:
    raw = (root / rel).read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    try:
        dialect: type[csv.Dialect] | csv.Dialect = csv.Sniffer().sniff(
            text[:8192], delimiters=",;\t"
        )
    except csv.Error:
        dialect = csv.excel
    rows = [(line, row) for line, row in enumerate(csv.reader(io.StringIO(text), dialect), 1)]
    rows = [(line, row) for line, row in rows if row and "".join(row).strip()]
    if len(rows) < 2:
        return None
    header = [name.strip() for name in rows[0][1]]
    return _CsvTable(path=rel, header=header, rows=rows[1:], split=split)


def _column(table: _CsvTable, index: int) -> list[str]:
    return [row[index].strip() for _, row in table.rows if len(row) == len(table.header)]


@dataclass
class _CsvPlan:
    file_column: int
    split_column: int | None = None
    label_column: int | None = None
    label_is_list: bool = False
    binary_columns: list[int] = field(default_factory=list)
    numeric_columns: list[int] = field(default_factory=list)
    list_column: int | None = None
    tasks: tuple[Task, ...] = ()


def _plan_csv(table: _CsvTable, index: _ImageIndex) -> _CsvPlan | None:
    width = len(table.header)
    scores = []
    for col in range(width):
        sample = [v for v in _column(table, col) if v][:200]
        hits = sum(index.resolve(v) is not None for v in sample)
        scores.append(hits / max(1, len(sample)) if hits else 0.0)
    if not scores or max(scores) < 0.5:
        return None
    plan = _CsvPlan(file_column=scores.index(max(scores)))
    string_columns: list[int] = []
    for col, name in enumerate(table.header):
        lname = name.lower()
        if col == plan.file_column:
            continue
        values = [v for v in _column(table, col) if v]
        if not values:
            continue
        if lname in _SPLIT_COLUMNS and all(v.lower() in _SPLIT_ALIASES for v in values[:200]):
            plan.split_column = col
            continue
        numbers = [_parse_float(v) for v in values]
        numeric = [n for n in numbers if n is not None]
        if len(numeric) > _NUMERIC_SHARE * len(values):
            if lname in _ID_COLUMNS:
                continue
            if all(n in (0.0, 1.0) for n in numeric) and lname not in _LABEL_COLUMNS:
                plan.binary_columns.append(col)
            elif lname in _LABEL_COLUMNS and all(n.is_integer() for n in numeric):
                string_columns.append(col)
            else:
                plan.numeric_columns.append(col)
            continue
        lists = sum(_parse_list(v) is not None for v in values)
        if lists >= 0.5 * len(values):
            if plan.list_column is None or lname in _LABEL_COLUMNS:
                plan.list_column = col
        else:
            string_columns.append(col)
    if string_columns:
        named = [c for c in string_columns if table.header[c].lower() in _LABEL_COLUMNS]
        if named:
            plan.label_column = named[0]
        else:
            # The fewest distinct values marks a label rather than a caption or an id.
            distinct = {c: len(set(_column(table, c))) for c in string_columns}
            best = min(string_columns, key=lambda c: distinct[c])
            if 2 <= distinct[best] < len(table.rows):
                plan.label_column = best
    if len(plan.binary_columns) < 2:
        # One 0/1 column is a numeric target, not a label set.
        plan.numeric_columns = sorted(plan.numeric_columns + plan.binary_columns)
        plan.binary_columns = []
    tasks: list[Task] = []
    if plan.binary_columns:
        tasks.append("multilabel")
    if plan.label_column is not None:
        tasks.append("classification")
    if plan.list_column is not None and "multilabel" not in tasks:
        tasks.append("multilabel")
    if plan.numeric_columns:
        tasks.append("regression")
    plan.tasks = tuple(tasks)
    return plan if tasks else None


def _read_csv(
    root: Path, files: list[str], tables: list[_CsvTable], task: Task | None
) -> RawListing | None:
    parent = PurePosixPath(tables[0].path).parent.as_posix()
    base = "" if parent == "." else parent
    image_files = [f for f in files if _is_image(f)]
    index = _ImageIndex(image_files, base)
    plan = _plan_csv(tables[0], index)
    if plan is None:
        return None
    header = tables[0].header
    chosen: Task = task if task in plan.tasks else plan.tasks[0]  # checked by the caller
    class_names: list[str] | None = None
    target_names: list[str] | None = None
    if chosen == "multilabel":
        if plan.binary_columns:
            class_names = [header[c] for c in plan.binary_columns]
        else:
            assert plan.list_column is not None
            labels = set()
            for table in tables:
                for value in _column(table, plan.list_column):
                    labels.update(_parse_list(value) or ([value] if value else []))
            class_names = sorted(labels)
    elif chosen == "classification":
        assert plan.label_column is not None
        labels = {v for table in tables for v in _column(table, plan.label_column) if v}
        as_numbers = [_parse_float(v) for v in labels]
        if all(n is not None for n in as_numbers):
            class_names = sorted(labels, key=lambda v: float(v))
        else:
            class_names = sorted(labels)
    else:
        target_names = [header[c] for c in plan.numeric_columns]
    class_index = {name: i for i, name in enumerate(class_names or [])}

    items: list[RawItem] = []
    rejected: list[Rejection] = []
    listed: dict[str, str] = {}
    mentioned: set[str] = set()  # named by a row, even a rejected one
    for table in tables:
        csv_name = PurePosixPath(table.path).name
        width = len(table.header)
        for line, row in table.rows:
            where = f"{table.path}:{line}"
            if len(row) != width:
                rejected.append(
                    Rejection(where, f"bad CSV row: {len(row)} fields, the header has {width}")
                )
                continue
            value = row[plan.file_column].strip()
            if not value:
                rejected.append(Rejection(where, "bad CSV row: no file name"))
                continue
            path = index.resolve(value)
            if path is None:
                shown = _join(base, value.replace("\\", "/"))
                rejected.append(
                    Rejection(shown, f"missing file: named in {csv_name} line {line}, not found")
                )
                continue
            mentioned.add(path)
            if path in listed:
                rejected.append(
                    Rejection(where, f"bad CSV row: {path} already listed at {listed[path]}")
                )
                continue
            split = table.split
            if plan.split_column is not None:
                split_value = row[plan.split_column].strip().lower()
                if split_value not in _SPLIT_ALIASES:
                    rejected.append(Rejection(where, f"bad CSV row: unknown split '{split_value}'"))
                    continue
                split = _SPLIT_ALIASES[split_value]
            target: int | tuple[float, ...]
            if chosen == "classification":
                assert plan.label_column is not None
                label = row[plan.label_column].strip()
                if not label:
                    rejected.append(Rejection(where, "bad CSV row: empty label"))
                    continue
                target, stratum = class_index[label], label
            elif chosen == "multilabel" and plan.binary_columns:
                flags = [_parse_float(row[c].strip()) for c in plan.binary_columns]
                if any(f not in (0.0, 1.0) for f in flags):
                    rejected.append(Rejection(where, "bad CSV row: a label column is not 0 or 1"))
                    continue
                target = tuple(float(f) for f in flags)  # type: ignore[arg-type]
                stratum = "|".join(str(int(f)) for f in target)
            elif chosen == "multilabel":
                assert plan.list_column is not None
                cell = row[plan.list_column].strip()
                labels_here = set(_parse_list(cell) or ([cell] if cell else []))
                target = tuple(float(name in labels_here) for name in class_names or [])
                stratum = ";".join(sorted(labels_here))
            else:
                numbers = [_parse_float(row[c].strip()) for c in plan.numeric_columns]
                bad = [
                    header[c]
                    for c, n in zip(plan.numeric_columns, numbers, strict=True)
                    if n is None
                ]
                if bad:
                    rejected.append(Rejection(where, f"bad CSV row: '{bad[0]}' is not a number"))
                    continue
                target, stratum = tuple(n for n in numbers if n is not None), ""
            listed[path] = where
            items.append(RawItem(path=path, target=target, split=split, stratum=stratum))
    csv_paths = {table.path for table in tables}
    for path in files:
        if path in mentioned or path in csv_paths:
            continue
        if not _is_image(path):
            rejected.append(_not_an_image(path))
        else:
            names = ", ".join(sorted(PurePosixPath(t.path).name for t in tables))
            rejected.append(Rejection(path, f"unlabelled: not listed in {names}"))
    if not items:
        return None
    splits = {item.split for item in items}
    column_note = (
        f"file column '{header[plan.file_column]}'"
        + (
            f", label column '{header[plan.label_column]}'"
            if chosen == "classification" and plan.label_column is not None
            else ""
        )
        + (f", {len(class_names or [])} labels" if chosen == "multilabel" else "")
        + (f", targets {target_names}" if target_names else "")
    )
    return RawListing(
        root=root,
        layout="csv",
        task=chosen,
        tasks=plan.tasks,
        items=sorted(items, key=lambda item: item.path),
        rejected=rejected,
        class_names=class_names,
        target_names=target_names,
        target_units=[""] * len(target_names) if target_names else None,
        splits_from_source=None not in splits and splits != {0},
        notes=[f"CSV {', '.join(sorted(csv_paths))}: {column_note}"],
    )


def _csv_groups(root: Path, files: list[str], prefix: str) -> list[list[_CsvTable]]:
    """Candidate CSV tables, grouped.

    Split-named CSVs (``train.csv``, ``test.csv``...) are read together, every other CSV on
    its own. Only the shallowest CSVs, at most one folder below the layout's top, count.
    """
    depth = prefix.count("/") + 1 if prefix else 0
    candidates = [
        f
        for f in files
        if f.lower().endswith(".csv")
        and _under(prefix, f)
        and f.count("/") <= depth + 1
        and not _NUTRITION_META.match(PurePosixPath(f).name)
    ]
    if not candidates:
        return []
    shallowest = min(f.count("/") for f in candidates)
    candidates = [f for f in candidates if f.count("/") == shallowest]
    by_split = [f for f in candidates if PurePosixPath(f).stem.lower() in _SPLIT_ALIASES]
    groups: list[list[_CsvTable]] = []
    split_tables = [
        table
        for rel in by_split
        if (table := _read_csv_table(root, rel, _SPLIT_ALIASES[PurePosixPath(rel).stem.lower()]))
    ]
    # Split CSVs are one table only when they share the columns.
    if split_tables:
        groups.append([t for t in split_tables if t.header == split_tables[0].header])
    for rel in candidates:
        if rel not in by_split and (table := _read_csv_table(root, rel, None)):
            groups.append([table])
    return groups


def _read_csv_layout(
    root: Path, files: list[str], prefix: str, task: Task | None
) -> RawListing | None:
    found: list[tuple[str, RawListing]] = []
    for group in _csv_groups(root, files, prefix):
        listing = _read_csv(root, files, group, task)
        if listing is not None:
            found.append((" + ".join(table.path for table in group), listing))
        else:
            logger.debug("{} does not label images", group[0].path)
    listings = [listing for _, listing in found]
    if len(listings) > 1:
        names = ", ".join(name for name, _ in found)
        raise LayoutError(
            f"{root} holds several CSV files that label its images ({names}) — keep one, or"
            " name them train.csv, val.csv and test.csv"
        )
    return listings[0] if listings else None


# --------------------------------------------------------------------------- entry point


def _check_task(listing: RawListing, task: Task | None) -> RawListing:
    if task is None or task == listing.task:
        return listing
    if task not in listing.tasks:
        supported = " or ".join(listing.tasks)
        raise LayoutError(
            f"{listing.root} has the {listing.layout} layout, which provides {supported}, not"
            f" {task} — use --task {listing.tasks[0]} or arrange the files for {task}"
        )
    if listing.layout == "class-folders" and task == "anomaly":
        return _class_folders_as_anomaly(listing)
    raise AssertionError(f"unhandled task {task} for {listing.layout}")  # pragma: no cover


def read_layout(raw: Path, *, task: Task | None = None, camera: str = "A") -> RawListing:
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
        >>> listing = read_layout(Path("data/raw/shapes"))  # doctest: +SKIP
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

    meta_files = [f for f in files if _NUTRITION_META.match(PurePosixPath(f).name)]
    has_dishes = any(_DISH_DIR.match(p) for f in files for p in f.split("/")[:-1])
    if meta_files and has_dishes:
        return _check_task(_read_nutrition(raw, files, meta_files, camera), task)
    if has_dishes and any(_FRAME_FILE.match(PurePosixPath(f).name) for f in files):
        raise LayoutError(
            f"{raw} has Nutrition5k dish_<id> folders but no dish_metadata_cafe1.csv or"
            " dish_metadata_cafe2.csv — copy the metadata CSVs into the folder"
        )

    prefix = _content_prefix(files)
    if _is_mvtec(files, prefix):
        return _check_task(_read_mvtec(raw, files, prefix), task)
    categories = sorted(
        d for d in _children(files, prefix)[0] if _is_mvtec(files, _join(prefix, d))
    )
    if len(categories) > 1:
        raise LayoutError(
            f"{raw} holds {len(categories)} MVTec AD categories ({', '.join(categories)}) —"
            f" prepare one at a time, e.g. `visionops data preprocess {raw / categories[0]}`"
        )

    listing = _read_csv_layout(raw, files, prefix, task)
    if listing is not None:
        return _check_task(listing, task)
    listing = _read_class_folders(raw, files, prefix)
    if listing is not None:
        return _check_task(listing, task)
    images = sum(_is_image(f) for f in files)
    what = (
        f"{images} images but no class folders or labelling CSV"
        if images
        else f"{len(files)} files and no images"
    )
    raise LayoutError(f"cannot read the layout of {raw}: {what}; {ACCEPTED_LAYOUTS}")


def reason_kind(reason: str) -> str:
    """The category of a rejection reason (the text before the first colon)."""
    return reason.split(":", 1)[0].strip()


def count_reasons(rejected: Iterable[Rejection]) -> Counter[str]:
    """Count rejections by :func:`reason_kind`."""
    return Counter(reason_kind(r.reason) for r in rejected)
