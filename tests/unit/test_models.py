import hashlib
from pathlib import Path

import pytest
import torch
import torchvision

from visionops.errors import ConfigError
from visionops.models import build_model, list_backbones, pretrained_normalization, weights_source


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
    with pytest.raises(ConfigError, match=r"resnet18-.*\.pth.*--no-pretrained"):
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


@pytest.fixture
def v1_only_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A TORCH_HOME holding MobileNetV2's IMAGENET1K_V1 file only (not DEFAULT, which is V2)."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    file = cache / torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V1.url.rsplit("/", 1)[-1]
    torch.manual_seed(1)
    torch.save(torchvision.models.mobilenet_v2().state_dict(), file)

    def no_network(*args: object, **kwargs: object) -> None:
        raise OSError("network is unreachable")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    return file


@pytest.mark.parametrize("choice", [True, "IMAGENET1K_V1", "MobileNet_V2_Weights.IMAGENET1K_V1"])
def test_pretrained_takes_any_cached_imagenet_file_and_names_it(
    v1_only_cache: Path, choice: bool | str
) -> None:
    model = build_model("mobilenet_v2", num_outputs=3, pretrained=choice)
    saved = torch.load(v1_only_cache, weights_only=True)
    assert torch.equal(model.backbone.features[0][0].weight, saved["features.0.0.weight"])
    source = weights_source("mobilenet_v2", pretrained=choice, weights=None)
    assert source is not None
    assert source.name == "MobileNet_V2_Weights.IMAGENET1K_V1"
    assert source.file == str(v1_only_cache)
    assert source.sha256 == hashlib.sha256(v1_only_cache.read_bytes()).hexdigest()


def test_a_named_weights_file_missing_is_one_line_naming_it(v1_only_cache: Path) -> None:
    with pytest.raises(
        ConfigError, match=r"mobilenet_v2-7ebf99e0\.pth \(IMAGENET1K_V2\) is not in"
    ):
        build_model("mobilenet_v2", num_outputs=3, pretrained="IMAGENET1K_V2")


def test_an_unknown_weights_name_lists_the_architecture_s_names(v1_only_cache: Path) -> None:
    with pytest.raises(ConfigError, match=r"no weights 'V3'.*IMAGENET1K_V1, IMAGENET1K_V2"):
        build_model("mobilenet_v2", num_outputs=3, pretrained="V3")


def test_random_init_has_no_weights_source() -> None:
    assert weights_source("resnet18", pretrained=False, weights=None) is None
