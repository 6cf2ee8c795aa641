"""Class activation maps of a trained shapes classifier: in the bundle, as in PyTorch, on the shape.

The trained ``demo:shapes`` run (resnet18 at 64 px: a 2x2 feature map) is exported; the
bundle's ``cam`` output is compared with the map computed the textbook way from the PyTorch
checkpoint (a forward hook on ``layer4``, the head's weights), and measured against the
shapes' own masks on freshly generated demo images (the generator knows where each shape is).
"""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image
from torch.nn import functional

from serve_helpers import wait_ready
from visionops.artifacts import BundleMeta, ParityRecord
from visionops.config import DemoSettings, ServeSettings
from visionops.data.synthetic import SHAPE_CLASSES, shapes_image
from visionops.inference.bundle import load_bundle
from visionops.runs import load_trained_model
from visionops.serve.app import create_app

pytestmark = pytest.mark.slow

_UNSEEN_SEED = 7
"""A seed the trained run never saw: the images measured are new ones."""
_PER_CLASS = 6


@pytest.fixture(scope="module")
def bundle_dir(shapes_bundle: Path) -> Path:
    """The exported trained shapes run (not written to)."""
    return shapes_bundle


@pytest.fixture(scope="module")
def demo_images() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """New demo shapes at 64 px: pixels, masks and class indices."""
    settings = DemoSettings(image_size=64, seed=_UNSEEN_SEED)
    pixels, masks, labels = [], [], []
    for label, kind in enumerate(SHAPE_CLASSES):
        for index in range(_PER_CLASS):
            image, mask = shapes_image(settings, kind, index)
            pixels.append(image)
            masks.append(mask)
            labels.append(label)
    return np.stack(pixels), np.stack(masks), np.asarray(labels)


def _bundle_maps(bundle_dir: Path, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    session = ort.InferenceSession(str(bundle_dir / "model.onnx"))
    feed = {"pixels": np.ascontiguousarray(pixels.transpose(0, 3, 1, 2))}
    probabilities, maps = session.run(["probabilities", "cam"], feed)
    return probabilities, maps


def _textbook_cam(run_dir: Path, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """CAM as Zhou et al. compute it, from the checkpoint: layer4's map times the head's row."""
    model, record = load_trained_model(run_dir)
    captured: dict[str, torch.Tensor] = {}
    hook = model.backbone.layer4.register_forward_hook(
        lambda _module, _inputs, output: captured.__setitem__("features", output)
    )
    mean = torch.tensor(record.normalization.mean).view(1, -1, 1, 1)
    std = torch.tensor(record.normalization.std).view(1, -1, 1, 1)
    with torch.inference_mode():
        images = (torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255 - mean) / std
        logits, _ = model(images)
        hook.remove()
        top = logits.argmax(dim=1)
        weights = model.head.weight[top]
        maps = torch.einsum("bd,bdhw->bhw", weights, captured["features"])[:, None]
        maps = functional.interpolate(maps, size=pixels.shape[1:3], mode="bilinear")[:, 0]
        low = maps.amin(dim=(1, 2), keepdim=True)
        high = maps.amax(dim=(1, 2), keepdim=True)
        return logits.softmax(dim=1).numpy(), ((maps - low) / (high - low)).numpy()


def test_the_bundle_records_its_map_and_its_parity(bundle_dir: Path) -> None:
    meta = BundleMeta.read(bundle_dir)
    assert meta.cam is not None and meta.cam.available
    assert meta.cam.layer == "backbone.layer4"
    assert meta.cam.feature_size == [2, 2]
    assert meta.outputs["cam"] == "cam"
    parity = ParityRecord.model_validate_json((bundle_dir / "parity.json").read_text())
    assert parity.passed
    assert 0 <= parity.max_abs_diff["cam"] <= parity.bound["cam"] == pytest.approx(1e-4)


def test_the_bundles_map_is_the_textbook_cam_of_the_pytorch_model(
    bundle_dir: Path, demo_images: Any
) -> None:
    pixels, _, _ = demo_images
    probabilities, maps = _bundle_maps(bundle_dir, pixels)
    reference_probabilities, reference_maps = _textbook_cam(bundle_dir.parent, pixels)
    assert maps.shape == (len(pixels), 64, 64)
    np.testing.assert_allclose(probabilities, reference_probabilities, atol=1e-4)
    np.testing.assert_allclose(maps, reference_maps, atol=1e-3)


def test_the_map_of_a_demo_shape_lies_over_the_shape(bundle_dir: Path) -> None:
    """Mean map inside the shape's mask against outside it, on new demo images.

    At 64 px resnet18's last map is 2x2 cells, and a demo shape sits near the middle of its
    image: a 2x2 map can only say which side the evidence is on. So the images measured are
    the quarter of 320 new ones whose shape lies farthest from the centre (7-8 px and more),
    where the side is something to get right.
    """
    settings = DemoSettings(image_size=64, seed=_UNSEEN_SEED)
    rendered = [
        (shapes_image(settings, kind, index), label)
        for label, kind in enumerate(SHAPE_CLASSES)
        for index in range(40)
    ]
    pixels = np.stack([image for (image, _), _ in rendered])
    masks = np.stack([mask for (_, mask), _ in rendered])
    labels = np.array([label for _, label in rendered])
    rows, columns = np.mgrid[0:64, 0:64] + 0.5
    weights = masks / masks.sum(axis=(1, 2), keepdims=True)
    across = (weights * columns).sum(axis=(1, 2)) - 32
    down = (weights * rows).sum(axis=(1, 2)) - 32
    offset = np.hypot(across, down)
    chosen = offset >= np.quantile(offset, 0.75)
    probabilities, maps = _bundle_maps(bundle_dir, pixels[chosen])
    assert (probabilities.argmax(axis=1) == labels[chosen]).mean() >= 0.8  # maps of real answers
    inside = masks[chosen] > 0.5
    outside = masks[chosen] < 0.01
    inside_mean = np.array([m[i].mean() for m, i in zip(maps, inside, strict=True)])
    outside_mean = np.array([m[o].mean() for m, o in zip(maps, outside, strict=True)])
    print(  # the figures docs/serving.md quotes
        f"mean CAM inside {inside_mean.mean():.3f}, outside {outside_mean.mean():.3f};"
        f" inside > outside on {(inside_mean > outside_mean).mean():.0%} of"
        f" {int(chosen.sum())} images"
    )
    assert inside_mean.mean() > 1.1 * outside_mean.mean()
    assert (inside_mean > outside_mean).mean() >= 0.65


def test_the_server_returns_the_map_with_heatmap_true(
    bundle_dir: Path, demo_images: Any, tmp_path: Path
) -> None:
    pixels = demo_images[0]
    buffer = io.BytesIO()
    Image.fromarray(pixels[0]).save(buffer, format="PNG")
    app = create_app(load_bundle(bundle_dir), ServeSettings(), tmp_path)
    with TestClient(app) as client:
        wait_ready(client.get)
        support = client.get("/metadata").json()["heatmap"]
        assert support["available"] and support["kind"] == "class_activation_map"
        assert "backbone.layer4" in support["detail"]
        predict = client.get("/openapi.json").json()["paths"]["/predict"]["post"]
        assert "heatmap" in [p["name"] for p in predict["parameters"]]
        plain = client.post("/predict", files={"file": ("a.png", buffer.getvalue())}).json()
        assert "heatmap" not in plain["predictions"][0]
        answer = client.post(
            "/predict?heatmap=true", files={"file": ("a.png", buffer.getvalue())}
        ).json()["predictions"][0]
    heatmap = answer["heatmap"]
    assert heatmap["label"] == answer["label"]
    assert (heatmap["width"], heatmap["height"]) == (64, 64)
    grey = np.asarray(Image.open(io.BytesIO(base64.b64decode(heatmap["png_base64"]))))
    _, maps = _bundle_maps(bundle_dir, pixels[:1])
    expected = np.round((maps[0] - maps[0].min()) / (maps[0].max() - maps[0].min()) * 255)
    assert np.abs(grey.astype(np.float64) - expected).max() <= 1
    assert heatmap["overlay_png_base64"]
