"""Nutrition5k: one frame per dish with the dish's five nutrition totals.

``dish_<id>/[frames_sampled30/]camera_<X>_frame_<NNN>.jpeg`` with the ragged
``dish_metadata_cafe1.csv``/``cafe2.csv`` holding the five totals per dish.
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import Final

from visionops.data.layouts._base import (
    FolderScan,
    LayoutReader,
    RawItem,
    RawListing,
    ReadOptions,
    Rejection,
    is_image,
    not_an_image,
)
from visionops.errors import LayoutError

__all__ = ["NUTRITION_TARGETS", "NUTRITION_UNITS", "Nutrition5kReader", "is_dish_metadata"]

NUTRITION_TARGETS: Final = ("calories", "mass", "fat", "carb", "protein")
NUTRITION_UNITS: Final = ("kcal", "g", "g", "g", "g")

_DISH_DIR: Final = re.compile(r"^dish_(\d+)$", re.IGNORECASE)
_FRAME_FILE: Final = re.compile(r"^camera_([A-Za-z0-9]+)_frame_(\d+)\.jpe?g$", re.IGNORECASE)
_NUTRITION_META: Final = re.compile(r"^dish_metadata_cafe\d+\.csv$", re.IGNORECASE)


def is_dish_metadata(path: str) -> bool:
    """Whether a file is a Nutrition5k dish metadata CSV (the CSV reader leaves these out)."""
    return bool(_NUTRITION_META.match(PurePosixPath(path).name))


def _read_metadata(
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


class Nutrition5kReader(LayoutReader):
    """One image per dish (the chosen camera's first frame) with its five nutrition totals."""

    layout = "nutrition5k"

    def read(self, scan: FolderScan, options: ReadOptions) -> RawListing | None:
        """List one frame per dish; None without ``dish_<id>`` folders.

        Raises:
            LayoutError: Dish folders with frames but no metadata CSV.
        """
        files = scan.files
        meta_files = [f for f in files if is_dish_metadata(f)]
        has_dishes = any(_DISH_DIR.match(p) for f in files for p in f.split("/")[:-1])
        if not has_dishes:
            return None
        if not meta_files:
            if any(_FRAME_FILE.match(PurePosixPath(f).name) for f in files):
                raise LayoutError(
                    f"{scan.root} has Nutrition5k dish_<id> folders but no"
                    " dish_metadata_cafe1.csv or dish_metadata_cafe2.csv — copy the metadata"
                    " CSVs into the folder"
                )
            return None
        totals, rejected = _read_metadata(scan.root, meta_files)
        # dish id -> (dish folder, {camera: [(frame, path)]})
        frames: dict[str, tuple[str, dict[str, list[tuple[int, str]]]]] = {}
        for path in files:
            if path in meta_files:
                continue
            parts = path.split("/")
            dish_index = next((i for i, p in enumerate(parts[:-1]) if _DISH_DIR.match(p)), None)
            match = _FRAME_FILE.match(parts[-1])
            if dish_index is None or match is None:
                if not is_image(path) and not path.lower().endswith(".csv"):
                    rejected.append(not_an_image(path))
                continue
            dish = parts[dish_index].lower()
            folder = "/".join(parts[: dish_index + 1])
            cams = frames.setdefault(dish, (folder, defaultdict(list)))[1]
            cams[match.group(1).upper()].append((int(match.group(2)), path))
        wanted = options.camera.upper()
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
                rejected.append(
                    Rejection(folder, "no metadata: dish not in dish_metadata_cafe*.csv")
                )
                continue
            _, first = min(cams[wanted])
            unused += sum(len(v) for v in cams.values()) - 1
            items.append(RawItem(path=first, target=totals[dish], stratum=""))
        notes = [
            f"Nutrition5k: {len(frames)} dishes, camera {wanted}, first frame per dish"
            f" ({unused} other frames not used)"
        ]
        return RawListing(
            root=scan.root,
            layout=self.layout,
            task="regression",
            tasks=("regression",),
            items=sorted(items, key=lambda item: item.path),
            rejected=rejected,
            target_names=list(NUTRITION_TARGETS),
            target_units=list(NUTRITION_UNITS),
            notes=notes,
        )
