"""Camera and encoder statistics through drift: reference, serve's decode, tests, wording."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from visionops.artifacts import LoggedImage
from visionops.config import DriftSettings
from visionops.data.prepared import PreparedDataset
from visionops.drift.detect import compare
from visionops.drift.features import IMAGE_FEATURES, feature_meaning, image_features
from visionops.drift.reference import reference_arrays, reference_source_statistics
from visionops.drift.report import _family_table
from visionops.drift.samples import Sample
from visionops.drift.simulate import parse_shifts, shifted_file
from visionops.image_quality import COLOUR_STATISTICS, SOURCE_STATISTICS, quality_statistics
from visionops.imaging import decode_image, image_statistics, load_image_and_source
from visionops.inference.bundle import load_bundle
from visionops.inference.session import ModelSession
from visionops.tasks import ClassificationTask

SETTINGS = DriftSettings(permutations=99, min_samples=20)
TASK = ClassificationTask(["a", "b"])


def test_every_new_statistic_is_tested_and_explained() -> None:
    for name in (*SOURCE_STATISTICS, *COLOUR_STATISTICS):
        assert name in IMAGE_FEATURES
        assert name in LoggedImage.model_fields
        assert feature_meaning(name)


def test_the_reference_reads_the_raw_files_and_says_which_are_gone(
    prepared_shapes: Path, raw_shapes: Path, tmp_path: Path
) -> None:
    dataset = PreparedDataset.open(prepared_shapes)
    indices = dataset.indices("val")[:6]
    found = reference_source_statistics(dataset, indices, raw_shapes.parent)
    assert found.read == 6 and found.note is None
    items = dataset.read_items()
    for row, index in enumerate(indices):
        data = (raw_shapes / items[int(index)].path).read_bytes()
        image, _ = load_image_and_source(data, size=dataset.image_size)
        expected = quality_statistics(image, np.zeros((2, 2, 3), np.uint8), data, image.width)
        assert found.values[row].tolist() == pytest.approx(
            [expected[name] for name in SOURCE_STATISTICS], rel=1e-6
        )
    assert set(found.values[:, SOURCE_STATISTICS.index("jpeg_quality")]) == {92.0}  # the demo's

    # One file edited since preprocessing: its row is left out, and the note says so.
    copy = Path(shutil.copytree(raw_shapes, tmp_path / "raw" / raw_shapes.name))
    edited = copy / items[int(indices[2])].path
    Image.open(edited).save(edited, quality=50)
    partial = reference_source_statistics(dataset, indices, copy.parent)
    assert partial.read == 5 and np.isnan(partial.values[2]).all()
    assert partial.note is not None and partial.note.startswith("1 of 6 reference images")
    assert "visionops drift reference" in partial.note
    nothing = reference_source_statistics(dataset, indices, tmp_path / "elsewhere")
    assert nothing.read == 0 and np.isnan(nothing.values).all()

    images = np.asarray(dataset.images[indices])
    arrays = reference_arrays(
        np.zeros((6, 8), np.float32), np.zeros((6, 4), np.float32), images, indices, "val",
        source=partial,
    )  # fmt: skip
    names = arrays["stat_names"].tolist()
    assert {*SOURCE_STATISTICS, *COLOUR_STATISTICS} <= set(names)
    noise = arrays["stats"][:, names.index("noise")]
    assert np.isnan(noise[2]) and np.isfinite(np.delete(noise, 2)).all()
    without = reference_arrays(
        np.zeros((6, 8), np.float32), np.zeros((6, 4), np.float32), images, indices, "val",
        source=nothing,
    )  # fmt: skip
    assert "noise" not in without["stat_names"].tolist()
    assert "colourfulness" in without["stat_names"].tolist()


def _jpeg(pixels: np.ndarray, quality: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def test_serve_decode_logs_the_camera_statistics(classification_bundle: Path) -> None:
    session = ModelSession(load_bundle(classification_bundle), threads=1)
    pixels = np.full((60, 80, 3), (200, 40, 40), np.uint8)
    pixels[::2] += 10
    as_jpeg = session.decode(_jpeg(pixels, 70)).info
    assert as_jpeg.jpeg_quality == 70
    assert as_jpeg.hue is not None and (as_jpeg.hue < 30 or as_jpeg.hue > 330)  # red
    assert as_jpeg.noise is not None and as_jpeg.blockiness is not None
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    as_png = session.decode(buffer.getvalue()).info
    assert as_png.jpeg_quality is None and as_png.detail is not None


def _scene(rng: np.random.Generator) -> np.ndarray:
    """A random smooth colour scene of 96x72 with a mild sensor noise (sd 1.5 to 3)."""
    y, x = np.mgrid[0:72, 0:96].astype(np.float64)
    centre = rng.uniform(20, 70, 2)
    disc = np.exp(-((x - centre[0]) ** 2 + (y - centre[1]) ** 2) / rng.uniform(100, 600))
    colour = rng.uniform(40, 200, 3)
    scene = colour + rng.uniform(-0.5, 0.5, 3) * x[..., None] + 60 * disc[..., None]
    noisy = scene + rng.normal(0, rng.uniform(1.5, 3.0), scene.shape)
    return np.asarray(np.clip(noisy, 0, 255).round(), np.uint8)


def _camera_sample(files: list[bytes], name: str) -> Sample:
    """What serve would log for each file, as a sample of image statistics only."""
    infos = []
    for data in files:
        image, pixels = load_image_and_source(data, size=48)
        stats = {**image_statistics(pixels), **quality_statistics(image, pixels, data, None)}
        infos.append(LoggedImage.model_validate(stats))
    features = image_features(infos)
    return Sample(name, len(files), None, None, None, features)


@pytest.fixture(scope="module")
def camera_traffic() -> dict[str, Sample]:
    rng = np.random.default_rng(0)
    scenes = [_scene(rng) for _ in range(260)]
    reference = [_jpeg(scene, 90) for scene in scenes[:140]]
    unseen = scenes[140:]
    shift_rng = np.random.default_rng(1)
    return {
        "reference": _camera_sample(reference, "reference"),
        "unchanged": _camera_sample([_jpeg(s, 90) for s in unseen], "unchanged"),
        "noisier": _camera_sample(
            [shifted_file(s, parse_shifts("noise=3,jpeg=90"), shift_rng)[0] for s in unseen],
            "noisier",
        ),
        "compressed": _camera_sample([_jpeg(s, 30) for s in unseen], "compressed"),
    }


def test_unchanged_camera_traffic_is_not_drift(camera_traffic: dict[str, Sample]) -> None:
    result = compare(
        camera_traffic["reference"], camera_traffic["unchanged"], task=TASK,
        settings=SETTINGS,
    )  # fmt: skip
    assert not result.drifted, result.what_drifted
    images = result.family("images")
    assert images is not None
    assert {"noise", "detail", "blockiness", "jpeg_quality", "colourfulness", "hue"} <= {
        getattr(row, "key", "") for row in images.tests
    }


def test_a_noisier_camera_is_named_in_words(camera_traffic: dict[str, Sample]) -> None:
    result = compare(
        camera_traffic["reference"], camera_traffic["noisier"], task=TASK,
        settings=SETTINGS,
    )  # fmt: skip
    assert result.drifted
    assert any(p.startswith("images are noisier: noise level up") for p in result.what_drifted)
    images = result.family("images")
    assert images is not None
    page = _family_table(images)
    assert "What these statistics measure" in page
    assert "sensor noise: a robust estimate" in page


def test_heavier_compression_is_named_in_words(camera_traffic: dict[str, Sample]) -> None:
    result = compare(
        camera_traffic["reference"], camera_traffic["compressed"],
        task=TASK, settings=SETTINGS,
    )  # fmt: skip
    assert result.drifted
    phrases = " | ".join(result.what_drifted)
    assert "files are compressed harder (lower JPEG quality): JPEG quality down" in phrases
    assert "JPEG block artefacts are stronger (heavier compression): JPEG blockiness up" in phrases


def test_simulated_jpeg_keeps_the_encoders_bytes() -> None:
    pixels = _scene(np.random.default_rng(3))
    rng = np.random.default_rng(0)
    data, suffix = shifted_file(pixels, parse_shifts("noise=2,jpeg=40"), rng)
    assert suffix == ".jpg"
    assert quality_statistics(decode_image(data), pixels, data, None)["jpeg_quality"] == 40
    # An encoder earlier in the chain is re-encoded at quality 95 after the later shifts.
    data, suffix = shifted_file(pixels, parse_shifts("jpeg=40,noise=2"), rng)
    assert suffix == ".jpg"
    assert quality_statistics(decode_image(data), pixels, data, None)["jpeg_quality"] == 95
    data, suffix = shifted_file(pixels, parse_shifts("noise=2"), rng)
    assert suffix == ".png" and data.startswith(b"\x89PNG")
