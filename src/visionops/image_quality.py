"""What a camera or an encoder leaves in an image, measured cheaply for drift detection.

A trained model is built to ignore sensor noise, compression and colour rendering, which is
exactly why a change of camera or encoder can slip past the tests on its outputs and
embeddings. These statistics look at the image itself:

- :func:`source_statistics`, on the decoded upload *before* the resize to the model's size
  (a resize averages noise and block edges away): ``noise`` (a robust estimate of the sensor
  noise's standard deviation), ``detail`` (high-frequency energy), ``blockiness`` (JPEG's
  8x8 grid showing through) and, for JPEG files, ``jpeg_quality`` (read from the file's
  quantisation tables);
- :func:`colour_statistics`, on the model-sized pixels: ``colourfulness`` (Hasler and
  Süsstrunk's metric) and ``hue`` (the hue of the image's average colour).

Every upload pays for these, so they read a bounded central crop as int16 planes (the noise
mask runs as two separable second differences, taken from the column steps that blockiness
reads too; its median comes from a histogram) and the JPEG quality comes
from the file's DQT marker without a decode (``benchmarks/drift.py --parts cost`` measures
the cost). Drift references hold the values of the first implementation, which
``tests/unit/test_statistics_frozen.py`` keeps as the definition: the same values to the last
bit.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray
from PIL import Image

__all__ = [
    "COLOUR_STATISTICS",
    "SOURCE_STATISTICS",
    "colour_statistics",
    "jpeg_quality",
    "quality_statistics",
    "source_statistics",
]

SOURCE_STATISTICS: tuple[str, ...] = ("noise", "detail", "blockiness", "jpeg_quality")
"""Statistics of the decoded upload before the resize (and of its bytes)."""
COLOUR_STATISTICS: tuple[str, ...] = ("colourfulness", "hue")
"""Statistics of the model-sized pixels."""

_MAX_SIDE = 256
"""Longest side of the central crop the source statistics read: bounds their cost on big
uploads (65,536 pixels still hold 1,024 JPEG blocks)."""
_JPEG_BLOCK = 8
_STEP_FLOOR = 0.05

# Immerkær's noise mask [[1, -2, 1], [-2, 4, -2], [1, -2, 1]] is the outer product of two
# second differences, so it runs as one along each axis. It cancels the image's own smooth
# structure; for white noise of sd σ its response has sd 6σ (the mask's L2 norm).
_NOISE_GAIN = 6.0
_MAD_TO_SD = 1.0 / 0.6745
"""Median absolute deviation of a normal variable → its standard deviation."""

# The IJG (libjpeg) luminance table at quality 50: a file's table is this one scaled.
_IJG_LUMINANCE = (
    (16, 11, 10, 16, 24, 40, 51, 61),
    (12, 12, 14, 19, 26, 58, 60, 55),
    (14, 13, 16, 24, 40, 57, 69, 56),
    (14, 17, 22, 29, 51, 87, 80, 62),
    (18, 22, 37, 56, 68, 109, 103, 77),
    (24, 35, 55, 64, 81, 104, 113, 92),
    (49, 64, 78, 87, 103, 121, 120, 101),
    (72, 92, 95, 98, 112, 100, 103, 99),
)
_IJG_LUMINANCE_SUM = float(sum(map(sum, _IJG_LUMINANCE)))


def _luminance_table(data: bytes) -> list[int] | None:
    """Table 0 of the first DQT segment, read from the markers before the scan (no decode)."""
    position = 2
    while position + 4 <= len(data):
        if data[position] != 0xFF:
            return None
        marker = data[position + 1]
        if marker == 0xFF:  # fill byte
            position += 1
            continue
        if marker == 0xDA:  # start of scan: no table before the image data
            return None
        length = int.from_bytes(data[position + 2 : position + 4], "big")
        if marker == 0xDB:
            segment = data[position + 4 : position + 2 + length]
            offset = 0
            while offset < len(segment):
                precision, table = segment[offset] >> 4, segment[offset] & 0x0F
                width = 2 if precision else 1
                values = segment[offset + 1 : offset + 1 + 64 * width]
                if len(values) < 64 * width:
                    return None
                if table == 0:
                    if width == 1:
                        return list(values)
                    return [
                        int.from_bytes(values[i : i + width], "big")
                        for i in range(0, 64 * width, width)
                    ]
                offset += 1 + 64 * width
        position += 2 + length
    return None


def jpeg_quality(data: bytes) -> float | None:
    """Estimate the quality (1..100) a JPEG was saved at, from its luminance table alone.

    Encoders scale the IJG reference table by ``s = 5000 / q`` (q < 50) or ``200 - 2q``;
    inverting the scale of the file's table gives q. Cameras with tables of their own get
    the quality of the IJG table of the same overall coarseness, which still orders files
    from heavily to lightly compressed.

    Args:
        data: The file's bytes (only the markers before the image data are read).

    Returns:
        The estimated quality, a whole number, or None when the bytes are not a JPEG with a
        luminance table.
    """
    if not data.startswith(b"\xff\xd8"):
        return None
    luminance = _luminance_table(data)
    if luminance is None:
        return None
    scale = 100.0 * float(sum(luminance)) / _IJG_LUMINANCE_SUM
    quality = (200.0 - scale) / 2.0 if scale <= 100.0 else 5000.0 / scale
    # A whole number: the reference keeps it as float32 and the log as float64, and a
    # constant column must compare equal on both sides.
    return float(min(100, max(1, round(quality))))


def _grid_crop(image: Image.Image, period: int) -> Image.Image:
    """A central crop of at most ``_MAX_SIDE`` per side that starts on the block grid."""
    width, height = image.size
    crop_w, crop_h = min(width, _MAX_SIDE), min(height, _MAX_SIDE)
    if (crop_w, crop_h) == (width, height):
        return image
    step = max(period, 1)
    left = (width - crop_w) // 2 // step * step
    top = (height - crop_h) // 2 // step * step
    return image.crop((left, top, left + crop_w, top + crop_h))


def _median(counts: NDArray[np.intp]) -> float:
    """The median of integers ``0..len(counts)-1`` given by their counts, within its bin.

    An integer v stands for the interval [v - 0.5, v + 0.5) of the continuous value: the
    median is v - 0.5 plus the share of v's count that brings the values below it to half.
    """
    # From a histogram, not a partial sort: residuals of real photos are mostly 0, 1 and 2,
    # and numpy's partition slows down about 4x on such ties (0.44 vs 0.12 ms at 320x240).
    cumulative = np.cumsum(counts)
    half = cumulative[-1] / 2.0
    index = int(np.searchsorted(cumulative, half))
    below = cumulative[index - 1] if index else 0
    return float(index - 0.5 + (half - below) / max(int(counts[index]), 1))


def _steps(values: NDArray[np.int16], axis: int) -> NDArray[np.int16]:
    """Signed differences of neighbours along ``axis``: ``x[i + 1] - x[i]``."""
    if axis == 1:
        return np.subtract(values[:, 1:], values[:, :-1])
    return np.subtract(values[1:], values[:-1])


def _noise_and_detail(columns: NDArray[np.int16]) -> tuple[float, float]:
    """Noise sd and high-frequency energy (both on the 0..1 scale) from one filter pass.

    Args:
        columns: The grey crop's steps between neighbouring columns (:func:`_steps`, axis 1).
    """
    if columns.shape[0] < 3 or columns.shape[1] < 2:
        return 0.0, 0.0
    # A second difference is the difference of first differences, so the mask's two
    # passes cost one subtraction each from the column steps blockiness reads too. Every
    # value is an integer of at most 16 x 255: int16 holds it exactly.
    across = _steps(columns, 1)
    residual = _steps(_steps(across, 0), 0).ravel()
    np.abs(residual, out=residual)
    counts = np.bincount(residual)
    # Edges and texture make the big residuals; in the flat majority the residual is noise,
    # so the median of |residual| measures the noise and the mean the detail as a whole.
    noise = max(_median(counts), 0.0) * _MAD_TO_SD / _NOISE_GAIN / 255.0
    detail = float(counts @ np.arange(len(counts))) / residual.size / (_NOISE_GAIN * 255.0)
    return noise, detail


def _blockiness(grey: NDArray[np.int16], columns: NDArray[np.int16], period: int) -> float | None:
    """How much stronger the steps across one phase of a ``period`` grid are than elsewhere.

    The strongest phase of column (and row) differences over the mean of the other phases,
    averaged over both directions: about 1 for an image without a grid, above 1 when block
    edges show. The phase is found rather than assumed, so an EXIF rotation or a crop that
    moved the grid does not hide it.

    Args:
        grey: The grey crop.
        columns: Its steps between neighbouring columns (:func:`_steps`, axis 1).
        period: The grid's period in pixels.
    """
    height, width = grey.shape
    if period < 2 or width < 2 * period + 1 or height < 2 * period + 1:
        return None
    rows = _steps(grey, 0)
    ratios: list[float] = []
    for axis, steps in ((1, np.abs(columns)), (0, np.abs(rows, out=rows))):
        # Mean step in grey levels at each position across the image (exact in int32, at
        # half int64's cost).
        profile = steps.sum(axis=1 - axis, dtype=np.int32) / steps.shape[1 - axis]
        usable = len(profile) // period * period
        phases: list[float] = profile[:usable].reshape(-1, period).mean(axis=0).tolist()
        # In Python: numpy's calls cost more than these few values. A period is at most 8,
        # and under 8 values numpy's mean sums from left to right too: the same last bit.
        strongest = max(phases)
        rest = phases[: phases.index(strongest)] + phases[phases.index(strongest) + 1 :]
        others = sum(rest) / len(rest)
        # Flat blocks (heavy compression) leave no step inside them: a floor of a twentieth
        # of a grey level keeps the ratio finite and large there.
        ratios.append((strongest + _STEP_FLOOR) / (others + _STEP_FLOOR))
    return (ratios[0] + ratios[1]) / 2


def source_statistics(
    image: Image.Image, data: bytes | None = None, displayed_width: int | None = None
) -> dict[str, float | None]:
    """Noise, detail, blockiness and JPEG quality of one decoded upload before the resize.

    Args:
        image: The decoded image (mode ``L`` or ``RGB``) as :func:`visionops.imaging.
            decode_image` returns it, before :func:`~visionops.imaging.resize_image`.
        data: The file's bytes (for ``jpeg_quality``); None when unknown.
        displayed_width: The width the file's header gives (after EXIF rotation). A JPEG
            decoded at a reduced DCT scale is narrower, and its 8x8 grid shrinks with it.

    Returns:
        ``noise`` and ``detail`` on the 0..1 scale, ``blockiness`` (1 = no grid; None when
        the decode scale leaves blocks under 2 pixels) and ``jpeg_quality`` (None unless
        ``data`` is a JPEG).
    """
    period = _JPEG_BLOCK
    if displayed_width and image.width < displayed_width:
        period = max(1, round(_JPEG_BLOCK * image.width / displayed_width))
    crop = _grid_crop(image, period)
    grey = np.asarray(crop if crop.mode == "L" else crop.convert("L"), dtype=np.int16)
    columns = _steps(grey, 1)
    noise, detail = _noise_and_detail(columns)
    return {
        "noise": noise,
        "detail": detail,
        "blockiness": _blockiness(grey, columns, period),
        "jpeg_quality": jpeg_quality(data) if data is not None else None,
    }


def colour_statistics(pixels: NDArray[np.uint8]) -> dict[str, float | None]:
    """Colourfulness and hue of the model-sized pixels (a white balance or colour profile).

    Args:
        pixels: A ``(H, W, C)`` uint8 array.

    Returns:
        ``colourfulness`` (Hasler and Süsstrunk, 2003, on the 0..1 scale; 0 for grey images)
        and ``hue``: the hue angle of the average colour in degrees (0 red, 120 green,
        240 blue; None when the average colour is grey).
    """
    if pixels.ndim != 3 or pixels.shape[-1] < 3:
        return {"colourfulness": 0.0, "hue": None}
    # Every other row and column: averages over a quarter of the pixels are as good and
    # four times cheaper.
    sampled = pixels[::2, ::2, :3]
    planes = np.moveaxis(sampled, -1, 0).reshape(3, -1).astype(np.float32)
    red, green, blue = planes
    red_green = red - green
    # The first version's float32 operations in its order, without its temporaries: drift
    # references hold its values to the last bit.
    yellow_blue = red + green
    yellow_blue *= 0.5
    yellow_blue -= blue
    count = float(red.size)
    mean_rg, mean_yb = float(red_green.sum()) / count, float(yellow_blue.sum()) / count
    var_rg = max(float(red_green @ red_green) / count - mean_rg**2, 0.0)
    var_yb = max(float(yellow_blue @ yellow_blue) / count - mean_yb**2, 0.0)
    colourfulness = math.sqrt(var_rg + var_yb) + 0.3 * math.hypot(mean_rg, mean_yb)
    # The hexagonal hue plane of HSV: a = R - (G + B) / 2, b = √3/2 (G - B); the angle of the
    # mean (a, b) is the chroma-weighted circular mean of every pixel's hue.
    mean_r, mean_g, mean_b = (total / count for total in planes.sum(axis=1).tolist())
    a = mean_r - 0.5 * (mean_g + mean_b)
    b = math.sqrt(3.0) / 2.0 * (mean_g - mean_b)
    hue = math.degrees(math.atan2(b, a)) % 360.0 if math.hypot(a, b) > 1e-6 else None
    return {"colourfulness": colourfulness / 255.0, "hue": hue}


def quality_statistics(
    image: Image.Image,
    pixels: NDArray[np.uint8],
    data: bytes | None,
    displayed_width: int | None,
) -> dict[str, float | None]:
    """:func:`source_statistics` and :func:`colour_statistics` of one upload, together."""
    return {
        **source_statistics(image, data, displayed_width),
        **colour_statistics(pixels),
    }
