"""The camera statistics measure what their names say, on real encoded files."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from visionops.image_quality import (
    colour_statistics,
    jpeg_quality,
    quality_statistics,
    source_statistics,
)
from visionops.imaging import decode_image, load_image_and_source


def _scene(width: int = 160, height: int = 120, sigma: float = 0.0, seed: int = 0) -> np.ndarray:
    """A smooth colour scene (gradients and a soft disc), plus Gaussian noise of sd sigma."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    disc = np.exp(-(((x - width / 2) ** 2 + (y - height / 2) ** 2) / (0.1 * width * height)))
    scene = np.stack([90 + 0.5 * x, 80 + 0.6 * y, 160 - 80 * disc], axis=-1)
    noise = np.random.default_rng(seed).normal(0, sigma, scene.shape) if sigma else 0.0
    return np.asarray(np.clip(scene + noise, 0, 255).round(), np.uint8)


def _encode(pixels: np.ndarray, fmt: str = "PNG", quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    options = {"quality": quality} if fmt == "JPEG" else {}
    Image.fromarray(pixels).save(buffer, format=fmt, **options)
    return buffer.getvalue()


def _source(data: bytes, size: int = 64) -> dict[str, float | None]:
    width = Image.open(io.BytesIO(data)).width
    image, _ = load_image_and_source(data, size=size)
    return source_statistics(image, data, width)


def test_noise_estimates_the_standard_deviation_of_added_noise() -> None:
    flat = np.full((128, 128), 120, np.uint8)
    for sigma in (2.0, 5.0, 10.0):
        noisy = np.clip(flat + np.random.default_rng(1).normal(0, sigma, flat.shape), 0, 255)
        image = Image.fromarray(noisy.round().astype(np.uint8), mode="L")
        estimate = source_statistics(image)["noise"]
        assert estimate is not None
        assert estimate * 255 == pytest.approx(sigma, rel=0.12)
    # Edges do not count as noise: the smooth scene's estimate stays near zero.
    clean = source_statistics(Image.fromarray(_scene()))["noise"]
    assert clean is not None and clean * 255 < 0.6


def test_noise_and_detail_rise_with_noise_and_detail_falls_with_blur() -> None:
    quiet = _source(_encode(_scene(sigma=1.0)))
    noisy = _source(_encode(_scene(sigma=4.0)))
    assert noisy["noise"] > 2.5 * quiet["noise"]
    assert noisy["detail"] > 2 * quiet["detail"]
    sharp = np.asarray(Image.fromarray(_scene(sigma=3.0)))
    blurred = np.asarray(Image.fromarray(sharp).resize((40, 30)).resize((160, 120)))
    assert _source(_encode(blurred))["detail"] < 0.5 * _source(_encode(sharp))["detail"]


def test_blockiness_sees_the_jpeg_grid_wherever_it_lies() -> None:
    scene = _scene(sigma=2.0)
    lossless = _source(_encode(scene))["blockiness"]
    light = _source(_encode(scene, "JPEG", 95))["blockiness"]
    heavy = _source(_encode(scene, "JPEG", 20))["blockiness"]
    assert lossless is not None and light is not None and heavy is not None
    assert lossless < 1.15 < heavy and light < heavy
    # A heavily compressed frame cropped 3 px off its grid, saved losslessly: still found.
    decoded = np.asarray(decode_image(_encode(scene, "JPEG", 20)))
    moved = _source(_encode(decoded[3:, 5:]))["blockiness"]
    assert moved is not None and moved > 1.5


def test_blockiness_follows_a_jpeg_decoded_at_a_reduced_dct_scale() -> None:
    scene = np.asarray(Image.fromarray(_scene(sigma=2.0)).resize((640, 480)))
    data = _encode(scene, "JPEG", 25)
    image, _ = load_image_and_source(data, size=224)
    assert image.width == 320  # decoded at half scale: the 8x8 blocks are 4x4 here
    stats = source_statistics(image, data, 640)
    assert stats["blockiness"] is not None and stats["blockiness"] > 1.3
    clean = source_statistics(*load_image_and_source(_encode(scene, "JPEG", 95), size=224)[:1])
    assert clean["blockiness"] is not None and clean["blockiness"] < stats["blockiness"]
    # Decoded at an eighth, blocks are one pixel: no grid left to measure.
    tiny = source_statistics(load_image_and_source(data, size=60)[0], data, 640)
    assert tiny["blockiness"] is None


@pytest.mark.parametrize("quality", [10, 20, 50, 75, 90, 95])
def test_jpeg_quality_reads_the_quantisation_tables(quality: int) -> None:
    estimate = jpeg_quality(_encode(_scene(), "JPEG", quality))
    assert estimate is not None
    assert estimate == pytest.approx(quality, abs=1.0 if quality >= 20 else 5.0)


def test_jpeg_quality_is_none_for_other_files_and_broken_headers() -> None:
    assert jpeg_quality(_encode(_scene())) is None
    assert jpeg_quality(b"\xff\xd8\xff\xe0 not really a jpeg") is None
    assert _source(_encode(_scene()))["jpeg_quality"] is None


def test_colourfulness_and_hue() -> None:
    grey = np.full((32, 32, 3), 128, np.uint8)
    assert colour_statistics(grey) == {"colourfulness": 0.0, "hue": None}
    hues = {}
    for name, colour in {
        "red": (200, 40, 40),
        "green": (40, 200, 40),
        "blue": (40, 40, 200),
    }.items():
        pixels = np.broadcast_to(np.array(colour, np.uint8), (32, 32, 3))
        stats = colour_statistics(np.ascontiguousarray(pixels))
        assert stats["colourfulness"] is not None and stats["colourfulness"] > 0.15
        hues[name] = stats["hue"]
    assert hues["red"] == pytest.approx(0.0, abs=0.5) or hues["red"] == pytest.approx(360, abs=0.5)
    assert hues["green"] == pytest.approx(120.0, abs=0.5)
    assert hues["blue"] == pytest.approx(240.0, abs=0.5)
    vivid = _scene()
    dull = np.asarray(
        vivid.astype(np.float32).mean(-1, keepdims=True) * 0.7 + vivid * 0.3, np.uint8
    )
    assert colour_statistics(dull)["colourfulness"] < colour_statistics(vivid)["colourfulness"]
    assert colour_statistics(np.zeros((8, 8, 1), np.uint8)) == {"colourfulness": 0.0, "hue": None}


def test_quality_statistics_of_a_grey_upload() -> None:
    data = _encode(_scene()[..., 1], "JPEG", 60)
    image, pixels = load_image_and_source(data, size=32, channels=1)
    stats = quality_statistics(image, pixels, data, 160)
    assert stats["jpeg_quality"] == pytest.approx(60, abs=1)
    assert stats["hue"] is None and stats["colourfulness"] == 0.0
    assert stats["noise"] is not None and stats["blockiness"] is not None
