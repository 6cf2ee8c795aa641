"""Each simulated shift changes images the way its name says."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from visionops.drift.simulate import SHIFTS, apply_shifts, parse_shifts, simulate_folder
from visionops.errors import DriftError
from visionops.imaging import image_statistics


def _image() -> np.ndarray:
    rng = np.random.default_rng(0)
    pixels = np.full((48, 48, 3), 110, np.uint8)
    pixels[12:36, 12:36] = (200, 60, 60)
    return np.clip(pixels + rng.normal(0, 4, pixels.shape), 0, 255).astype(np.uint8)


def _shifted(spec: str) -> dict[str, float]:
    out = apply_shifts(_image(), parse_shifts(spec), np.random.default_rng(1))
    assert out.shape == (48, 48, 3) and out.dtype == np.uint8
    return image_statistics(out)


def test_parse_shifts() -> None:
    assert [(s.name, s.value) for s in parse_shifts("brightness=1.3, blur=2,colour_cast=0.1")] == [
        ("brightness", 1.3), ("blur", 2.0), ("cast", 0.1),
    ]  # fmt: skip
    with pytest.raises(DriftError, match="did you mean 'brightness'"):
        parse_shifts("brightnes=1.2")
    with pytest.raises(DriftError, match=r"must be in 1\.\.95"):
        parse_shifts("jpeg=0")
    with pytest.raises(DriftError, match="not a number"):
        parse_shifts("blur=big")


def test_each_shift_moves_the_statistic_it_names() -> None:
    base = image_statistics(_image())
    assert _shifted("brightness=1.3")["mean"] > base["mean"] * 1.25
    assert _shifted("contrast=0.5")["std"] < base["std"] * 0.6
    assert _shifted("blur=2")["sharpness"] < base["sharpness"] * 0.5
    assert _shifted("noise=20")["sharpness"] > base["sharpness"] * 2
    cast = _shifted("cast=0.1")
    assert cast["mean_c0"] > base["mean_c0"] + 0.05 and cast["mean_c2"] < base["mean_c2"] - 0.05
    assert _shifted("occlusion=0.25")["saturation"] < base["saturation"]
    assert _shifted("jpeg=5")["sharpness"] != pytest.approx(base["sharpness"], rel=1e-3)
    rotated = apply_shifts(_image(), parse_shifts("rotation=45"), np.random.default_rng(0))
    assert not np.array_equal(rotated, _image())
    assert set(SHIFTS) == {
        "brightness", "contrast", "blur", "noise", "rotation", "jpeg", "occlusion", "cast",
        "resize",
    }  # fmt: skip


def test_resize_changes_the_size_and_back_loses_detail() -> None:
    smaller = apply_shifts(_image(), parse_shifts("resize=0.5"), np.random.default_rng(0))
    assert smaller.shape == (24, 24, 3) and smaller.dtype == np.uint8
    upscaled = apply_shifts(_image(), parse_shifts("resize=0.5,resize=2"), np.random.default_rng(0))
    assert upscaled.shape == (48, 48, 3)
    base = image_statistics(_image())
    assert image_statistics(upscaled)["sharpness"] < base["sharpness"] * 0.5
    assert image_statistics(upscaled)["mean"] == pytest.approx(base["mean"], abs=0.01)
    with pytest.raises(DriftError, match=r"must be in 0\.01\.\.10"):
        parse_shifts("resize=0")


def test_simulate_folder_writes_a_resized_file(tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    Image.fromarray(_image()).save(source / "one.png")
    simulate_folder(source, parse_shifts("scale=0.75"), tmp_path / "out")
    assert Image.open(tmp_path / "out" / "one.png").size == (36, 36)


def test_simulate_folder_keeps_the_layout(tmp_path: Path) -> None:
    source = tmp_path / "src"
    (source / "cat").mkdir(parents=True)
    Image.fromarray(_image()).save(source / "cat" / "one.jpg")
    (source / "cat" / "notes.txt").write_text("not an image")
    result = simulate_folder(source, parse_shifts("brightness=1.2"), tmp_path / "out")
    assert result.written == 1
    assert (tmp_path / "out" / "cat" / "one.png").is_file()
    with pytest.raises(DriftError, match="inside"):
        simulate_folder(source, parse_shifts("blur=1"), source / "shifted")
