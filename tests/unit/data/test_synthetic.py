"""The embedded synthetic demos: determinism, layouts, counts, labels, masks."""

from __future__ import annotations

import ast
import csv
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from visionops.config import DemoSettings
from visionops.data.synthetic import (
    ANOMALY_CATEGORY,
    ANOMALY_DEFECTS,
    DEMOS,
    INGREDIENTS,
    MULTILABEL_CLASSES,
    SHAPE_CLASSES,
    demo_version,
    generate_demo,
)
from visionops.errors import SourceError

SMALL = DemoSettings(images_per_class=8, image_size=48, seed=3)


class RecordingProgress:
    """A real ProgressReporter that remembers its bars and how far each went."""

    def __init__(self) -> None:
        self.bars: list[dict[str, Any]] = []

    def start(self, description: str, total: float | None = None) -> RecordingProgress._Bar:
        bar = {"description": description, "total": total, "done": 0.0, "closed": False}
        self.bars.append(bar)
        return RecordingProgress._Bar(bar)

    class _Bar:
        def __init__(self, bar: dict[str, Any]) -> None:
            self.bar = bar

        def advance(self, amount: float = 1, **fields: Any) -> None:
            self.bar["done"] += amount

        def close(self) -> None:
            self.bar["closed"] = True


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def demos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("demos")
    for name in DEMOS:
        generate_demo(name, root / name, SMALL)
    return {name: root / name for name in DEMOS}


@pytest.mark.parametrize("name", list(DEMOS))
def test_same_seed_gives_byte_identical_files(
    name: str, demos: dict[str, Path], tmp_path: Path
) -> None:
    generate_demo(f"demo:{name}", tmp_path / "again", SMALL)
    again = _files(tmp_path / "again")
    assert again == _files(demos[name])
    other = SMALL.model_copy(update={"seed": 4})
    generate_demo(name, tmp_path / "other", other)
    changed = _files(tmp_path / "other")
    assert set(changed) == set(again)  # same layout...
    images = [k for k in again if k.endswith((".jpg", ".jpeg", ".png")) and "mask" not in k]
    assert sum(changed[k] != again[k] for k in images) > 0.9 * len(images)  # ...other pixels


def test_shapes_layout_counts_and_images(demos: dict[str, Path]) -> None:
    root = demos["shapes"]
    assert sorted(p.name for p in root.iterdir()) == ["test", "train", "validation"]
    counts = {}
    for split in ("train", "validation", "test"):
        assert sorted(p.name for p in (root / split).iterdir()) == sorted(SHAPE_CLASSES)
        counts[split] = {c: len(list((root / split / c).glob("*.jpg"))) for c in SHAPE_CLASSES}
    # ~70/15/15 of 8 images per class, every class in every split
    assert all(n == 6 for n in counts["train"].values())
    assert all(n == 1 for n in counts["validation"].values())
    assert all(n == 1 for n in counts["test"].values())
    image = Image.open(next((root / "train" / "star").glob("*.jpg")))
    assert image.format == "JPEG"
    assert image.size == (48, 48)
    assert image.mode == "RGB"


def test_shapes_are_not_constant(demos: dict[str, Path]) -> None:
    """Colours, positions and sizes vary: images of one class differ a lot from each other."""
    paths = sorted((demos["shapes"] / "train" / "circle").glob("*.jpg"))
    pixels = np.stack([np.asarray(Image.open(p), dtype=np.float32) for p in paths])
    assert pixels.std(axis=0).mean() > 20
    assert len({tuple(p.reshape(-1, 3).mean(0).round()) for p in pixels}) == len(paths)


def test_multilabel_csv_matches_images(demos: dict[str, Path]) -> None:
    root = demos["multilabel"] / "Multi_Label_dataset"
    with (root / "train.csv").open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 8 * len(MULTILABEL_CLASSES)
    assert list(rows[0]) == ["Id", "Genre", *sorted(MULTILABEL_CLASSES)]
    seen: set[str] = set()
    for row in rows:
        genres = ast.literal_eval(row["Genre"])
        assert 1 <= len(genres) <= 3
        assert {c for c in MULTILABEL_CLASSES if row[c] == "1"} == set(genres)
        assert all(row[c] in {"0", "1"} for c in MULTILABEL_CLASSES)
        assert (root / "Images" / f"{row['Id']}.jpg").is_file()
        seen |= set(genres)
    assert seen == set(MULTILABEL_CLASSES)
    assert len(list((root / "Images").iterdir())) == len(rows)


def _ragged_rows(folder: Path) -> dict[str, list[str]]:
    rows = {}
    for cafe in ("cafe1", "cafe2"):
        text = (folder / "metadata" / f"dish_metadata_{cafe}.csv").read_text(encoding="utf-8")
        for line in text.splitlines():
            fields = line.split(",")
            assert fields[0] not in rows
            rows[fields[0]] = fields
    return rows


def test_regression_layout_and_ragged_metadata(demos: dict[str, Path]) -> None:
    root = demos["regression"]
    dishes = sorted(p for p in root.iterdir() if p.name.startswith("dish_"))
    assert len(dishes) == 8 * 5
    nested = [d for d in dishes if (d / "frames_sampled30").is_dir()]
    assert 0 < len(nested) < len(dishes)  # both layouts of the real set occur
    for dish in dishes:
        frames = sorted(p.name for p in dish.rglob("*.jpeg"))
        assert len(frames) == 8
        assert {name.split("_")[1] for name in frames} == {"A", "B", "C", "D"}
        assert "camera_A_frame_001.jpeg" in frames
    rows = _ragged_rows(root)
    assert set(rows) == {d.name for d in dishes}
    lengths = {len(fields) for fields in rows.values()}
    assert len(lengths) > 1  # ragged: a header-based CSV reader cannot read it
    known = {i.ingredient_id: i for i in INGREDIENTS}
    for fields in rows.values():
        assert (len(fields) - 6) % 7 == 0
        totals = [float(v) for v in fields[1:6]]
        ingredients = [fields[k : k + 7] for k in range(6, len(fields), 7)]
        grams = [float(item[2]) for item in ingredients]
        assert totals[1] == pytest.approx(sum(grams), abs=0.05)  # total_mass
        calories = sum(float(item[3]) for item in ingredients)
        assert totals[0] == pytest.approx(calories, abs=0.05)
        for item in ingredients:
            ingredient = known[item[0]]
            assert item[1] == ingredient.name
            assert float(item[4]) == pytest.approx(float(item[2]) * ingredient.fat, abs=1e-3)


def test_regression_item_area_tracks_grams(tmp_path: Path) -> None:
    """Food pixels on camera A's plate grow with the dish mass: the target is visible."""
    size = 64
    generate_demo("regression", tmp_path, DemoSettings(images_per_class=8, image_size=size))
    rows = _ragged_rows(tmp_path)
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    plate = ((xx - size / 2) / (0.43 * size)) ** 2 + ((yy - size / 2) / (0.41 * size)) ** 2 < 0.9
    food, mass = [], []
    for dish, fields in rows.items():
        path = next((tmp_path / dish).rglob("camera_A_frame_001.jpeg"))
        pixels = np.asarray(Image.open(path), dtype=np.int16)
        coloured = (pixels.max(2) - pixels.min(2) > 40) | (pixels.max(2) < 170)
        food.append(int((coloured & plate).sum()))
        mass.append(float(fields[2]))
    assert np.corrcoef(food, mass)[0, 1] > 0.9


def test_anomaly_tree_and_masks(demos: dict[str, Path]) -> None:
    root = demos["anomaly"] / ANOMALY_CATEGORY
    assert len(list((root / "train" / "good").glob("*.png"))) == 8
    assert len(list((root / "test" / "good").glob("*.png"))) == 8
    assert not (root / "ground_truth" / "good").exists()
    for defect in ANOMALY_DEFECTS:
        images = sorted((root / "test" / defect).glob("*.png"))
        assert len(images) == 2
        for image_path in images:
            mask_path = root / "ground_truth" / defect / f"{image_path.stem}_mask.png"
            mask = np.asarray(Image.open(mask_path))
            assert mask.shape == (48, 48)
            assert set(np.unique(mask)) == {0, 255}
            defect_share = (mask == 255).mean()
            assert 0.001 < defect_share < 0.2  # a local defect, not the whole image
            pixels = np.asarray(Image.open(image_path).convert("RGB"), dtype=np.float32)
            inside = pixels[mask == 255].mean(axis=0)
            outside = pixels[mask == 0].mean(axis=0)
            assert np.abs(inside - outside).max() > 10  # visible...
            assert np.abs(inside - outside).max() < 120  # ...but not a solid sticker


def test_progress_counts_every_image(tmp_path: Path) -> None:
    progress = RecordingProgress()
    generate_demo("shapes", tmp_path, SMALL, progress=progress)
    (bar,) = progress.bars
    assert bar["description"] == "generating demo:shapes"
    assert bar["total"] == bar["done"] == 8 * len(SHAPE_CLASSES)
    assert bar["closed"]


def test_unknown_demo_suggests_the_closest() -> None:
    with pytest.raises(SourceError, match=r"did you mean 'demo:shapes'\?.*demo:anomaly"):
        generate_demo("shape", Path("unused"), SMALL)
    assert not Path("unused").exists()


def test_demo_version_string() -> None:
    assert demo_version(DemoSettings()) == "seed=0,images_per_class=80,image_size=96"
