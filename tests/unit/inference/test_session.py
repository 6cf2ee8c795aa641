"""The ONNX Runtime session: decoding guards, batching, post-processing by task."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from serve_helpers import COLOURS, colour_image, png_bomb
from visionops.artifacts import BundleInput, BundleMeta
from visionops.errors import ArtifactError, ImageError
from visionops.imaging import load_image
from visionops.inference.budget import CpuBudget
from visionops.inference.bundle import Bundle, load_bundle
from visionops.inference.session import (
    ImageTooLargeError,
    ModelOutputs,
    ModelSession,
    Postprocessor,
    PredictOptions,
    UnsupportedImageError,
)


@pytest.fixture(scope="module")
def session(classification_bundle: Path) -> ModelSession:
    return ModelSession(load_bundle(classification_bundle), threads=1)


def test_decode_is_the_preprocess_function(session: ModelSession) -> None:
    payload = colour_image(size=(70, 50), fmt="JPEG")
    decoded = session.decode(payload)
    np.testing.assert_array_equal(decoded.pixels, load_image(payload, size=32))
    assert decoded.info.format == "jpeg"
    assert (decoded.info.width, decoded.info.height) == (70, 50)
    assert decoded.info.bytes == len(payload)
    assert decoded.info.mean is not None and 0.0 <= decoded.info.mean <= 1.0


def test_decode_leaves_the_statistics_out_when_their_budget_is_spent(
    classification_bundle: Path,
) -> None:
    clock = [0.0]
    budget = CpuBudget(1e-6, cores=1, clock=lambda: clock[0], rng=random.Random(0))
    for _ in range(100):  # a second of heavy load: the statistics' share is spent
        budget.admit()
        budget.spend(0.001)
    clock[0] = 1.0
    session = ModelSession(load_bundle(classification_bundle), threads=1, statistics_budget=budget)
    payload = colour_image(size=(70, 50), fmt="JPEG")
    decoded = session.decode(payload)
    np.testing.assert_array_equal(decoded.pixels, load_image(payload, size=32))
    info = decoded.info
    assert (info.format, info.width, info.height, info.bytes) == ("jpeg", 70, 50, len(payload))
    assert info.mean is None and info.noise is None and info.hue is None
    assert budget.status().skipped == 1


def test_decode_guards(session: ModelSession) -> None:
    with pytest.raises(UnsupportedImageError, match="not an image"):
        session.decode(b"GIF-ish? no: just text")
    with pytest.raises(ImageTooLargeError, match="64,000,000"):
        session.decode(png_bomb(9000, 9000))
    with pytest.raises(ImageError, match="truncated"):
        session.decode(colour_image(size=(64, 64), fmt="JPEG")[:300])


def test_batches_match_single_runs(session: ModelSession) -> None:
    pixels = np.stack([session.decode(colour_image(name)).pixels for name in COLOURS])
    batch = session.run(pixels)
    assert batch.main.shape == (4, 4)
    assert batch.embedding is not None
    assert batch.embedding.shape == (4, 512)
    for row in range(4):
        single = session.run(pixels[row : row + 1])
        np.testing.assert_allclose(single.main[0], batch.main[row], atol=1e-5)
    np.testing.assert_allclose(batch.main.sum(axis=1), 1.0, atol=1e-5)
    assert batch.main.argmax(axis=1).tolist() == [0, 1, 2, 3]  # red, green, blue, yellow


def test_a_graph_without_the_declared_output_is_refused(classification_bundle: Path) -> None:
    bundle = load_bundle(classification_bundle)
    broken = Bundle(
        bundle.path, bundle.meta.model_copy(update={"outputs": {"main": "logits"}}), bundle.parity
    )
    with pytest.raises(ArtifactError, match="no output 'logits'"):
        ModelSession(broken, threads=1)


def test_int8_is_refused_when_export_kept_none(classification_bundle: Path) -> None:
    bundle = load_bundle(classification_bundle)
    assert ModelSession(bundle, threads=1).precision == "fp32"  # auto falls back to fp32
    with pytest.raises(ArtifactError, match="--quantize int8"):
        ModelSession(bundle, threads=1, precision="int8")


def _bundle(task: str, **manifest: Any) -> Bundle:
    spec = BundleInput(size=8, channels=3, max_image_pixels=64)
    meta = BundleMeta(task=task, model_version="v", input=spec, outputs={}, **manifest)
    return Bundle(Path("."), meta, None)


def test_classification_top_k() -> None:
    post = Postprocessor(_bundle("classification", class_names=list(COLOURS)), default_top_k=2)
    described = post.describe()
    assert described["thresholds"] is None and described["default_top_k"] == 2
    # A bundle exported before class activation maps: no heatmap, and how to get one.
    assert described["heatmap"]["available"] is False
    assert "re-export" in described["heatmap"]["detail"]
    outputs = ModelOutputs(np.array([[0.1, 0.6, 0.2, 0.1]], np.float32), None)
    answer = post(outputs, 0, PredictOptions())
    assert answer["label"] == "green"
    assert [e["label"] for e in answer["top_k"]] == ["green", "blue"]
    assert len(post(outputs, 0, PredictOptions(top_k=10))["top_k"]) == 4
    assert post.check(PredictOptions(threshold=0.5)) is not None


def test_multilabel_falls_back_to_half_without_tuned_thresholds() -> None:
    post = Postprocessor(_bundle("multilabel", class_names=["a", "b", "c"]))
    outputs = ModelOutputs(np.array([[0.9, 0.5, 0.49]], np.float32), None)
    answer = post(outputs, 0, PredictOptions())
    assert [e["label"] for e in answer["labels"]] == ["a", "b"]
    assert post.describe()["thresholds"] == [0.5, 0.5, 0.5]
