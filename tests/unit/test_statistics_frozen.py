"""The drift statistics return what the code that built users' references returned.

Drift references already on disk were computed by the implementations frozen below (copied
verbatim from ``visionops.imaging`` and ``visionops.image_quality`` before they were made
cheaper). They are the definition: the live functions must agree with them exactly where the
value comes from integer sums, and to the last bit for the float32 ones (the same float32
operations in the same order; a reordered float32 sum would move the last bits).
"""

from __future__ import annotations

import importlib.util
import io
import math
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from numpy.typing import NDArray
from PIL import Image

from visionops.image_quality import (
    colour_statistics,
    jpeg_quality,
    quality_statistics,
    source_statistics,
)
from visionops.imaging import decode_image, displayed_size, image_statistics, resize_image

# ---- frozen reference implementations (do not edit: they define the values) --------------

_LEVELS = np.arange(256, dtype=np.float64)
_SQUARED_LEVELS = _LEVELS * _LEVELS


def reference_image_statistics(pixels: NDArray[np.uint8]) -> dict[str, float]:
    planes = list(np.ascontiguousarray(np.moveaxis(pixels, -1, 0)))
    total = planes[0].astype(np.uint16)
    brightest = darkest = planes[0]
    for plane in planes[1:]:
        total = total + plane
        brightest = np.maximum(brightest, plane)
        darkest = np.minimum(darkest, plane)
    histograms = [np.bincount(plane.ravel(), minlength=256) for plane in planes]
    sums = [float(histogram @ _LEVELS) for histogram in histograms]
    squares = sum(float(histogram @ _SQUARED_LEVELS) for histogram in histograms)
    mean = sum(sums) / pixels.size
    grey = total.astype(np.float32) / (255.0 * len(planes))
    laplacian = (
        grey[:-2, 1:-1] + grey[2:, 1:-1] + grey[1:-1, :-2] + grey[1:-1, 2:] - 4 * grey[1:-1, 1:-1]
    )
    chroma = (brightest - darkest).astype(np.float32)
    saturation = np.divide(
        chroma, brightest.astype(np.float32), out=np.zeros_like(chroma), where=brightest > 0
    )
    stats = {
        "mean": mean / 255.0,
        "std": float(np.sqrt(max(squares / pixels.size - mean * mean, 0.0))) / 255.0,
        "min": float(darkest.min()) / 255.0,
        "max": float(brightest.max()) / 255.0,
        "sharpness": float(laplacian.var()) if laplacian.size else 0.0,
        "saturation": float(saturation.mean()),
    }
    for index, (plane, plane_sum) in enumerate(zip(planes, sums, strict=True)):
        stats[f"mean_c{index}"] = plane_sum / plane.size / 255.0
    return stats


_MAX_SIDE = 256
_JPEG_BLOCK = 8
_STEP_FLOOR = 0.05
_NOISE_GAIN = 6.0
_MAD_TO_SD = 1.0 / 0.6745


def _reference_grid_crop(image: Image.Image, period: int) -> Image.Image:
    width, height = image.size
    crop_w, crop_h = min(width, _MAX_SIDE), min(height, _MAX_SIDE)
    if (crop_w, crop_h) == (width, height):
        return image
    step = max(period, 1)
    left = (width - crop_w) // 2 // step * step
    top = (height - crop_h) // 2 // step * step
    return image.crop((left, top, left + crop_w, top + crop_h))


def _reference_median(counts: NDArray[np.int64]) -> float:
    cumulative = np.cumsum(counts)
    half = cumulative[-1] / 2.0
    index = int(np.searchsorted(cumulative, half))
    below = cumulative[index - 1] if index else 0
    return float(index - 0.5 + (half - below) / max(int(counts[index]), 1))


def _reference_noise_and_detail(grey: NDArray[np.int16]) -> tuple[float, float]:
    if min(grey.shape) < 3:
        return 0.0, 0.0
    across = grey[:, :-2] + grey[:, 2:] - 2 * grey[:, 1:-1]
    residual = np.abs(across[:-2] + across[2:] - 2 * across[1:-1])
    counts = np.bincount(residual.ravel())
    noise = max(_reference_median(counts), 0.0) * _MAD_TO_SD / _NOISE_GAIN / 255.0
    detail = float(counts @ np.arange(len(counts))) / residual.size / (_NOISE_GAIN * 255.0)
    return noise, detail


def _reference_blockiness(grey: NDArray[np.int16], period: int) -> float | None:
    height, width = grey.shape
    if period < 2 or width < 2 * period + 1 or height < 2 * period + 1:
        return None
    ratios = []
    for axis in (1, 0):
        steps = np.abs(np.diff(grey, axis=axis))
        profile = steps.sum(axis=1 - axis, dtype=np.int64) / steps.shape[1 - axis]
        usable = len(profile) // period * period
        phases = profile[:usable].reshape(-1, period).mean(axis=0)
        strongest = int(np.argmax(phases))
        others = float(np.delete(phases, strongest).mean())
        ratios.append((float(phases[strongest]) + _STEP_FLOOR) / (others + _STEP_FLOOR))
    return float(np.mean(ratios))


_IJG_LUMINANCE_SUM = 3688.0  # the sum of the IJG quality-50 luminance table


def _reference_luminance_table(data: bytes) -> list[int] | None:
    position = 2
    while position + 4 <= len(data):
        if data[position] != 0xFF:
            return None
        marker = data[position + 1]
        if marker == 0xFF:
            position += 1
            continue
        if marker == 0xDA:
            return None
        length = int.from_bytes(data[position + 2 : position + 4], "big")
        segment = data[position + 4 : position + 2 + length]
        if marker == 0xDB:
            offset = 0
            while offset < len(segment):
                precision, table = segment[offset] >> 4, segment[offset] & 0x0F
                width = 2 if precision else 1
                values = segment[offset + 1 : offset + 1 + 64 * width]
                if len(values) < 64 * width:
                    return None
                if table == 0:
                    return [
                        int.from_bytes(values[i : i + width], "big")
                        for i in range(0, 64 * width, width)
                    ]
                offset += 1 + 64 * width
        position += 2 + length
    return None


def reference_jpeg_quality(data: bytes) -> float | None:
    if not data.startswith(b"\xff\xd8"):
        return None
    luminance = _reference_luminance_table(data)
    if luminance is None:
        return None
    scale = 100.0 * float(sum(luminance)) / _IJG_LUMINANCE_SUM
    quality = (200.0 - scale) / 2.0 if scale <= 100.0 else 5000.0 / scale
    return float(min(100, max(1, round(quality))))


def reference_source_statistics(
    image: Image.Image, data: bytes | None = None, displayed_width: int | None = None
) -> dict[str, float | None]:
    period = _JPEG_BLOCK
    if displayed_width and image.width < displayed_width:
        period = max(1, round(_JPEG_BLOCK * image.width / displayed_width))
    crop = _reference_grid_crop(image, period)
    grey = np.asarray(crop if crop.mode == "L" else crop.convert("L"), dtype=np.int16)
    noise, detail = _reference_noise_and_detail(grey)
    return {
        "noise": noise,
        "detail": detail,
        "blockiness": _reference_blockiness(grey, period),
        "jpeg_quality": reference_jpeg_quality(data) if data is not None else None,
    }


def reference_colour_statistics(pixels: NDArray[np.uint8]) -> dict[str, float | None]:
    if pixels.ndim != 3 or pixels.shape[-1] < 3:
        return {"colourfulness": 0.0, "hue": None}
    sampled = pixels[::2, ::2, :3]
    planes = np.moveaxis(sampled, -1, 0).reshape(3, -1).astype(np.float32)
    red, green, blue = planes
    red_green = red - green
    yellow_blue = 0.5 * (red + green) - blue
    count = float(red.size)
    mean_rg, mean_yb = float(red_green.sum()) / count, float(yellow_blue.sum()) / count
    var_rg = max(float(red_green @ red_green) / count - mean_rg**2, 0.0)
    var_yb = max(float(yellow_blue @ yellow_blue) / count - mean_yb**2, 0.0)
    colourfulness = math.sqrt(var_rg + var_yb) + 0.3 * math.hypot(mean_rg, mean_yb)
    mean_r, mean_g, mean_b = (float(plane.sum()) / count for plane in planes)
    a = mean_r - 0.5 * (mean_g + mean_b)
    b = math.sqrt(3.0) / 2.0 * (mean_g - mean_b)
    hue = math.degrees(math.atan2(b, a)) % 360.0 if math.hypot(a, b) > 1e-6 else None
    return {"colourfulness": colourfulness / 255.0, "hue": hue}


# ---- images ------------------------------------------------------------------------------


def _photo_module() -> ModuleType:
    """benchmarks/preprocess.py, whose ``photo`` draws the photo-like benchmark images."""
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "preprocess.py"
    spec = importlib.util.spec_from_file_location("benchmark_preprocess", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _gradient(height: int, width: int, channels: int) -> NDArray[np.uint8]:
    yy, xx = np.mgrid[0:height, 0:width]
    planes = [(xx * 255 // max(width - 1, 1) + c * 40 + yy) % 256 for c in range(channels)]
    return np.stack(planes, axis=-1).astype(np.uint8)


def _arrays() -> dict[str, NDArray[np.uint8]]:
    """Model-sized and odd-sized pixel arrays, (H, W, C) as the statistics receive them."""
    rng = np.random.default_rng(7)
    arrays: dict[str, NDArray[np.uint8]] = {
        "noise 224": rng.integers(0, 256, (224, 224, 3), dtype=np.uint8),
        # Past 66,051 pixels a channel's sum of squares outgrows uint32, and past 2^24 / 255
        # sampled pixels the float32 colour sums stop being exact.
        "noise 600": rng.integers(0, 256, (600, 600, 3), dtype=np.uint8),
        "bright noise 520": rng.integers(250, 256, (520, 520, 3), dtype=np.uint8),
        "noise odd 37x53": rng.integers(0, 256, (37, 53, 3), dtype=np.uint8),
        "low noise 224": (128 + rng.integers(-3, 4, (224, 224, 3))).astype(np.uint8),
        "flat black": np.zeros((224, 224, 3), np.uint8),
        "flat white": np.full((224, 224, 3), 255, np.uint8),
        "flat grey": np.full((64, 64, 3), 114, np.uint8),
        "gradient": _gradient(224, 224, 3),
        "gradient odd 101x77": _gradient(101, 77, 3),
        "grey (H,W,1)": _gradient(224, 224, 1),
        "grey noise (H,W,1)": rng.integers(0, 256, (97, 61, 1), dtype=np.uint8),
        "two channels": rng.integers(0, 256, (40, 30, 2), dtype=np.uint8),
        "rgba": rng.integers(0, 256, (50, 70, 4), dtype=np.uint8),
        "saturated primaries": np.eye(3, dtype=np.uint8)[rng.integers(0, 3, (60, 60))] * 255,
        "non-contiguous view": rng.integers(0, 256, (300, 300, 3), dtype=np.uint8)[10:234, 5:229],
    }
    for side in (1, 2, 3, 4):
        arrays[f"tiny {side}x{side}"] = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
        arrays[f"tiny grey {side}x{side}"] = rng.integers(0, 256, (side, side, 1), dtype=np.uint8)
    return arrays


def _encode(image: Image.Image, fmt: str, quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    options = {"quality": quality} if fmt == "JPEG" else {}
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def _encode_with_tables(image: Image.Image, tables: list[list[int]]) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", qtables=tables)
    return buffer.getvalue()


def _uploads() -> dict[str, bytes]:
    """Encoded files: photo-like 640x480 JPEGs and PNGs, and small or odd ones."""
    photo = _photo_module().photo
    rng = np.random.default_rng(3)
    uploads: dict[str, bytes] = {}
    for index in range(3):
        picture = photo(rng, 640, 480)
        uploads[f"photo {index} JPEG"] = _encode(picture, "JPEG", quality=(90, 60, 95)[index])
        uploads[f"photo {index} PNG"] = _encode(picture, "PNG")
    uploads["photo 224 JPEG"] = _encode(photo(rng, 224, 224), "JPEG")
    uploads["photo portrait 333x517 PNG"] = _encode(photo(rng, 333, 517), "PNG")
    uploads["photo grey JPEG"] = _encode(photo(rng, 300, 200).convert("L"), "JPEG")
    uploads["photo grey PNG"] = _encode(photo(rng, 300, 200).convert("L"), "PNG")
    noise = rng.integers(0, 256, (123, 211, 3), dtype=np.uint8)
    uploads["noise odd JPEG"] = _encode(Image.fromarray(noise), "JPEG")
    uploads["noise odd PNG"] = _encode(Image.fromarray(noise), "PNG")
    uploads["flat PNG"] = _encode(Image.new("RGB", (90, 70), (10, 200, 30)), "PNG")
    # A 16-bit quantisation table (values over 255 leave the baseline format).
    uploads["16-bit table JPEG"] = _encode_with_tables(photo(rng, 96, 72), [[300] * 64, [2] * 64])
    uploads["rgba PNG"] = _encode(
        Image.fromarray(rng.integers(0, 256, (40, 50, 4), np.uint8)), "PNG"
    )
    for side in (1, 2, 3, 5):
        tiny = Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8))
        uploads[f"tiny {side}x{side} PNG"] = _encode(tiny, "PNG")
        uploads[f"tiny {side}x{side} JPEG"] = _encode(tiny, "JPEG")
    return uploads


ARRAYS = _arrays()
UPLOADS = _uploads()


def _assert_same(live: dict[str, float | None], reference: dict[str, float | None]) -> None:
    assert live.keys() == reference.keys()
    for key, expected in reference.items():
        value = live[key]
        if expected is None or value is None:
            assert value is expected, key
        else:
            # Bit for bit: every value is either an exact integer sum scaled the same way or
            # the same float32 operations in the same order.
            assert value == expected or (math.isnan(value) and math.isnan(expected)), (
                f"{key}: {value!r} != {expected!r}"
            )


@pytest.mark.parametrize("name", sorted(ARRAYS))
def test_image_statistics_match_the_frozen_definition(name: str) -> None:
    pixels = ARRAYS[name]
    _assert_same(image_statistics(pixels), reference_image_statistics(pixels))


@pytest.mark.parametrize("name", sorted(ARRAYS))
def test_colour_statistics_match_the_frozen_definition(name: str) -> None:
    pixels = ARRAYS[name]
    _assert_same(colour_statistics(pixels), reference_colour_statistics(pixels))


def test_colour_statistics_of_a_2d_grey_array_match_the_frozen_definition() -> None:
    # 2-D grey images reach the statistics as the decoded mode-L upload (the channels=1 rows
    # of the upload test) and here; image_statistics takes (H, W, C) only, as it always did.
    pixels = _gradient(30, 20, 1)[:, :, 0]
    _assert_same(colour_statistics(pixels), reference_colour_statistics(pixels))


@pytest.mark.parametrize("name", sorted(UPLOADS))
@pytest.mark.parametrize("channels", [3, 1])
def test_upload_statistics_match_the_frozen_definition(name: str, channels: int) -> None:
    # The way serve reads an upload: the decode at the model's DCT scale, then the resize.
    data = UPLOADS[name]
    image = decode_image(data, channels=3 if channels == 3 else 1, draft_size=224)
    pixels = resize_image(image, 224, "crop")
    with Image.open(io.BytesIO(data)) as opened:
        width = displayed_size(opened)[0]
    _assert_same(
        source_statistics(image, data, width), reference_source_statistics(image, data, width)
    )
    _assert_same(image_statistics(pixels), reference_image_statistics(pixels))
    _assert_same(
        quality_statistics(image, pixels, data, width),
        {
            **reference_source_statistics(image, data, width),
            **reference_colour_statistics(pixels),
        },
    )


@pytest.mark.parametrize("period", [1, 2, 3, 4, 8])
@pytest.mark.parametrize(
    "size", [(1, 1), (2, 9), (3, 3), (17, 17), (16, 40), (256, 256), (300, 260)]
)
def test_source_statistics_match_at_every_grid_period(period: int, size: tuple[int, int]) -> None:
    rng = np.random.default_rng(period * 1000 + size[0])
    noise = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    smooth = _gradient(size[1], size[0], 3)
    for pixels in (noise, smooth, np.full_like(noise, 77)):
        image = Image.fromarray(pixels)
        # A displayed width 8 / period times the decoded one gives the grid period asked for.
        displayed = size[0] * _JPEG_BLOCK // period
        _assert_same(
            source_statistics(image, None, displayed),
            reference_source_statistics(image, None, displayed),
        )


@pytest.mark.parametrize(
    "data",
    [
        *UPLOADS.values(),
        b"",
        b"\xff\xd8",
        b"\xff\xd8\xff\xdb\x00\x43\x00" + bytes(10),  # a table cut short
        b"\xff\xd8\xff\xff\xff\xda\x00\x02",  # fill bytes, then the scan
        b"\xff\xd8\x00\x00",  # not a marker
        UPLOADS["photo 0 JPEG"][:300],
    ],
)
def test_jpeg_quality_matches_the_frozen_definition(data: bytes) -> None:
    assert jpeg_quality(data) == reference_jpeg_quality(data)
