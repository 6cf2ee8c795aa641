"""Decode and resize images: the ONE pipeline shared by ``data preprocess`` and ``serve``.

Training and serving call :func:`load_image` with the same parameters (read from the prepared
dataset's manifest, then from the bundle), so they cannot disagree about orientation, colour
conversion, resampling or cropping. This module never imports torch.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import IO, Any, Literal

import numpy as np
from numpy.typing import NDArray
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from visionops.errors import ImageError

__all__ = [
    "IMAGE_SUFFIXES",
    "LETTERBOX_FILL",
    "decode_image",
    "displayed_size",
    "heatmap_overlay",
    "image_statistics",
    "load_image",
    "load_image_and_source",
    "resize_image",
    "sniff_format",
]

IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm"}
)
LETTERBOX_FILL = 114
"""Grey level of letterbox padding (mid-grey, so padding carries no strong edge)."""

_MAGIC: tuple[tuple[bytes, int, str], ...] = (
    (b"\xff\xd8\xff", 0, "jpeg"),
    (b"\x89PNG\r\n\x1a\n", 0, "png"),
    (b"GIF87a", 0, "gif"),
    (b"GIF89a", 0, "gif"),
    (b"BM", 0, "bmp"),
    (b"II*\x00", 0, "tiff"),
    (b"MM\x00*", 0, "tiff"),
    (b"WEBP", 8, "webp"),
    (b"P5", 0, "pnm"),
    (b"P6", 0, "pnm"),
    (b"P4", 0, "pnm"),
)


def sniff_format(head: bytes) -> str | None:
    """Name the image format from its first bytes (magic numbers), or None if not an image.

    Args:
        head: At least the first 12 bytes of the file.

    Returns:
        ``"jpeg"``, ``"png"``, ``"gif"``, ``"bmp"``, ``"tiff"``, ``"webp"``, ``"pnm"`` or None.
    """
    for magic, offset, name in _MAGIC:
        if head[offset : offset + len(magic)] == magic:
            if name == "webp" and head[:4] != b"RIFF":
                continue
            return name
    return None


def _to_8bit(image: Image.Image) -> Image.Image:
    """Bring 16-bit and 32-bit integer or float images to 8-bit by scaling, not clipping."""
    array = np.asarray(image)
    if image.mode == "F":
        scaled = np.clip(array, 0.0, 1.0 if array.max() <= 1.0 else 255.0)
        if scaled.max() <= 1.0:
            scaled = scaled * 255.0
        return Image.fromarray(np.round(scaled).astype(np.uint8), mode="L")
    array = array.astype(np.int64)
    peak = int(array.max()) if array.size else 0
    if peak > 255:
        array = array * 255 // (65535 if peak <= 65535 else peak)
    return Image.fromarray(np.clip(array, 0, 255).astype(np.uint8), mode="L")


def _convert(image: Image.Image, channels: Literal[1, 3]) -> Image.Image:
    if image.mode in {"I", "I;16", "I;16B", "I;16L", "I;16N", "F"}:
        image = _to_8bit(image)
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in {"RGBA", "LA", "PA", "RGBa", "La"}:
        # Transparent pixels become white, the background a viewer shows them on.
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    target = "L" if channels == 1 else "RGB"
    return image if image.mode == target else image.convert(target)


def decode_image(
    source: Path | bytes,
    *,
    channels: Literal[1, 3] = 3,
    max_pixels: int = 64_000_000,
    draft_size: int | None = None,
) -> Image.Image:
    """Open an image fully: EXIF orientation applied, converted to L or RGB.

    Handles grayscale, palette (with transparency), RGBA, CMYK and 16-bit inputs.

    Args:
        source: A file path or the file's bytes.
        channels: 1 for grayscale ("L"), 3 for RGB.
        max_pixels: Refuse images with more pixels than this (decompression bombs).
        draft_size: If given, JPEGs are decoded at the smallest DCT scale that keeps both
            sides at least this long (much faster for large photos).

    Returns:
        A loaded PIL image in mode "L" or "RGB".

    Raises:
        ImageError: The file is empty, not an image, truncated, corrupt or too large.
    """
    name = source.name if isinstance(source, Path) else "upload"
    try:
        if isinstance(source, Path):
            if source.stat().st_size == 0:
                raise ImageError(f"{name}: the file is empty (0 bytes)")
            handle: IO[bytes] = source.open("rb")
        else:
            if not source:
                raise ImageError(f"{name}: the file is empty (0 bytes)")
            handle = io.BytesIO(source)
        with handle:
            head = handle.read(16)
            if sniff_format(head) is None:
                raise ImageError(
                    f"{name}: not an image (unknown file signature) — use JPEG, PNG, BMP,"
                    " GIF, TIFF, WebP or PNM"
                )
            handle.seek(0)
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                opened = Image.open(handle)
                width, height = opened.size
                if width * height > max_pixels:
                    raise ImageError(
                        f"{name}: {width}x{height} is {width * height:,} pixels, above the"
                        f" {max_pixels:,} limit (possible decompression bomb) — shrink it or"
                        " raise data.max_image_pixels"
                    )
                if draft_size is not None and opened.format == "JPEG":
                    opened.draft(opened.mode, (draft_size, draft_size))
                opened.load()
            image: Image.Image = ImageOps.exif_transpose(opened) or opened
            return _convert(image, channels)
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(f"{name}: too many pixels (decompression bomb): {exc}") from None
    except UnidentifiedImageError:
        raise ImageError(f"{name}: the image data cannot be decoded (corrupt file)") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        reason = str(exc) or type(exc).__name__
        if "truncated" in reason.lower():
            reason = "the file is truncated"
        raise ImageError(f"{name}: cannot decode image: {reason}") from None


_QUARTER_TURNS = frozenset({5, 6, 7, 8})
"""EXIF orientations that swap width and height."""


def displayed_size(image: Image.Image) -> tuple[int, int]:
    """Width and height of an opened (not necessarily loaded) image as it is displayed.

    Reads the header only; a quarter-turn EXIF orientation swaps the sides, as
    :func:`decode_image` does when it applies the rotation.

    Args:
        image: An image from ``PIL.Image.open``.

    Returns:
        ``(width, height)`` in pixels.
    """
    width, height = image.size
    if image.getexif().get(ExifTags.Base.Orientation) in _QUARTER_TURNS:
        return height, width
    return width, height


def resize_image(
    image: Image.Image, size: int, policy: Literal["crop", "letterbox"] = "crop"
) -> NDArray[np.uint8]:
    """Resize to a ``size`` x ``size`` square.

    ``crop`` scales the shorter side to ``size`` and takes the centre square; ``letterbox``
    scales the longer side to ``size`` and pads the rest with :data:`LETTERBOX_FILL`.
    Bilinear resampling with antialiasing (Pillow's reducing filter) in both cases.

    Args:
        image: A decoded image in mode "L" or "RGB".
        size: Output side in pixels.
        policy: ``crop`` or ``letterbox``.

    Returns:
        A ``(size, size, C)`` uint8 array, C = 1 or 3.
    """
    width, height = image.size
    if policy == "crop":
        side = min(width, height)
        left = (width - side) / 2
        top = (height - side) / 2
        out = image.resize(
            (size, size),
            Image.Resampling.BILINEAR,
            box=(left, top, left + side, top + side),
        )
    else:
        scale = size / max(width, height)
        new_w = max(1, round(width * scale))
        new_h = max(1, round(height * scale))
        resized = image.resize((new_w, new_h), Image.Resampling.BILINEAR)
        fill: int | tuple[int, int, int] = (
            LETTERBOX_FILL if image.mode == "L" else (LETTERBOX_FILL,) * 3
        )
        out = Image.new(image.mode, (size, size), fill)
        out.paste(resized, ((size - new_w) // 2, (size - new_h) // 2))
    array = np.asarray(out, dtype=np.uint8)
    if array.ndim == 2:
        array = array[:, :, None]
    return array


def load_image(
    source: Path | bytes,
    *,
    size: int,
    channels: Literal[1, 3] = 3,
    policy: Literal["crop", "letterbox"] = "crop",
    max_pixels: int = 64_000_000,
) -> NDArray[np.uint8]:
    """Decode and resize one image exactly as visionops does everywhere.

    Args:
        source: A file path or the file's bytes.
        size: Output side in pixels.
        channels: 1 or 3.
        policy: ``crop`` or ``letterbox`` (see :func:`resize_image`).
        max_pixels: Decompression-bomb limit.

    Returns:
        A ``(size, size, channels)`` uint8 array.

    Raises:
        ImageError: The image cannot be decoded or is too large.

    Examples:
        >>> pixels = load_image(Path("cat.jpg"), size=224)  # doctest: +SKIP
        >>> pixels.shape
        (224, 224, 3)
    """
    return load_image_and_source(
        source, size=size, channels=channels, policy=policy, max_pixels=max_pixels
    )[1]


def load_image_and_source(
    source: Path | bytes,
    *,
    size: int,
    channels: Literal[1, 3] = 3,
    policy: Literal["crop", "letterbox"] = "crop",
    max_pixels: int = 64_000_000,
) -> tuple[Image.Image, NDArray[np.uint8]]:
    """:func:`load_image`, also returning the decoded image before the resize.

    Drift's camera statistics (noise, block edges) read the decoded image: the resize to the
    model's size averages them away. JPEGs are decoded at the smallest DCT scale that keeps
    both sides at least ``size`` long, as :func:`load_image` does.

    Returns:
        ``(decoded image, (size, size, channels) uint8 array)``.

    Raises:
        ImageError: The image cannot be decoded or is too large.
    """
    image = decode_image(source, channels=channels, max_pixels=max_pixels, draft_size=size)
    return image, resize_image(image, size, policy)


_UINT32_SQUARES = (2**32 - 1) // (255 * 255)
"""Most values per channel whose sum of squares still fits a uint32 accumulator."""


def image_statistics(pixels: NDArray[np.uint8]) -> dict[str, float]:
    """Summary statistics of one image used by drift detection (on the 0..1 scale).

    Args:
        pixels: A ``(H, W, C)`` uint8 array.

    Returns:
        ``mean``, ``std``, ``min``, ``max`` of all pixels, ``sharpness`` (variance of the
        Laplacian of the grey image), ``saturation`` (mean HSV saturation; 0 for grey images),
        plus ``mean_c{i}`` per channel.
    """
    # Every upload pays for this, so it works on contiguous uint8 channel planes (numpy
    # reductions over a last axis of 3 were 5x slower), sums integers exactly and writes into
    # buffers it already has. Drift references hold the values of the first version of this
    # function: the integer sums are exact in any order, and the float32 grey, Laplacian and
    # saturation go through the same float32 operations in the same order, so every value
    # is the same to the last bit (tests/unit/test_statistics_frozen.py).
    planes = np.ascontiguousarray(np.moveaxis(pixels, -1, 0))
    channels = planes.shape[0]
    first = planes[0]
    total = first.astype(np.uint16)
    brightest = darkest = first
    if channels > 1:
        brightest = np.maximum(first, planes[1])
        darkest = np.minimum(first, planes[1])
        total += planes[1]
        for plane in planes[2:]:
            total += plane
            np.maximum(brightest, plane, out=brightest)
            np.minimum(darkest, plane, out=darkest)
    # uint16 holds 255² exactly; np.bincount (the first version) cast every pixel to intp
    # and cost 4x more for the same integers.
    wide = planes.reshape(channels, -1).astype(np.uint16)
    accumulator = np.uint32 if wide.shape[1] <= _UINT32_SQUARES else np.uint64
    sums = [float(value) for value in wide.sum(axis=1, dtype=accumulator).tolist()]
    np.multiply(wide, wide, out=wide)
    squares = float(sum(wide.sum(axis=1, dtype=accumulator).tolist()))
    mean = sum(sums) / pixels.size
    grey = total.astype(np.float32)
    np.divide(grey, 255.0 * channels, out=grey)
    laplacian = np.add(grey[:-2, 1:-1], grey[2:, 1:-1])
    laplacian += grey[1:-1, :-2]
    laplacian += grey[1:-1, 2:]
    laplacian -= 4 * grey[1:-1, 1:-1]
    # Where the brightest channel is 0 so is the chroma: 0 / 1 gives the 0 that the
    # saturation of black is, without a masked division.
    saturation = np.subtract(brightest, darkest).astype(np.float32)
    np.divide(saturation, np.maximum(brightest, 1), out=saturation)
    stats = {
        "mean": mean / 255.0,
        "std": float(np.sqrt(max(squares / pixels.size - mean * mean, 0.0))) / 255.0,
        "min": float(darkest.min()) / 255.0,
        "max": float(brightest.max()) / 255.0,
        "sharpness": float(laplacian.var()) if laplacian.size else 0.0,
        "saturation": float(saturation.mean()),
    }
    for index, plane_sum in enumerate(sums):
        stats[f"mean_c{index}"] = plane_sum / first.size / 255.0
    return stats


# A perceptually ordered dark-to-bright ramp (black, purple, red, orange, pale yellow).
_RAMP_STOPS = np.array(
    [[0, 0, 4], [87, 16, 110], [188, 55, 84], [249, 142, 9], [252, 255, 164]], np.float32
)
_RAMP = np.stack(
    [np.interp(np.linspace(0, 1, 256), np.linspace(0, 1, 5), _RAMP_STOPS[:, c]) for c in range(3)],
    axis=1,
).astype(np.float32)


def heatmap_overlay(
    image: NDArray[np.uint8], heatmap: NDArray[np.floating[Any]], low: float, high: float
) -> NDArray[np.uint8]:
    """The anomaly map in colour over the image it was computed on.

    Colours run along a dark-to-bright ramp from ``low`` to ``high``; hotter pixels cover the
    image more, so a good image stays recognisable and a defect lights up.

    Args:
        image: The model-sized ``(H, W, C)`` or ``(H, W)`` uint8 image.
        heatmap: ``(H, W)`` patch distances, upsampled to the image.
        low: The map value drawn darkest.
        high: The map value drawn brightest.

    Returns:
        ``(H, W, 3)`` uint8 RGB.
    """
    rgb = np.asarray(image, np.float32).reshape(image.shape[0], image.shape[1], -1)
    if rgb.shape[-1] == 1:
        rgb = np.repeat(rgb, 3, axis=-1)
    level = np.clip((np.asarray(heatmap, np.float32) - low) / max(high - low, 1e-12), 0.0, 1.0)
    colour = _RAMP[np.round(level * 255).astype(np.int64)]
    weight = (0.25 + 0.6 * level)[..., None]
    overlay: NDArray[np.uint8] = np.round(rgb * (1 - weight) + colour * weight).astype(np.uint8)
    return overlay
