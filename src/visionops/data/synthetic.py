"""Embedded synthetic demo datasets: real image files in the layouts of the real datasets.

Each demo stands for one of the seed systems (see ``SEEDS.md``) and is written to disk in the
same folder layout as the public dataset it imitates, so the same readers handle both:

- ``shapes``: 8 shape classes, fruits-and-vegetables layout
  (``train/<class>/*.jpg``, ``validation/<class>/*.jpg``, ``test/<class>/*.jpg``);
- ``multilabel``: 1–3 shapes of 6 kinds per image, movie-poster layout
  (``Multi_Label_dataset/train.csv`` + ``Multi_Label_dataset/Images/<Id>.jpg``);
- ``regression``: plates of coloured food items, Nutrition5k layout
  (``dish_<id>/[frames_sampled30/]camera_<A-D>_frame_<NNN>.jpeg`` + ragged
  ``metadata/dish_metadata_cafe{1,2}.csv``);
- ``anomaly``: a carpet-like texture with holes, scratches and stains, MVTec AD layout
  (``data.demo.defects=faint``: thin, faint threads instead, the hard case).

Every image is drawn from its own random stream seeded by ``(seed, demo, index)``, so the
same settings give byte-identical files. Only PIL and numpy are used (no torch), and the
images are made to be learnable by a small CNN at 64 px while varying colour, size,
position, rotation, background texture, noise and distractors.

Examples:
    >>> from visionops.config import DemoSettings
    >>> generate_demo("shapes", Path("data/raw/shapes"), DemoSettings(images_per_class=10))
"""

from __future__ import annotations

import csv
import difflib
import io
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageDraw, ImageFilter

from visionops.config import DemoSettings
from visionops.errors import SourceError
from visionops.progress import NULL_PROGRESS, ProgressReporter

__all__ = [
    "ANOMALY_CATEGORY",
    "ANOMALY_DEFECTS",
    "ANOMALY_FAINT_DEFECTS",
    "DEMOS",
    "INGREDIENTS",
    "MULTILABEL_CLASSES",
    "SHAPE_CLASSES",
    "Ingredient",
    "demo_name",
    "demo_version",
    "generate_demo",
    "shapes_image",
]

DEMOS: dict[str, str] = {
    "shapes": "8 shape classes, single-label; fruits-and-vegetables folder layout",
    "multilabel": "1-3 of 6 shape kinds per image, multi-label; movie-poster CSV layout",
    "regression": "plates of coloured food items, 5 nutrition totals; Nutrition5k layout",
    "anomaly": "carpet-like texture with holes, scratches and stains; MVTec AD layout",
}
"""The embedded demos, ``name → one-line description``; fetch them as ``demo:<name>``."""

SHAPE_CLASSES: tuple[str, ...] = (
    "circle",
    "cross",
    "diamond",
    "hexagon",
    "ring",
    "square",
    "star",
    "triangle",
)
MULTILABEL_CLASSES: tuple[str, ...] = ("circle", "cross", "ring", "square", "star", "triangle")
ANOMALY_CATEGORY = "carpet"
ANOMALY_DEFECTS: tuple[str, ...] = ("hole", "scratch", "stain")
ANOMALY_FAINT_DEFECTS: tuple[str, ...] = ("thread",)
_FAINT_WIDTH_PX = 1.5
"""Width of a faint thread in pixels of the generated image, at any image size."""
_FAINT_DELTA = 22.0
"""Grey levels a faint thread darkens or lightens the carpet by (the weave swings ±22)."""

RGB = tuple[int, int, int]
FloatImage = NDArray[np.float32]

# Stable per-demo stream ids: adding a demo never changes the files of another.
_STREAM = {"shapes": 1, "multilabel": 2, "regression": 3, "anomaly": 4}
_SUPERSAMPLE = 3  # masks are drawn at 3x and box-filtered down: smooth, deterministic edges
_JPEG_QUALITY = 92
_BACKGROUND_VALUE = (0.05, 0.35)
_BACKGROUND_SATURATION = (0.1, 0.9)
_OBJECT_TINT = (0.15, 0.55)
_EXTENT = 1.2  # farthest point of any unit shape (the triangle's tip): shapes are never cut


@dataclass(frozen=True)
class Ingredient:
    """A food item of the regression demo: its colour and nutrition per gram.

    Attributes:
        ingredient_id: Nutrition5k-style id (``ingr_0000000001``).
        name: Human-readable name.
        colour: Base RGB colour of the item on the plate.
        kcal: Calories per gram.
        fat: Grams of fat per gram.
        carb: Grams of carbohydrate per gram.
        protein: Grams of protein per gram.
    """

    ingredient_id: str
    name: str
    colour: RGB
    kcal: float
    fat: float
    carb: float
    protein: float


# Colours far apart in hue (and from the white plate) so a small CNN can tell them apart;
# nutrition values are realistic per-gram figures so the totals look like Nutrition5k's.
INGREDIENTS: tuple[Ingredient, ...] = (
    Ingredient("ingr_0000000001", "rice", (235, 215, 120), 1.30, 0.003, 0.280, 0.027),
    Ingredient("ingr_0000000002", "chicken", (130, 80, 45), 1.65, 0.036, 0.000, 0.310),
    Ingredient("ingr_0000000003", "broccoli", (40, 150, 50), 0.34, 0.004, 0.066, 0.028),
    Ingredient("ingr_0000000004", "salmon", (255, 135, 40), 2.08, 0.130, 0.000, 0.200),
    Ingredient("ingr_0000000005", "beetroot", (150, 20, 100), 0.43, 0.002, 0.096, 0.016),
    Ingredient("ingr_0000000006", "blueberries", (50, 60, 170), 0.57, 0.003, 0.145, 0.007),
)

# Item area per gram as a share of the plate disc: grams are visible as area.
_AREA_PER_GRAM = 0.0009


def demo_version(settings: DemoSettings) -> str:
    """The ``version`` string recorded in ``source.json`` for a generated demo.

    Args:
        settings: The demo settings the files were generated with.

    Returns:
        For example ``"seed=0,images_per_class=80,image_size=96"`` (``",defects=faint"``
        appended for the faint anomaly defects, so a cached coarse copy is not reused).
    """
    version = (
        f"seed={settings.seed},images_per_class={settings.images_per_class},"
        f"image_size={settings.image_size}"
    )
    return version if settings.defects == "coarse" else f"{version},defects={settings.defects}"


def demo_name(name: str) -> str:
    """Check a demo name and return it without the ``demo:`` prefix.

    Args:
        name: ``"shapes"`` or ``"demo:shapes"``.

    Returns:
        The bare name, a key of :data:`DEMOS`.

    Raises:
        SourceError: No such demo (the message lists them, with a "did you mean").
    """
    bare = name.removeprefix("demo:")
    if bare not in DEMOS:
        close = difflib.get_close_matches(bare, list(DEMOS), n=1, cutoff=0.5)
        hint = f"did you mean 'demo:{close[0]}'? " if close else ""
        known = ", ".join(f"demo:{known_name}" for known_name in DEMOS)
        raise SourceError(f"unknown demo '{name}' — {hint}the embedded demos are {known}")
    return bare


def generate_demo(
    name: str,
    folder: Path,
    settings: DemoSettings,
    progress: ProgressReporter = NULL_PROGRESS,
) -> None:
    """Write one embedded demo dataset into ``folder`` (created if missing).

    Args:
        name: A key of :data:`DEMOS` (``"shapes"``), with or without the ``demo:`` prefix.
        folder: Where the dataset's files go; existing files of the same names are replaced.
        settings: Size and seed (``data.demo`` settings).
        progress: Receives one bar over the images written.

    Raises:
        SourceError: ``name`` is not a known demo.

    Examples:
        >>> generate_demo("demo:anomaly", Path("/tmp/carpet"), DemoSettings(images_per_class=8))
    """
    bare = demo_name(name)
    folder.mkdir(parents=True, exist_ok=True)
    writer: Callable[[Path, DemoSettings, ProgressReporter], None] = {
        "shapes": _write_shapes,
        "multilabel": _write_multilabel,
        "regression": _write_regression,
        "anomaly": _write_anomaly,
    }[bare]
    writer(folder, settings, progress)


# --------------------------------------------------------------------------- drawing helpers


def _rng(settings: DemoSettings, demo: str, *index: int) -> np.random.Generator:
    return np.random.default_rng([settings.seed & 0xFFFFFFFF, _STREAM[demo], *index])


def _save_jpeg(pixels: FloatImage, path: Path) -> None:
    image = Image.fromarray(np.clip(pixels + 0.5, 0, 255).astype(np.uint8), mode="RGB")
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=_JPEG_QUALITY)
    path.write_bytes(buffer.getvalue())


def _save_png(pixels: NDArray[np.float32] | NDArray[np.uint8], path: Path, mode: str) -> None:
    array = np.clip(np.asarray(pixels, dtype=np.float32) + 0.5, 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(array, mode=mode).save(buffer, format="PNG", optimize=False)
    path.write_bytes(buffer.getvalue())


def _random_colour(
    rng: np.random.Generator,
    value_range: tuple[float, float] = (0.2, 1.0),
    saturation_range: tuple[float, float] = (0.25, 1.0),
) -> NDArray[np.float32]:
    """A random-hue colour with saturation and brightness (HSV value) in the given ranges."""
    hue = rng.uniform(0.0, 1.0)
    saturation = rng.uniform(*saturation_range)
    value = rng.uniform(*value_range)
    sector = int(hue * 6) % 6
    fraction = hue * 6 - math.floor(hue * 6)
    p = value * (1 - saturation)
    q = value * (1 - saturation * fraction)
    t = value * (1 - saturation * (1 - fraction))
    rgb = [
        (value, t, p),
        (q, value, p),
        (p, value, t),
        (p, q, value),
        (t, p, value),
        (value, p, q),
    ][sector]
    return np.array(rgb, dtype=np.float32) * 255.0


def _coords(size: int) -> tuple[FloatImage, FloatImage]:
    axis = ((np.arange(size) + 0.5) / size).astype(np.float32)
    return axis[None, :].repeat(size, 0), axis[:, None].repeat(size, 1)


def _background(rng: np.random.Generator, size: int) -> FloatImage:
    """A two-colour gradient at a random angle, plus a faint random texture."""
    x, y = _coords(size)
    # Backgrounds stay darker than the objects drawn on them: any hue, but a consistent
    # brightness contrast keeps the demos learnable from a few hundred images.
    first = _random_colour(rng, _BACKGROUND_VALUE, _BACKGROUND_SATURATION)
    second = _random_colour(rng, _BACKGROUND_VALUE, _BACKGROUND_SATURATION)
    angle = rng.uniform(0, 2 * math.pi)
    ramp = (x - 0.5) * math.cos(angle) + (y - 0.5) * math.sin(angle) + 0.5
    ramp = np.clip(ramp, 0.0, 1.0)[..., None]
    image = first * (1 - ramp) + second * ramp
    texture = rng.integers(0, 3)
    if texture == 1:  # faint stripes
        period = rng.uniform(0.08, 0.25)
        theta = rng.uniform(0, math.pi)
        phase = (x * math.cos(theta) + y * math.sin(theta)) / period
        image = image + (8.0 * np.sin(2 * math.pi * phase))[..., None]
    elif texture == 2:  # soft blotches: upsampled coarse noise
        coarse = rng.normal(0.0, 9.0, size=(5, 5, 3)).astype(np.float32)
        blotches = Image.fromarray(coarse[..., 0]).resize((size, size), Image.Resampling.BICUBIC)
        image = image + np.asarray(blotches, dtype=np.float32)[..., None]
    return image.astype(np.float32)


def _add_noise(image: FloatImage, rng: np.random.Generator, sigma: float) -> FloatImage:
    noise = rng.standard_normal(image.shape, dtype=np.float32) * np.float32(sigma)
    return image + noise


def _object_colour(rng: np.random.Generator) -> NDArray[np.float32]:
    """A random-hue object colour, lighter (in luminance) than any background.

    A pure hue mixed with white: even the darkest hue (blue) keeps a luminance near 0.5,
    above the backgrounds' 0.35 at most, so the silhouette is always visible in brightness.
    """
    pure = _random_colour(rng, (1.0, 1.0), (1.0, 1.0))
    tint = rng.uniform(*_OBJECT_TINT)
    return (255.0 * (1.0 - tint) + pure * tint).astype(np.float32)


def _polygon(kind: str) -> list[tuple[float, float]]:
    """Unit polygon (radius ~1, centred at 0) of a shape kind."""

    def regular(sides: int, start: float, radius: float = 1.0) -> list[tuple[float, float]]:
        return [
            (
                radius * math.cos(start + 2 * math.pi * k / sides),
                radius * math.sin(start + 2 * math.pi * k / sides),
            )
            for k in range(sides)
        ]

    if kind == "square":
        return regular(4, math.pi / 4, 1.05)
    if kind == "triangle":
        # The centroid sits at 0; radius a bit larger so its area is close to the others'.
        return regular(3, -math.pi / 2, 1.2)
    if kind == "hexagon":
        return regular(6, 0.0)
    if kind == "diamond":
        return [(0.0, -1.15), (0.55, 0.0), (0.0, 1.15), (-0.55, 0.0)]
    if kind == "star":
        points = []
        for k in range(10):
            radius = 1.15 if k % 2 == 0 else 0.45
            angle = -math.pi / 2 + math.pi * k / 5
            points.append((radius * math.cos(angle), radius * math.sin(angle)))
        return points
    if kind == "cross":
        arm, half = 1.0, 0.32
        return [
            (-half, -arm),
            (half, -arm),
            (half, -half),
            (arm, -half),
            (arm, half),
            (half, half),
            (half, arm),
            (-half, arm),
            (-half, half),
            (-arm, half),
            (-arm, -half),
            (-half, -half),
        ]
    raise ValueError(f"no polygon for {kind}")


def _draw_shape(
    draw: ImageDraw.ImageDraw,
    kind: str,
    cx: float,
    cy: float,
    radius: float,
    angle: float,
    aspect: float = 1.0,
) -> None:
    """Draw a filled shape (value 255) on a supersampled ``L`` mask."""
    if kind in {"circle", "ring"}:
        rx, ry = radius, radius * aspect
        draw.ellipse((cx - rx, cy - ry, cx + rx, cy + ry), fill=255)
        if kind == "ring":
            inner = 0.55
            draw.ellipse(
                (cx - rx * inner, cy - ry * inner, cx + rx * inner, cy + ry * inner), fill=0
            )
        return
    cos_a, sin_a = math.cos(angle), math.sin(angle)
    points = [
        (cx + radius * (px * cos_a - py * sin_a), cy + radius * (px * sin_a + py * cos_a))
        for px, py in _polygon(kind)
    ]
    draw.polygon(points, fill=255)


def _shape_mask(
    size: int, shapes: Sequence[tuple[str, float, float, float, float]]
) -> list[FloatImage]:
    """Anti-aliased 0..1 masks, one per ``(kind, cx, cy, radius, angle)`` (pixel units)."""
    big = size * _SUPERSAMPLE
    masks = []
    for kind, cx, cy, radius, angle in shapes:
        canvas = Image.new("L", (big, big), 0)
        _draw_shape(
            ImageDraw.Draw(canvas),
            kind,
            cx * _SUPERSAMPLE,
            cy * _SUPERSAMPLE,
            radius * _SUPERSAMPLE,
            angle,
        )
        small = canvas.resize((size, size), Image.Resampling.BOX)
        masks.append(np.asarray(small, dtype=np.float32)[..., None] / 255.0)
    return masks


def _distractors(rng: np.random.Generator, size: int, count: int) -> FloatImage:
    """Thin lines and small dots (RGBA premultiplied as RGB + alpha in channel 3)."""
    canvas = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    draw = ImageDraw.Draw(canvas)
    for _ in range(count):
        rgb = _random_colour(rng, (0.3, 0.7))
        colour = (int(rgb[0]), int(rgb[1]), int(rgb[2]), int(rng.integers(80, 160)))
        if rng.random() < 0.6:
            x0, y0, x1, y1 = (float(v) for v in rng.uniform(0, size, size=4))
            width = max(1, round(size / 96))
            draw.line((x0, y0, x1, y1), fill=colour, width=width)
        else:
            r = rng.uniform(0.01, 0.03) * size
            cx, cy = (float(v) for v in rng.uniform(0, size, size=2))
            draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=colour)
    return np.asarray(canvas, dtype=np.float32)


def _blend(image: FloatImage, layer: FloatImage) -> FloatImage:
    alpha = layer[..., 3:4] / 255.0
    blended: FloatImage = image * (1 - alpha) + layer[..., :3] * alpha
    return blended


def _fill(rng: np.random.Generator, size: int, colour: NDArray[np.float32]) -> FloatImage:
    """A shape's fill: its colour with a gentle linear shading."""
    x, y = _coords(size)
    angle = rng.uniform(0, 2 * math.pi)
    shade = ((x - 0.5) * math.cos(angle) + (y - 0.5) * math.sin(angle)) * rng.uniform(5, 25)
    return (colour + shade[..., None]).astype(np.float32)


def _composite(image: FloatImage, mask: FloatImage, fill: FloatImage) -> FloatImage:
    result: FloatImage = image * (1 - mask) + fill * mask
    return result


# --------------------------------------------------------------------------- shapes


def _split_counts(total: int) -> tuple[int, int, int]:
    """~70/15/15 split with at least one image in val and test."""
    val = max(1, round(total * 0.15))
    test = max(1, round(total * 0.15))
    return total - val - test, val, test


def _render_shapes_image(
    rng: np.random.Generator, size: int, kind: str
) -> tuple[FloatImage, FloatImage]:
    image = _background(rng, size)
    image = _blend(image, _distractors(rng, size, int(rng.integers(1, 4))))
    radius = rng.uniform(0.25, 0.36) * size
    margin = radius * _EXTENT + 1
    cx, cy = (float(v) for v in rng.uniform(margin, size - margin, size=2))
    angle = rng.uniform(0, 2 * math.pi)
    (mask,) = _shape_mask(size, [(kind, cx, cy, radius, angle)])
    colour = _object_colour(rng)
    image = _composite(image, mask, _fill(rng, size, colour))
    return _add_noise(image, rng, rng.uniform(2.0, 6.0)), mask


def shapes_image(
    settings: DemoSettings, kind: str, index: int
) -> tuple[NDArray[np.uint8], NDArray[np.float32]]:
    """One ``demo:shapes`` image as generated (before JPEG), and where its shape is.

    Args:
        settings: The demo's size and seed.
        kind: A name of :data:`SHAPE_CLASSES`.
        index: The image's number within its class (the ``_<index>`` of its file name).

    Returns:
        ``(H, W, 3)`` uint8 pixels and the ``(H, W)`` anti-aliased 0..1 mask of the shape.
    """
    rng = _rng(settings, "shapes", SHAPE_CLASSES.index(kind), index)
    pixels, mask = _render_shapes_image(rng, settings.image_size, kind)
    return np.clip(pixels + 0.5, 0, 255).astype(np.uint8), mask[..., 0]


def _write_shapes(folder: Path, settings: DemoSettings, progress: ProgressReporter) -> None:
    per_class = settings.images_per_class
    n_train, n_val, _ = _split_counts(per_class)
    task = progress.start("generating demo:shapes", total=per_class * len(SHAPE_CLASSES))
    for class_index, kind in enumerate(SHAPE_CLASSES):
        for split in ("train", "validation", "test"):
            (folder / split / kind).mkdir(parents=True, exist_ok=True)
        for index in range(per_class):
            split = (
                "train" if index < n_train else "validation" if index < n_train + n_val else "test"
            )
            rng = _rng(settings, "shapes", class_index, index)
            pixels, _ = _render_shapes_image(rng, settings.image_size, kind)
            _save_jpeg(pixels, folder / split / kind / f"{kind}_{index:05d}.jpg")
            task.advance()
    task.close()


# --------------------------------------------------------------------------- multilabel


def _render_multilabel_image(rng: np.random.Generator, size: int) -> tuple[FloatImage, list[str]]:
    image = _background(rng, size)
    image = _blend(image, _distractors(rng, size, int(rng.integers(0, 3))))
    count = int(rng.choice([1, 2, 3], p=[0.3, 0.4, 0.3]))
    kinds = [MULTILABEL_CLASSES[i] for i in rng.choice(len(MULTILABEL_CLASSES), count, False)]
    # One shape per quadrant: shapes never overlap, so every label stays visible.
    cells = rng.choice(4, count, replace=False)
    half = size / 2
    for kind, cell in zip(kinds, cells, strict=True):
        radius = rng.uniform(0.16, 0.2) * size
        extent = radius * _EXTENT
        slack = max(0.0, half - 2 * extent - 1)
        cx = (cell % 2) * half + extent + 0.5 + rng.uniform(0, slack)
        cy = (cell // 2) * half + extent + 0.5 + rng.uniform(0, slack)
        angle = rng.uniform(0, 2 * math.pi)
        (mask,) = _shape_mask(size, [(kind, cx, cy, radius, angle)])
        colour = _object_colour(rng)
        image = _composite(image, mask, _fill(rng, size, colour))
    image = _add_noise(image, rng, rng.uniform(2.0, 6.0))
    return image, sorted(kinds, key=MULTILABEL_CLASSES.index)


def _write_multilabel(folder: Path, settings: DemoSettings, progress: ProgressReporter) -> None:
    root = folder / "Multi_Label_dataset"
    images = root / "Images"
    images.mkdir(parents=True, exist_ok=True)
    total = settings.images_per_class * len(MULTILABEL_CLASSES)
    columns = sorted(MULTILABEL_CLASSES)
    rows: list[list[str]] = []
    task = progress.start("generating demo:multilabel", total=total)
    for index in range(total):
        rng = _rng(settings, "multilabel", index)
        pixels, labels = _render_multilabel_image(rng, settings.image_size)
        # IMDb-like ids, as in the movie-poster dataset.
        item_id = f"tt{index + 1:07d}"
        _save_jpeg(pixels, images / f"{item_id}.jpg")
        rows.append([item_id, str(labels), *("1" if c in labels else "0" for c in columns)])
        task.advance()
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["Id", "Genre", *columns])
    writer.writerows(rows)
    (root / "train.csv").write_text(buffer.getvalue(), encoding="utf-8")
    task.close()


# --------------------------------------------------------------------------- regression

_CAMERAS = ("A", "B", "C", "D")
_FRAMES_PER_CAMERA = 2


@dataclass(frozen=True)
class _Item:
    ingredient: Ingredient
    grams: float
    blobs: tuple[tuple[float, float, float, float, float], ...]  # cx, cy, rx, ry, angle


def _plan_dish(rng: np.random.Generator) -> list[_Item]:
    """Ingredients, grams and where each item lies on a unit plate (radius 1 at 0,0)."""
    count = int(rng.integers(1, 5))
    chosen = rng.choice(len(INGREDIENTS), count, replace=False)
    placed: list[tuple[float, float, float]] = []
    items: list[_Item] = []
    for ingredient_index in chosen:
        ingredient = INGREDIENTS[int(ingredient_index)]
        grams = float(rng.uniform(15.0, 160.0))
        pieces = int(rng.integers(1, 3))
        area = grams * _AREA_PER_GRAM * math.pi  # the unit plate's area is pi
        blobs: list[tuple[float, float, float, float, float]] = []
        for _ in range(pieces):
            piece_area = area / pieces
            aspect = rng.uniform(0.7, 1.0)
            rx = math.sqrt(piece_area / (math.pi * aspect))
            ry = rx * aspect
            extent = max(rx, ry)
            # Rejection sampling keeps items apart, so their visible area tracks grams.
            for attempt in range(60):
                distance = math.sqrt(rng.uniform(0, 1)) * max(0.0, 0.86 - extent)
                theta = rng.uniform(0, 2 * math.pi)
                cx, cy = distance * math.cos(theta), distance * math.sin(theta)
                if (
                    all(
                        math.hypot(cx - ox, cy - oy) > extent + other + 0.02
                        for ox, oy, other in placed
                    )
                    or attempt == 59
                ):
                    break
            placed.append((cx, cy, extent))
            blobs.append((cx, cy, rx, ry, float(rng.uniform(0, math.pi))))
        items.append(_Item(ingredient, round(grams, 1), tuple(blobs)))
    return items


def _render_dish(
    rng: np.random.Generator, items: Sequence[_Item], size: int, camera: int
) -> FloatImage:
    """One camera's view of a dish: table, plate (squashed by the camera angle), items."""
    big = size * _SUPERSAMPLE
    # Each camera looks from a slightly different height and side; frames barely differ.
    squash = (0.96, 0.9, 0.84, 0.93)[camera]
    brightness = (1.0, 0.92, 1.06, 0.97)[camera]
    shift_x = (0.0, 0.03, -0.03, 0.015)[camera] + rng.uniform(-0.01, 0.01)
    shift_y = (0.0, -0.02, 0.02, 0.03)[camera] + rng.uniform(-0.01, 0.01)
    plate_radius = 0.43 * big
    centre_x = big / 2 + shift_x * big
    centre_y = big / 2 + shift_y * big

    def to_pixels(px: float, py: float) -> tuple[float, float]:
        return centre_x + px * plate_radius, centre_y + py * plate_radius * squash

    # Table: a grey slate with grain, a colour no ingredient has; the plate: off-white.
    x, y = _coords(size)
    slate = np.array([88.0, 92.0, 100.0], dtype=np.float32) + rng.normal(0, 6, 3).astype(np.float32)
    grain = 10.0 * np.sin(2 * math.pi * (y * 9.0 + 0.6 * np.sin(x * 7.0 + camera)))
    table = slate + (grain + (x - 0.5) * 20.0)[..., None]

    canvas = Image.new("RGB", (big, big), (0, 0, 0))
    layer = ImageDraw.Draw(canvas)
    plate_mask = Image.new("L", (big, big), 0)
    ImageDraw.Draw(plate_mask).ellipse(
        (
            centre_x - plate_radius * 1.08,
            centre_y - plate_radius * 1.08 * squash,
            centre_x + plate_radius * 1.08,
            centre_y + plate_radius * 1.08 * squash,
        ),
        fill=255,
    )
    layer.ellipse(
        (
            centre_x - plate_radius * 1.08,
            centre_y - plate_radius * 1.08 * squash,
            centre_x + plate_radius * 1.08,
            centre_y + plate_radius * 1.08 * squash,
        ),
        fill=(214, 214, 210),
    )
    layer.ellipse(
        (
            centre_x - plate_radius,
            centre_y - plate_radius * squash,
            centre_x + plate_radius,
            centre_y + plate_radius * squash,
        ),
        fill=(240, 240, 236),
    )
    item_mask = Image.new("L", (big, big), 0)
    item_draw = ImageDraw.Draw(item_mask)
    for item in items:
        colour = tuple(int(c) for c in item.ingredient.colour)
        for cx, cy, rx, ry, angle in item.blobs:
            # An ellipse rotated by ``angle``, drawn as a polygon in plate coordinates.
            points = []
            for k in range(24):
                t = 2 * math.pi * k / 24
                ex, ey = rx * math.cos(t), ry * math.sin(t)
                px = cx + ex * math.cos(angle) - ey * math.sin(angle)
                py = cy + ex * math.sin(angle) + ey * math.cos(angle)
                points.append(to_pixels(px, py))
            layer.polygon(points, fill=colour)
            item_draw.polygon(points, fill=255)
    plate = np.asarray(canvas.resize((size, size), Image.Resampling.BOX), dtype=np.float32)
    alpha = np.asarray(plate_mask.resize((size, size), Image.Resampling.BOX), np.float32)
    alpha = alpha[..., None] / 255.0
    image = table * (1 - alpha) + plate * alpha
    # Food has texture: speckle only where items are, so the plate stays clean.
    on_item = np.asarray(item_mask.resize((size, size), Image.Resampling.BOX), np.float32)
    speckle = rng.standard_normal((size, size, 1), dtype=np.float32) * np.float32(8.0)
    image = image + speckle * (on_item[..., None] / 255.0)
    image = image * brightness * rng.uniform(0.97, 1.03)
    return _add_noise(image.astype(np.float32), rng, 3.0)


def _dish_row(dish_id: str, items: Sequence[_Item]) -> list[str]:
    def number(value: float) -> str:
        return str(round(value, 4))

    totals = np.zeros(5)
    fields: list[str] = []
    for item in items:
        ing = item.ingredient
        grams = item.grams
        values = (grams * ing.kcal, grams * ing.fat, grams * ing.carb, grams * ing.protein)
        totals += (values[0], grams, values[1], values[2], values[3])
        fields += [ing.ingredient_id, ing.name, number(grams), *(number(v) for v in values)]
    return [dish_id, *(number(float(t)) for t in totals), *fields]


def _write_regression(folder: Path, settings: DemoSettings, progress: ProgressReporter) -> None:
    dishes = settings.images_per_class * 5
    images_per_dish = len(_CAMERAS) * _FRAMES_PER_CAMERA
    rows: dict[str, list[list[str]]] = {"cafe1": [], "cafe2": []}
    task = progress.start("generating demo:regression", total=dishes * images_per_dish)
    for index in range(dishes):
        dish_id = f"dish_{1550000000 + 7919 * index}"
        plan_rng = _rng(settings, "regression", index, 0)
        items = _plan_dish(plan_rng)
        # Some dishes have the extra frames_sampled30/ level, as in the real side-angle set.
        dish_dir = folder / dish_id
        if index % 3 == 2:
            dish_dir = dish_dir / "frames_sampled30"
        dish_dir.mkdir(parents=True, exist_ok=True)
        for camera_index, camera in enumerate(_CAMERAS):
            for frame in range(_FRAMES_PER_CAMERA):
                rng = _rng(settings, "regression", index, 1 + camera_index, frame)
                pixels = _render_dish(rng, items, settings.image_size, camera_index)
                frame_number = 1 + frame * 15
                _save_jpeg(pixels, dish_dir / f"camera_{camera}_frame_{frame_number:03d}.jpeg")
                task.advance()
        rows["cafe2" if index % 4 == 3 else "cafe1"].append(_dish_row(dish_id, items))
    metadata = folder / "metadata"
    metadata.mkdir(parents=True, exist_ok=True)
    for cafe, cafe_rows in rows.items():
        if not cafe_rows:
            continue
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\n").writerows(cafe_rows)
        (metadata / f"dish_metadata_{cafe}.csv").write_text(buffer.getvalue(), encoding="utf-8")
    task.close()


# --------------------------------------------------------------------------- anomaly


def _carpet(rng: np.random.Generator, size: int) -> FloatImage:
    """A woven, periodic carpet texture with small per-image variation and noise."""
    x, y = _coords(size)
    # Period in pixels scales with the image, so the weave looks the same at every size.
    period = 12.0 / 96.0 * rng.uniform(0.95, 1.05)
    phase_x, phase_y = rng.uniform(0, 1, size=2)
    u = (x / period + phase_x) * 2 * math.pi
    v = (y / period + phase_y) * 2 * math.pi
    weave = np.sin(u) * np.sin(v) + 0.35 * np.sin(2 * u + v)
    base = np.array([118.0, 98.0, 84.0], dtype=np.float32) * rng.uniform(0.96, 1.04)
    image = base + (weave * 22.0)[..., None]
    fibres = rng.standard_normal((size, size, 1), dtype=np.float32) * np.float32(9.0)
    texture: FloatImage = (image + fibres).astype(np.float32)
    return texture


def _defect_mask(rng: np.random.Generator, size: int, defect: str) -> NDArray[np.uint8]:
    big = size * _SUPERSAMPLE
    mask = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(mask)
    cx, cy = (float(v) for v in rng.uniform(0.25 * big, 0.75 * big, size=2))
    if defect == "hole":
        radius = rng.uniform(0.05, 0.09) * big
        points = []
        for k in range(14):
            t = 2 * math.pi * k / 14
            r = radius * rng.uniform(0.7, 1.2)
            points.append((cx + r * math.cos(t), cy + r * math.sin(t)))
        draw.polygon(points, fill=255)
    elif defect == "scratch":
        length = rng.uniform(0.25, 0.45) * big
        angle = rng.uniform(0, math.pi)
        bend = rng.uniform(-0.15, 0.15) * length
        pts = []
        for k in range(9):
            t = k / 8 - 0.5
            px = cx + t * length * math.cos(angle) - math.sin(angle) * bend * (1 - 4 * t * t)
            py = cy + t * length * math.sin(angle) + math.cos(angle) * bend * (1 - 4 * t * t)
            pts.append((px, py))
        draw.line(pts, fill=255, width=max(2, round(0.025 * big)), joint="curve")
    else:  # stain
        radius = rng.uniform(0.08, 0.14) * big
        draw.ellipse(
            (cx - radius, cy - radius * rng.uniform(0.6, 1.0), cx + radius, cy + radius),
            fill=255,
        )
        mask = mask.filter(ImageFilter.GaussianBlur(radius * 0.25))
        mask = mask.point(lambda value: 255 if value > 100 else 0)
    small = mask.resize((size, size), Image.Resampling.BOX)
    return np.where(np.asarray(small) >= 128, 255, 0).astype(np.uint8)


def _apply_defect(
    rng: np.random.Generator, image: FloatImage, mask: NDArray[np.uint8], defect: str
) -> FloatImage:
    # Soft edges: the defect blends into the texture instead of being a flat sticker.
    soft = Image.fromarray(mask).filter(ImageFilter.GaussianBlur(0.8))
    weight = np.asarray(soft, dtype=np.float32)[..., None] / 255.0
    if defect == "hole":
        # Darker backing shows through, the weave mostly gone.
        backing = np.full_like(image, 45.0) + rng.standard_normal(image.shape, dtype=np.float32) * 6
        target = 0.25 * image + 0.75 * backing
    elif defect == "scratch":
        target = image + np.float32(rng.choice([-1.0, 1.0]) * rng.uniform(45, 65))
    else:  # stain: a colour cast, the weave still visible underneath
        cast = np.array(rng.choice([[28.0, -10.0, -18.0], [-18.0, 7.0, 25.0], [21.0, 18.0, -21.0]]))
        target = image + cast.astype(np.float32)
    result: FloatImage = image * (1 - weight) + target * weight
    return result


def _faint_thread(
    rng: np.random.Generator, image: FloatImage
) -> tuple[FloatImage, NDArray[np.uint8]]:
    """One thin, faint, curved, anti-aliased thread across ``image``, and its mask.

    The line is drawn at 4x and box-filtered down, so its coverage (alpha) is fractional at
    the edges; the mask is where at least half a pixel is covered, the pixels whose value
    moved by at least half the thread's contrast.
    """
    size = image.shape[0]
    scale = 4  # 1.5 px is 6 px at 4x: an exact width
    canvas = Image.new("L", (size * scale, size * scale), 0)
    length = rng.uniform(0.25, 0.5) * size
    angle = rng.uniform(0, math.pi)
    bend = rng.uniform(-0.6, 0.6)
    cx, cy = (float(v) for v in rng.uniform(0.25 * size, 0.75 * size, size=2))
    points = []
    for t in np.linspace(-0.5, 0.5, 40):
        theta = angle + bend * t
        points.append(
            (
                (cx + t * length * math.cos(theta)) * scale,
                (cy + t * length * math.sin(theta)) * scale,
            )
        )
    ImageDraw.Draw(canvas).line(
        points, fill=255, width=max(1, round(_FAINT_WIDTH_PX * scale)), joint="curve"
    )
    small = canvas.resize((size, size), Image.Resampling.BOX)
    alpha = np.asarray(small, dtype=np.float32) / 255.0
    sign = -1.0 if rng.random() < 0.7 else 1.0
    result: FloatImage = image + np.float32(sign * _FAINT_DELTA) * alpha[..., None]
    mask = np.where(alpha >= 0.5, 255, 0).astype(np.uint8)
    return result, mask


def _write_anomaly(folder: Path, settings: DemoSettings, progress: ProgressReporter) -> None:
    root = folder / ANOMALY_CATEGORY
    size = settings.image_size
    n_train = settings.images_per_class
    # As many good test images as training ones: held out, half become validation, whose good
    # images are the drift reference, and drift tests need drift.min_samples (30) of them.
    n_test_good = settings.images_per_class
    n_defect = max(2, settings.images_per_class // 6)
    faint = settings.defects == "faint"
    # The faint variant has one kind of defect, with as many images as the coarse three.
    defects = ANOMALY_FAINT_DEFECTS if faint else ANOMALY_DEFECTS
    if faint:
        n_defect *= len(ANOMALY_DEFECTS)
    total = n_train + n_test_good + n_defect * len(defects)
    task = progress.start("generating demo:anomaly", total=total)
    for split, count, stream in (("train", n_train, 0), ("test", n_test_good, 1)):
        target = root / split / "good"
        target.mkdir(parents=True, exist_ok=True)
        for index in range(count):
            rng = _rng(settings, "anomaly", stream, index)
            _save_png(_carpet(rng, size), target / f"{index:03d}.png", "RGB")
            task.advance()
    for defect_index, defect in enumerate(defects):
        target = root / "test" / defect
        truth = root / "ground_truth" / defect
        target.mkdir(parents=True, exist_ok=True)
        truth.mkdir(parents=True, exist_ok=True)
        for index in range(n_defect):
            rng = _rng(settings, "anomaly", 2 + defect_index, index)
            image = _carpet(rng, size)
            if faint:
                image, mask = _faint_thread(rng, image)
            else:
                mask = _defect_mask(rng, size, defect)
                image = _apply_defect(rng, image, mask, defect)
            _save_png(image, target / f"{index:03d}.png", "RGB")
            _save_png(mask, truth / f"{index:03d}_mask.png", "L")
            task.advance()
    task.close()
