"""Miniature fakes of the published layouts the seed recipes download (see SEEDS.md).

Each builder writes a tiny copy of one Kaggle dataset *as the download unpacks it*: the same
folder names, file names, CSV headers and quirks (the fruits set's test images duplicated in
train, the posters' list-valued ``Genre`` column next to the 0/1 columns, Nutrition5k's ragged
headerless metadata with dishes that have no metadata or no camera A, FER-2013's grayscale
48x48 faces without a validation split). Images are small and coloured by class, so one
epoch at 32 px is quick and the served answer is a real model's.

:func:`fill_kaggle_cache` puts a built dataset where kagglehub leaves a completed download,
so ``visionops data fetch kaggle:owner/dataset`` finds it with no network.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

FRUIT_CLASSES = (
    "apple", "banana", "beetroot", "bell pepper", "cabbage", "capsicum", "carrot",
    "cauliflower", "chilli pepper", "corn", "cucumber", "eggplant", "garlic", "ginger",
    "grapes", "jalepeno", "kiwi", "lemon", "lettuce", "mango", "onion", "orange", "paprika",
    "pear", "peas", "pineapple", "pomegranate", "potato", "raddish", "soy beans", "spinach",
    "sweetcorn", "sweetpotato", "tomato", "turnip", "watermelon",
)  # fmt: skip
"""The 36 class folders of ``kritikseth/fruit-and-vegetable-image-recognition``."""

POSTER_GENRES = (
    "Action", "Adventure", "Animation", "Biography", "Comedy", "Crime", "Documentary",
    "Drama", "Family", "Fantasy", "History", "Horror", "Music", "Musical", "Mystery", "N/A",
    "News", "Reality-TV", "Romance", "Sci-Fi", "Short", "Sport", "Thriller", "War", "Western",
)  # fmt: skip
"""The 25 0/1 genre columns of ``raman77768/movie-classifier``'s ``train.csv``, in order."""

EMOTIONS = ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise")
"""FER-2013's seven emotion folders."""

NUTRITION_TARGETS = ("calories", "mass", "fat", "carb", "protein")


@dataclass
class FakeDataset:
    """A built fake and the facts a test checks against.

    Attributes:
        root: The dataset folder (what the download unpacks to).
        sample: One image file to send to the server.
        facts: Counts planted in the data (duplicates, dishes without metadata, ...).
    """

    root: Path
    sample: Path
    facts: dict[str, int] = field(default_factory=dict)


def _colour(index: int, count: int) -> np.ndarray:
    """A distinct, saturated RGB colour per class index."""
    hue = index / count
    angles = 2 * np.pi * (hue + np.array([0.0, 1 / 3, 2 / 3]))
    return (127 + 110 * np.cos(angles)).astype(np.float64)


def _image(
    rng: np.random.Generator, colour: np.ndarray, size: tuple[int, int], mode: str = "RGB"
) -> Image.Image:
    width, height = size
    noise = rng.normal(0, 12, (height, width, 3))
    pixels = np.clip(colour + noise, 0, 255).astype(np.uint8)
    image = Image.fromarray(pixels, "RGB")
    return image.convert("L") if mode == "L" else image


def build_fruits(root: Path, *, per_class: int = 3) -> FakeDataset:
    """``train/``, ``validation/``, ``test/`` with one folder per class (36).

    Every class has ``per_class`` train images, one validation image and two test images;
    for every other class the first test image is a byte-identical copy of a train image
    (the published set has such test-in-train duplicates).
    """
    rng = np.random.default_rng(1)
    duplicates = 0
    suffixes = (".jpg", ".png", ".JPG", ".jpeg")
    for index, name in enumerate(FRUIT_CLASSES):
        colour = _colour(index, len(FRUIT_CLASSES))
        for split, count in (("train", per_class), ("validation", 1), ("test", 2)):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for number in range(count):
                suffix = suffixes[(index + number) % len(suffixes)]
                path = folder / f"Image_{number + 1}{suffix}"
                fmt = "PNG" if suffix == ".png" else "JPEG"
                _image(rng, colour, (40, 34)).save(path, format=fmt)
        if index % 2 == 0:
            train_copy = next(iter(sorted((root / "train" / name).iterdir())))
            duplicate = root / "test" / name / f"Image_1{train_copy.suffix}"
            for stale in (root / "test" / name).glob("Image_1.*"):
                stale.unlink()
            duplicate.write_bytes(train_copy.read_bytes())
            duplicates += 1
    sample = next(iter(sorted((root / "test" / FRUIT_CLASSES[1]).iterdir())))
    return FakeDataset(root, sample, {"duplicates": duplicates})


def build_posters(root: Path, *, posters: int = 75) -> FakeDataset:
    """``Multi_Label_dataset/train.csv`` (``Id``, ``Genre``, 25 0/1 columns) + ``Images/<Id>.jpg``.

    Every genre is on at least three posters; two rows name images that are not there (the
    published CSV and image folder do not match exactly either).
    """
    rng = np.random.default_rng(2)
    base = root / "Multi_Label_dataset"
    images = base / "Images"
    images.mkdir(parents=True)
    rows: list[list[str]] = []
    for number in range(posters):
        poster_id = f"tt{1000000 + 7 * number:07d}"
        first = number % len(POSTER_GENRES)
        genres = {first}
        if number % 3:
            genres.add(int(rng.integers(len(POSTER_GENRES))))
        names = [POSTER_GENRES[g] for g in sorted(genres)]
        colour = np.mean([_colour(g, len(POSTER_GENRES)) for g in genres], axis=0)
        # Posters are portrait: the recipe letterboxes them.
        _image(rng, colour, (30, 44)).save(images / f"{poster_id}.jpg", format="JPEG")
        flags = ["1" if g in genres else "0" for g in range(len(POSTER_GENRES))]
        rows.append([poster_id, str(names), *flags])
    rows.append(["tt9999990", "['Drama']", *["1" if g == "Drama" else "0" for g in POSTER_GENRES]])
    rows.append(
        ["tt9999991", "['Comedy']", *["1" if g == "Comedy" else "0" for g in POSTER_GENRES]]
    )
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["Id", "Genre", *POSTER_GENRES])
    writer.writerows(rows)
    (base / "train.csv").write_text(buffer.getvalue(), encoding="utf-8")
    return FakeDataset(root, images / "tt1000000.jpg", {"posters": posters, "missing": 2})


def build_nutrition5k(root: Path, *, dishes: int = 48) -> FakeDataset:
    """``dish_<id>/[frames_sampled30/]camera_<A-D>_frame_<NNN>.jpeg`` + ragged metadata CSVs.

    ``dish_metadata_cafe1.csv`` / ``cafe2.csv`` have no header; each row is the dish id, the
    five totals, then 7 fields per ingredient. Planted: two dish folders without metadata,
    one dish without camera A, and metadata rows for dishes that have no folder.
    """
    rng = np.random.default_rng(3)
    rows: dict[str, list[list[str]]] = {"cafe1": [], "cafe2": []}
    sample: Path | None = None
    for number in range(dishes):
        dish_id = f"dish_{1550704750 + 1013 * number}"
        folder = root / dish_id
        if number % 3 == 1:
            folder = folder / "frames_sampled30"
        folder.mkdir(parents=True)
        mass = float(rng.uniform(50, 500))
        calories = mass * float(rng.uniform(0.8, 2.2))
        fat, carb, protein = (mass * float(rng.uniform(0.02, 0.2)) for _ in range(3))
        shade = np.array([255.0, 200.0, 120.0]) * (0.35 + 0.6 * mass / 500)
        cameras = ("B", "C", "D") if number == 5 else ("A", "B", "C", "D")
        for camera in cameras:
            for frame in (1, 2):
                path = folder / f"camera_{camera}_frame_{frame:03d}.jpeg"
                _image(rng, shade, (36, 36)).save(path, format="JPEG")
                if sample is None and camera == "A":
                    sample = path
        if number in {7, 8}:
            continue  # dishes photographed but missing from the metadata
        ingredients: list[str] = []
        for ingredient in range(1 + number % 3):
            grams = mass / (1 + number % 3)
            ingredients += [
                f"ingr_{ingredient + 1:010d}",
                ("white rice", "olive oil", "chicken breast")[ingredient],
                f"{grams:.6f}",
                f"{grams * 1.3:.6f}",
                f"{grams * 0.05:.6f}",
                f"{grams * 0.2:.6f}",
                f"{grams * 0.1:.6f}",
            ]
        totals = [calories, mass, fat, carb, protein]
        row = [dish_id, *(f"{value:.6f}" for value in totals), *ingredients]
        rows["cafe2" if number % 4 == 3 else "cafe1"].append(row)
    for extra in range(3):  # metadata of dishes not in this download
        rows["cafe1"].append([f"dish_{1560000000 + extra}", "100.0", "80.0", "3.0", "9.0", "4.0"])
    metadata = root / "metadata"
    metadata.mkdir()
    for cafe, cafe_rows in rows.items():
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\n").writerows(cafe_rows)
        (metadata / f"dish_metadata_{cafe}.csv").write_text(buffer.getvalue(), encoding="utf-8")
    assert sample is not None
    return FakeDataset(root, sample, {"dishes": dishes, "without_metadata": 2, "without_camera": 1})


def build_fer2013(root: Path, *, train_per_class: int = 10, test_per_class: int = 3) -> FakeDataset:
    """``train/<emotion>/*.jpg`` and ``test/<emotion>/*.jpg``: 48x48 grayscale, 7 emotions."""
    rng = np.random.default_rng(4)
    counter = 10000000
    for index, emotion in enumerate(EMOTIONS):
        grey = np.full(3, 30 + 200 * index / (len(EMOTIONS) - 1))
        for split, count, prefix in (
            ("train", train_per_class, "Training"),
            ("test", test_per_class, "PrivateTest"),
        ):
            folder = root / split / emotion
            folder.mkdir(parents=True, exist_ok=True)
            for _ in range(count):
                counter += 97
                _image(rng, grey, (48, 48), "L").save(folder / f"{prefix}_{counter}.jpg")
    sample = next(iter(sorted((root / "test" / "happy").iterdir())))
    return FakeDataset(root, sample, {"classes": len(EMOTIONS)})


@dataclass(frozen=True)
class KaggleRecipe:
    """A seed recipe, the Kaggle dataset it fetches and the builder of its fake."""

    recipe: str
    owner: str
    dataset: str
    build: Callable[[Path], FakeDataset]


KAGGLE_RECIPES = {
    "fruits-vegetables": KaggleRecipe(
        "fruits-vegetables", "kritikseth", "fruit-and-vegetable-image-recognition", build_fruits
    ),
    "movie-posters": KaggleRecipe("movie-posters", "raman77768", "movie-classifier", build_posters),
    "nutrition5k": KaggleRecipe(
        "nutrition5k",
        "zygmuntyt",
        "nutrition5k-dataset-side-angle-images",
        build_nutrition5k,
    ),
    "fer2013": KaggleRecipe("fer2013", "msambare", "fer2013", build_fer2013),
}


def fill_kaggle_cache(cache: Path, recipe: KaggleRecipe, version: int = 1) -> FakeDataset:
    """Build a fake where kagglehub leaves a completed download of ``owner/dataset``."""
    folder = cache / "datasets" / recipe.owner / recipe.dataset / "versions" / str(version)
    folder.mkdir(parents=True)
    fake = recipe.build(folder)
    (cache / "datasets" / recipe.owner / recipe.dataset / f"{version}.complete").touch()
    return fake
