"""Tiny raw dataset trees in every layout visionops reads, generated with PIL.

Shared by the layout, prepare, prepared and loading tests. Every image gets its own random
pattern, so no two files are byte-identical unless a test copies one on purpose.
"""

from __future__ import annotations

import csv
import io
import itertools
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from visionops.config import Settings

_counter = itertools.count()

COLOURS = {
    "red": (220, 30, 30),
    "green": (30, 200, 40),
    "blue": (30, 40, 220),
    "yellow": (230, 220, 30),
}


def pattern(colour: tuple[int, int, int], size: tuple[int, int] = (40, 30)) -> Image.Image:
    """A ``colour`` image with a unique speckle pattern (so every file has its own bytes)."""
    rng = np.random.default_rng(next(_counter))
    width, height = size
    array = np.empty((height, width, 3), dtype=np.int16)
    array[:] = colour
    array += rng.integers(-25, 26, size=array.shape, dtype=np.int16)
    return Image.fromarray(np.clip(array, 0, 255).astype(np.uint8))


def save(path: Path, image: Image.Image, fmt: str | None = None, **kwargs: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format=fmt, **kwargs)
    return path


def class_tree(
    root: Path,
    classes: Sequence[str] = ("red", "green", "blue"),
    per_class: int = 8,
    splits: dict[str, int] | None = None,
    suffix: str = ".jpg",
) -> Path:
    """``<class>/*.jpg``, or ``<split>/<class>/*.jpg`` with ``splits = {folder: count}``."""
    colours = list(COLOURS.values())
    for c, name in enumerate(classes):
        colour = colours[c % len(colours)]
        if splits is None:
            for i in range(per_class):
                save(root / name / f"{name}_{i:03d}{suffix}", pattern(colour))
        else:
            for folder, count in splits.items():
                for i in range(count):
                    save(root / folder / name / f"{name}_{i:03d}{suffix}", pattern(colour))
    return root


def multilabel_csv(root: Path, rows: int = 24) -> Path:
    """The movie-poster layout: ``Multi_Label_dataset/train.csv`` + ``Images/<Id>.jpg``."""
    base = root / "Multi_Label_dataset"
    genres = ["Action", "Comedy", "Drama"]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["Id", "Genre", *genres])
    for i in range(rows):
        flags = [int(i % 2 == 0), int(i % 3 == 0), int(i % 2 == 1 or i % 3 == 1)]
        names = [g for g, f in zip(genres, flags, strict=True) if f]
        writer.writerow([f"tt{i:04d}", str(names), *flags])
        save(base / "Images" / f"tt{i:04d}.jpg", pattern((40 * (i % 6), 100, 200)))
    (base / "train.csv").write_text(buffer.getvalue(), encoding="utf-8")
    return root


def regression_csv(root: Path, rows: int = 30) -> Path:
    """``labels.csv`` with a file column and two numeric targets; images in ``img/``."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["file", "weight", "height"])
    for i in range(rows):
        writer.writerow([f"img/p{i:03d}.png", 10.0 + i, 2.5 * i])
        save(root / "img" / f"p{i:03d}.png", pattern((5 * i, 80, 120)))
    (root / "labels.csv").write_text(buffer.getvalue(), encoding="utf-8")
    return root


def mvtec_tree(root: Path, good_train: int = 8, good_test: int = 4, per_defect: int = 4) -> Path:
    """One MVTec AD category: train/good, test/{good,hole,scratch}, ground_truth masks."""
    for i in range(good_train):
        save(root / "train" / "good" / f"{i:03d}.png", pattern((120, 120, 120)))
    for i in range(good_test):
        save(root / "test" / "good" / f"{i:03d}.png", pattern((120, 120, 120)))
    for defect in ("hole", "scratch"):
        for i in range(per_defect):
            save(root / "test" / defect / f"{i:03d}.png", pattern((60, 60, 60)))
            mask = np.zeros((30, 40), dtype=np.uint8)
            mask[10:20, 10:30] = 255
            save(root / "ground_truth" / defect / f"{i:03d}_mask.png", Image.fromarray(mask))
    return root


NUTRITION_ROWS = {
    # dish id: (calories, mass, fat, carb, protein)
    "dish_1001": (300.5, 250.0, 10.0, 40.0, 12.0),
    "dish_1002": (120.0, 90.0, 2.0, 20.0, 5.5),
    "dish_1003": (560.0, 410.0, 25.0, 60.0, 30.0),
}


def nutrition_tree(root: Path, dishes: int = 12, nested: bool = True) -> Path:
    """Nutrition5k: ``dish_<id>/frames_sampled30/camera_<X>_frame_<NNN>.jpeg`` + ragged CSVs."""
    rows = []
    for d in range(dishes):
        dish = f"dish_{2000 + d}"
        totals = (100.0 + 10 * d, 200.0 + d, 5.0 + d, 20.0 + 2 * d, 8.0 + d)
        # Two ingredients: 7 more fields each, so rows are longer than six fields and ragged.
        ingredients = [f"ingr_{k}" for k in range(d % 3)]
        row = [dish, *(str(v) for v in totals)]
        for k, ingredient in enumerate(ingredients):
            row += [ingredient, f"food {k}", "12.0", "30.0", "1.0", "4.0", "2.0"]
        rows.append(row)
        folder = root / dish / "frames_sampled30" if nested else root / dish
        for camera in ("A", "B"):
            for frame in (5, 1):
                save(folder / f"camera_{camera}_frame_{frame:03d}.jpeg", pattern((10 * d, 90, 60)))
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    (root / "metadata").mkdir(parents=True, exist_ok=True)
    (root / "metadata" / "dish_metadata_cafe1.csv").write_text(buffer.getvalue(), "utf-8")
    return root


def bad_files(folder: Path) -> dict[str, str]:
    """Write one file of each broken kind into ``folder``; returns name → expected reason kind.

    The oversized image needs ``data.max_image_pixels`` below 4,000,000.
    """
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "zero.jpg").write_bytes(b"")
    good = io.BytesIO()
    pattern((200, 10, 10), (64, 64)).save(good, format="JPEG", quality=95)
    (folder / "truncated.jpg").write_bytes(good.getvalue()[: len(good.getvalue()) // 3])
    (folder / "text.jpg").write_text("this is not a picture", encoding="utf-8")
    png = io.BytesIO()
    pattern((10, 200, 10), (32, 32)).save(png, format="PNG")
    data = bytearray(png.getvalue())
    data[60:120] = bytes(60)  # wreck the compressed image data, keep the signature
    (folder / "corrupt.png").write_bytes(bytes(data))
    Image.new("L", (2500, 2000)).save(folder / "huge.png")
    (folder / "notes.txt").write_text("not an image", encoding="utf-8")
    return {
        "zero.jpg": "empty file",
        "truncated.jpg": "truncated image",
        "text.jpg": "not an image",
        "corrupt.png": "corrupt image",
        "huge.png": "too large",
        "notes.txt": "not an image",
    }


def settings_for(tmp: Path, **data: object) -> Settings:
    """Small, fast settings writing under ``tmp/prepared``."""
    values: dict[str, object] = {
        "prepared_root": str(tmp / "prepared"),
        "image_size": 16,
        "workers": 1,
    }
    values.update(data)
    return Settings.model_validate({"data": values})


def leftovers(root: Path) -> list[str]:
    """Everything under ``root`` (empty list when it does not exist)."""
    return sorted(p.name for p in root.iterdir()) if root.exists() else []
