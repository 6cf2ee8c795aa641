from pathlib import Path

import pytest
import torch
import torchvision

from visionops.errors import ConfigError
from visionops.models import build_model, list_backbones, pretrained_normalization


def test_required_backbones_are_listed() -> None:
    names = set(list_backbones())
    required = {
        "resnet18",
        "resnet34",
        "resnet50",
        "mobilenet_v3_small",
        "mobilenet_v3_large",
        "efficientnet_b0",
        "convnext_tiny",
    }
    assert required <= names
    assert not any(name.startswith(("vit", "swin", "inception", "googlenet")) for name in names)


@pytest.mark.parametrize(("name", "dim"), [("resnet18", 512), ("mobilenet_v3_small", 1024)])
@pytest.mark.parametrize("channels", [1, 3])
def test_outputs_and_embedding(name: str, dim: int, channels: int) -> None:
    model = build_model(name, num_outputs=7, channels=channels).eval()
    outputs, embedding = model(torch.rand(2, channels, 48, 48))
    assert outputs.shape == (2, 7)
    assert embedding.shape == (2, dim)


def test_unknown_model_suggests_close_names() -> None:
    with pytest.raises(
        ConfigError, match=r"unknown model 'resnet19'.*'resnet18'.*visionops models"
    ):
        build_model("resnet19", num_outputs=2)


def test_pretrained_offline_without_cache_is_one_line_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def no_network(*args: object, **kwargs: object) -> None:
        raise OSError("network is unreachable")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    with pytest.raises(ConfigError, match=r"--no-pretrained.*resnet18-.*\.pth"):
        build_model("resnet18", num_outputs=2, pretrained=True)


def test_pretrained_from_filled_cache_works_offline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    weights = torchvision.models.ResNet18_Weights.DEFAULT
    reference = torchvision.models.resnet18()
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.save(reference.state_dict(), cache / weights.url.rsplit("/", 1)[-1])

    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("must not download")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    model = build_model("resnet18", num_outputs=3, pretrained=True, channels=1)
    grey_conv = model.backbone.conv1.weight
    assert torch.allclose(grey_conv, reference.conv1.weight.sum(dim=1, keepdim=True))


def test_pretrained_normalization_is_imagenet_for_resnet() -> None:
    mean, std = pretrained_normalization("resnet18")
    assert mean == pytest.approx((0.485, 0.456, 0.406))
    assert std == pytest.approx((0.229, 0.224, 0.225))
