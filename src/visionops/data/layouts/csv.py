"""A CSV naming image files with labels or targets.

One label column → classification; several 0/1 columns or a list-valued column → multilabel
(e.g. the movie posters' ``Multi_Label_dataset/train.csv``); numeric columns → regression.
Split-named CSVs (``train.csv``, ``val.csv``, ``test.csv``) are read together as the source's
splits.
"""

from __future__ import annotations

import ast
import csv
import io
import math
import posixpath
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Final

from loguru import logger

from visionops.config import Task
from visionops.data.layouts._base import (
    SPLIT_ALIASES,
    FolderScan,
    LayoutReader,
    RawItem,
    RawListing,
    ReadOptions,
    Rejection,
    is_image,
    join,
    not_an_image,
    under,
)
from visionops.data.layouts.nutrition5k import is_dish_metadata
from visionops.errors import LayoutError

__all__ = ["CsvReader"]

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
_NUMERIC_SHARE: Final = 0.5
"""A column is numeric when more than this share of its non-empty values parse as numbers;
the rows whose value does not parse are then rejected as wrong rows."""
_DRIVE: Final = re.compile(r"^[A-Za-z]:/")


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


def _outside(value: str, base: str, root: Path) -> bool:
    """Whether a CSV file name points outside the dataset folder (absolute or ``..``)."""
    text = value.strip().replace("\\", "/")
    if text.startswith("/") or _DRIVE.match(text):
        try:
            Path(text).resolve().relative_to(root.resolve())
        except (ValueError, OSError):
            return True
        return False
    normal = posixpath.normpath(join(base, text))
    return normal == ".." or normal.startswith("../")


class _ImageIndex:
    """Resolve the file names a CSV gives (with or without folder or suffix) to real files."""

    def __init__(self, files: Sequence[str], base: str) -> None:
        self.base = base
        self.exact = {f.lower(): f for f in files}
        by_name: dict[str, list[str]] = defaultdict(list)
        by_stem: dict[str, list[str]] = defaultdict(list)
        for path in files:
            if is_image(path):
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
        for candidate in (join(self.base, key), key):
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
        if lname in _SPLIT_COLUMNS and all(v.lower() in SPLIT_ALIASES for v in values[:200]):
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
    image_files = [f for f in files if is_image(f)]
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
            if path is None and _outside(value, base, root):
                rejected.append(
                    Rejection(
                        where,
                        f"outside the dataset: {value.strip()!r} is not inside {root.name}/ —"
                        " copy the file into the dataset folder and name it relative to the CSV",
                    )
                )
                continue
            if path is None:
                shown = join(base, value.replace("\\", "/"))
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
                if split_value not in SPLIT_ALIASES:
                    rejected.append(Rejection(where, f"bad CSV row: unknown split '{split_value}'"))
                    continue
                split = SPLIT_ALIASES[split_value]
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
        if not is_image(path):
            rejected.append(not_an_image(path))
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
        and under(prefix, f)
        and f.count("/") <= depth + 1
        and not is_dish_metadata(f)
    ]
    if not candidates:
        return []
    shallowest = min(f.count("/") for f in candidates)
    candidates = [f for f in candidates if f.count("/") == shallowest]
    by_split = [f for f in candidates if PurePosixPath(f).stem.lower() in SPLIT_ALIASES]
    groups: list[list[_CsvTable]] = []
    split_tables = [
        table
        for rel in by_split
        if (table := _read_csv_table(root, rel, SPLIT_ALIASES[PurePosixPath(rel).stem.lower()]))
    ]
    # Split CSVs are one table only when they share the columns.
    if split_tables:
        groups.append([t for t in split_tables if t.header == split_tables[0].header])
    for rel in candidates:
        if rel not in by_split and (table := _read_csv_table(root, rel, None)):
            groups.append([table])
    return groups


class CsvReader(LayoutReader):
    """The one CSV (or set of split-named CSVs) that labels the folder's images."""

    layout = "csv"

    def read(self, scan: FolderScan, options: ReadOptions) -> RawListing | None:
        """List the images a CSV labels; None when no CSV labels images.

        Raises:
            LayoutError: Several CSVs label the images and it is unclear which one counts.
        """
        found: list[tuple[str, RawListing]] = []
        for group in _csv_groups(scan.root, scan.files, scan.prefix):
            listing = _read_csv(scan.root, scan.files, group, options.task)
            if listing is not None:
                found.append((" + ".join(table.path for table in group), listing))
            else:
                logger.debug("{} does not label images", group[0].path)
        if len(found) > 1:
            names = ", ".join(name for name, _ in found)
            raise LayoutError(
                f"{scan.root} holds several CSV files that label its images ({names}) — keep"
                " one, or name them train.csv, val.csv and test.csv"
            )
        return found[0][1] if found else None
