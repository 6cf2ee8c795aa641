import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from visionops.errors import ImageError
from visionops.imaging import (
    LETTERBOX_FILL,
    decode_image,
    image_statistics,
    load_image,
    resize_image,
    sniff_format,
)


def _encode(image: Image.Image, fmt: str, **kwargs: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def _half_red_half_blue(width: int = 80, height: int = 40) -> Image.Image:
    array = np.zeros((height, width, 3), dtype=np.uint8)
    array[:, : width // 2] = (255, 0, 0)
    array[:, width // 2 :] = (0, 0, 255)
    return Image.fromarray(array)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "BMP", "GIF", "TIFF", "WEBP", "PPM"])
def test_sniff_known_formats(fmt: str) -> None:
    data = _encode(Image.new("RGB", (8, 8), "white"), fmt)
    assert sniff_format(data[:16]) is not None


def test_sniff_rejects_text() -> None:
    assert sniff_format(b"hello, world, not an image") is None


def test_crop_policy_takes_centre_square() -> None:
    pixels = load_image(_encode(_half_red_half_blue(), "PNG"), size=20, policy="crop")
    assert pixels.shape == (20, 20, 3)
    assert pixels[10, 2, 0] > 200 and pixels[10, 2, 2] < 50  # left: red
    assert pixels[10, 17, 2] > 200 and pixels[10, 17, 0] < 50  # right: blue


def test_letterbox_pads_with_grey() -> None:
    pixels = load_image(_encode(_half_red_half_blue(), "PNG"), size=20, policy="letterbox")
    assert pixels.shape == (20, 20, 3)
    assert tuple(pixels[0, 10]) == (LETTERBOX_FILL,) * 3
    assert tuple(pixels[19, 10]) == (LETTERBOX_FILL,) * 3
    assert pixels[10, 2, 0] > 200


def test_exif_orientation_is_applied() -> None:
    image = _half_red_half_blue(80, 40)  # red left, blue right
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    data = _encode(image, "JPEG", exif=exif.tobytes(), quality=95)
    decoded = decode_image(data)
    assert decoded.size == (40, 80)
    array = np.asarray(decoded)
    assert array[5, 20, 0] > 200  # after rotation red is on top
    assert array[75, 20, 2] > 200


@pytest.mark.parametrize(
    ("mode", "channels", "expected"),
    [
        ("L", 3, (3,)),
        ("RGB", 1, (1,)),
        ("P", 3, (3,)),
        ("RGBA", 3, (3,)),
        ("CMYK", 3, (3,)),
        ("I;16", 1, (1,)),
        ("LA", 1, (1,)),
    ],
)
def test_modes_are_converted(mode: str, channels: int, expected: tuple[int]) -> None:
    image = Image.new(mode, (16, 12))
    fmt = "TIFF" if mode in {"CMYK", "I;16"} else "PNG"
    pixels = load_image(_encode(image, fmt), size=8, channels=channels)  # type: ignore[arg-type]
    assert pixels.shape == (8, 8, *expected)
    assert pixels.dtype == np.uint8


def test_sixteen_bit_is_scaled_not_clipped() -> None:
    array = np.full((8, 8), 65535, dtype=np.uint16)
    array[:, :4] = 32768
    data = _encode(Image.fromarray(array), "PNG")
    pixels = load_image(data, size=8, channels=1)
    assert pixels[:, 6:].min() == 255
    assert 120 <= pixels[:, :2].max() <= 135


def test_transparent_pixels_become_white() -> None:
    image = Image.new("RGBA", (8, 8), (0, 0, 0, 0))
    pixels = load_image(_encode(image, "PNG"), size=8)
    assert pixels.min() == 255


def test_empty_file(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    with pytest.raises(ImageError, match="empty"):
        load_image(empty, size=8)


def test_not_an_image(tmp_path: Path) -> None:
    text = tmp_path / "notes.jpg"
    text.write_text("this is not a jpeg")
    with pytest.raises(ImageError, match="not an image"):
        load_image(text, size=8)


def test_truncated_image(tmp_path: Path) -> None:
    noise = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    data = _encode(Image.fromarray(noise), "JPEG")
    truncated = tmp_path / "cut.jpg"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match=r"truncated|cannot decode"):
        load_image(truncated, size=8)


def test_decompression_bomb_is_refused() -> None:
    data = _encode(Image.new("L", (400, 300)), "PNG")
    with pytest.raises(ImageError, match="decompression bomb"):
        load_image(data, size=8, max_pixels=100_000)


def test_same_bytes_same_pixels_from_path_and_bytes(tmp_path: Path) -> None:
    noise = np.random.default_rng(1).integers(0, 255, (300, 200, 3), dtype=np.uint8)
    data = _encode(Image.fromarray(noise), "JPEG")
    path = tmp_path / "x.jpg"
    path.write_bytes(data)
    np.testing.assert_array_equal(load_image(path, size=32), load_image(data, size=32))


def test_resize_returns_channel_axis_for_grey() -> None:
    assert resize_image(Image.new("L", (10, 30)), 6).shape == (6, 6, 1)


def test_image_statistics() -> None:
    pixels = np.zeros((4, 4, 3), dtype=np.uint8)
    pixels[..., 0] = 255
    stats = image_statistics(pixels)
    assert stats["max"] == 1.0 and stats["min"] == 0.0
    assert stats["mean_c0"] == 1.0 and stats["mean_c1"] == 0.0
    assert abs(stats["mean"] - 1 / 3) < 1e-6


@pytest.mark.parametrize("channels", [1, 3])
def test_image_statistics_match_their_definitions(channels: int) -> None:
    # The reference in every bundle and every logged upload depend on these exact values.
    pixels = np.random.default_rng(0).integers(0, 256, (40, 30, channels), dtype=np.uint8)
    scaled = pixels.astype(np.float64) / 255
    grey = scaled.mean(axis=-1)
    laplacian = grey[:-2, 1:-1] + grey[2:, 1:-1] + grey[1:-1, :-2] + grey[1:-1, 2:]
    laplacian -= 4 * grey[1:-1, 1:-1]
    top, bottom = scaled.max(axis=-1), scaled.min(axis=-1)
    expected = {
        "mean": scaled.mean(),
        "std": scaled.std(),
        "min": scaled.min(),
        "max": scaled.max(),
        "sharpness": laplacian.var(),
        "saturation": np.where(top > 0, (top - bottom) / np.where(top > 0, top, 1), 0).mean(),
        **{f"mean_c{i}": scaled[..., i].mean() for i in range(channels)},
    }
    stats = image_statistics(pixels)
    assert stats.keys() == expected.keys()
    for name, value in expected.items():
        assert stats[name] == pytest.approx(value, rel=1e-5, abs=1e-7), name
