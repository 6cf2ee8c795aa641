"""The maps each kind of backbone gives the patch feature extractor."""

from __future__ import annotations

import pytest
import torch

from visionops.anomaly.features import PatchFeatureExtractor
from visionops.anomaly.trunks import vit_block_indices
from visionops.errors import ConfigError


@pytest.mark.parametrize(
    ("name", "layers", "channels", "grid"),
    [
        ("timm:resnet18", ("layer2", "layer3"), 128 + 256, 8),
        ("timm:convnext_atto", ("layer1", "layer2"), 40 + 80, 16),
        ("timm:vit_tiny_patch16_224", ("block2", "block5"), 2 * 192, 4),
    ],
)
def test_timm_trunks_give_maps_at_the_first_layers_grid(
    name: str, layers: tuple[str, ...], channels: int, grid: int
) -> None:
    extractor = PatchFeatureExtractor.build(name, channels=3, layers=layers, image_size=64)
    assert extractor.full_dim == channels
    assert extractor(torch.rand(2, 3, 64, 64)).shape == (2, channels, grid, grid)


def test_timm_resnet_matches_the_torchvision_layer_names() -> None:
    """``layerN`` is the stage at stride 2^(N+1): the same maps in both families."""
    torchvision_maps = PatchFeatureExtractor.build("resnet18", channels=3, image_size=64)
    timm_maps = PatchFeatureExtractor.build("timm:resnet18", channels=3, image_size=64)
    assert torchvision_maps.full_dim == timm_maps.full_dim == 128 + 256


def test_vit_patch_tokens_follow_the_blocks_they_come_from() -> None:
    """Pruned blocks past the deepest one do not change the chosen block's tokens."""
    torch.manual_seed(0)
    shallow = PatchFeatureExtractor.build(
        "timm:vit_tiny_patch16_224", channels=3, layers=("block2",), image_size=64, seed=3
    )
    deep = PatchFeatureExtractor.build(
        "timm:vit_tiny_patch16_224", channels=3, layers=("block2", "block9"), image_size=64, seed=3
    )
    images = torch.rand(1, 3, 64, 64)
    assert len(shallow.stages.network.blocks) == 3
    assert torch.allclose(deep(images)[:, :192], shallow(images), atol=1e-6)


def test_vit_layer_names_read_quarters_of_the_depth() -> None:
    assert vit_block_indices(["layer1", "layer2", "layer4"], 12) == [2, 5, 11]
    assert vit_block_indices(["block7", "layer3"], 12) == [7, 8]
    with pytest.raises(ConfigError, match=r"no layer 'block12'.*block0\.\.block11"):
        vit_block_indices(["block12"], 12)


def test_blocks_on_a_cnn_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"timm:resnet18' has no layer block3"):
        PatchFeatureExtractor.build("timm:resnet18", channels=3, layers=("block3",))
    with pytest.raises(ConfigError, match="no layer block3"):
        PatchFeatureExtractor.build("resnet18", channels=3, layers=("block3",))
