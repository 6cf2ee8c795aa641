"""``visionops.models.cam``: which backbones have a class activation map, and that it is CAM.

Each supported backbone's map is compared with the textbook computation on the unchanged
model (a forward hook on the layer the finder names, the head's weights, bilinear upsampling,
min-max), and its outputs with the model's own; backbones whose pooling is followed by more
layers are refused with the reason.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from torch.nn import functional

from visionops.artifacts import BundleInput, BundleMeta
from visionops.models import build_model
from visionops.models.cam import activation_map_model, class_activation_map
from visionops.tasks import PredictOptions, task_for
from visionops.tasks._cam import CAM_OUTPUT


def bundle_meta(task: str, main_output: str, **labels: Any) -> BundleMeta:
    """A bundle's metadata of ``task`` with ``labels`` and fields such as ``cam``."""
    return BundleMeta(
        task=task,
        model_version="run-001",
        input=BundleInput(size=64, channels=3, max_image_pixels=64 * 64 * 16),
        outputs={"main": main_output},
        **labels,
    )


def _images(size: int = 64) -> torch.Tensor:
    return torch.randn(3, 3, size, size, generator=torch.Generator().manual_seed(1))


def _textbook(model: torch.nn.Module, layer: str, images: torch.Tensor) -> torch.Tensor:
    captured: list[torch.Tensor] = []
    module = model.get_submodule(layer)
    hook = module.register_forward_hook(lambda _m, _i, output: captured.append(output))
    with torch.no_grad():
        logits, _ = model(images)
    hook.remove()
    features = captured[0]
    if layer == "backbone.features" and type(model.backbone).__name__ == "DenseNet":
        features = functional.relu(features)
    weights = model.head.weight[logits.argmax(dim=1)]
    maps = torch.einsum("bd,bdhw->bhw", weights, features)[:, None]
    maps = functional.interpolate(maps, size=images.shape[2:], mode="bilinear")[:, 0]
    low = maps.amin(dim=(1, 2), keepdim=True)
    high = maps.amax(dim=(1, 2), keepdim=True)
    assert ((high - low) > 0.01 * torch.maximum(low.abs(), high.abs())).all()
    return (maps - low) / (high - low)


@pytest.mark.parametrize(
    ("name", "layer", "cells"),
    [
        ("resnet18", "backbone.layer4", [2, 2]),
        ("mobilenet_v2", "backbone.features", [2, 2]),
        ("shufflenet_v2_x0_5", "backbone.conv5", [2, 2]),
        ("timm:resnet10t", "backbone.forward_features", [2, 2]),
    ],
)
def test_a_pooled_backbone_gets_the_textbook_map(name: str, layer: str, cells: list[int]) -> None:
    torch.manual_seed(0)
    model = build_model(name, num_outputs=4).eval()
    with torch.no_grad():
        model.head.weight.normal_(0, 1)
    explained, support = activation_map_model(model, channels=3, image_size=64)
    assert explained is not None and support.available, support.reason
    assert support.layer == layer and list(support.feature_size or []) == cells
    images = _images()
    with torch.no_grad():
        raw, embedding = model(images)
        raw_cam, embedding_cam, maps = explained.explain(images)
    torch.testing.assert_close(raw_cam, raw, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(embedding_cam, embedding, rtol=1e-4, atol=1e-5)
    assert maps.shape == (3, 64, 64)
    if not layer.endswith("forward_features"):
        torch.testing.assert_close(maps, _textbook(model, layer, images), rtol=0, atol=1e-4)


@pytest.mark.parametrize(
    ("name", "size", "why"),
    [
        ("mobilenet_v3_small", 64, "not the mean of backbone.features's map"),
        ("timm:convnext_atto", 64, "not the mean of backbone.forward_features's map"),
        ("timm:vit_tiny_patch16_224", 224, "3-d tokens, not a 2-d map"),
        ("resnet18", 32, "1x1 at 32 px"),
    ],
)
def test_a_backbone_without_a_map_is_refused_with_the_reason(
    name: str, size: int, why: str
) -> None:
    model = build_model(name, num_outputs=3, image_size=size).eval()
    explained, support = activation_map_model(model, channels=3, image_size=size)
    assert explained is None and not support.available
    assert support.reason is not None and why in support.reason


def test_the_map_points_at_the_features_that_carry_the_class() -> None:
    features = torch.zeros(1, 2, 4, 4)
    features[0, 0, 3, 0] = 5.0  # the evidence for class 0 sits in the bottom-left cell
    features[0, 1] = 1.0
    weight = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    maps = class_activation_map(features, weight, torch.tensor([0]), (32, 32))
    assert maps.shape == (1, 32, 32)
    assert float(maps.max()) == pytest.approx(1.0) and float(maps.min()) == 0.0
    row, column = divmod(int(maps[0].argmax()), 32)
    assert row >= 24 and column < 8
    flat = class_activation_map(features, weight, torch.tensor([1]), (32, 32))
    assert float(flat.abs().max()) == 0.0  # class 1's evidence is everywhere: nothing stands out


def _explaining_bundle(task: str, available: bool) -> BundleMeta:
    cam = {"available": available, "output": "cam" if available else None}
    cam |= {"layer": "backbone.layer4", "feature_size": [2, 2] if available else [1, 1]}
    if not available:
        cam["reason"] = "backbone.layer4's map is 1x1 at 32 px: no place to point at"
    return bundle_meta(task, "probabilities", class_names=["a", "b", "c"], cam=cam)


@pytest.mark.parametrize("name", ["classification", "multilabel"])
def test_an_answer_carries_the_top_class_map_when_asked(name: str) -> None:
    task = task_for(_explaining_bundle(name, available=True))
    main = np.array([0.1, 0.7, 0.2], np.float32)
    values = np.linspace(0, 1, 64 * 64, dtype=np.float32).reshape(64, 64)
    pixels = np.zeros((64, 64, 3), np.uint8)
    extra = {CAM_OUTPUT: values, "input": pixels}
    assert "heatmap" not in task.answer(main, extra, PredictOptions())
    assert task.check_options(PredictOptions(heatmap=True)) is None
    heatmap = task.answer(main, extra, PredictOptions(heatmap=True))["heatmap"]
    assert heatmap["label"] == "b"
    assert (heatmap["width"], heatmap["height"]) == (64, 64)
    assert heatmap["png_base64"] and heatmap["overlay_png_base64"]
    assert task.heatmap_support()["kind"] == "class_activation_map"


@pytest.mark.parametrize("name", ["classification", "multilabel"])
def test_a_bundle_without_a_map_refuses_heatmap_with_the_reason(name: str) -> None:
    task = task_for(_explaining_bundle(name, available=False))
    problem = task.check_options(PredictOptions(heatmap=True))
    assert problem is not None and "1x1 at 32 px" in problem
    assert "1x1 at 32 px" in task.heatmap_support()["detail"]
    old = task_for(bundle_meta(name, "probabilities", class_names=["a", "b"]))
    problem = old.check_options(PredictOptions(heatmap=True))
    assert problem is not None and "visionops export --force" in problem
