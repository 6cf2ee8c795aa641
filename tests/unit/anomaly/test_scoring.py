"""Nearest-neighbour scoring, heatmap and the feature extractor's shapes."""

from __future__ import annotations

import pytest
import torch

from visionops.anomaly.features import PatchFeatureExtractor
from visionops.anomaly.scoring import PatchCoreModel, gaussian_kernel, nearest_distances
from visionops.errors import ConfigError


def test_chunked_distances_equal_the_brute_force_minimum() -> None:
    generator = torch.Generator().manual_seed(0)
    patches = torch.randn(2, 30, 16, generator=generator)
    bank = torch.randn(1000, 16, generator=generator)
    expected = torch.cdist(patches, bank[None].expand(2, -1, -1)).min(dim=-1).values
    for chunk in (64, 333, 4096):
        assert torch.allclose(nearest_distances(patches, bank, chunk), expected, atol=1e-4)


def test_a_patch_in_the_bank_scores_zero_up_to_rounding() -> None:
    bank = torch.randn(50, 8) * 100
    others = torch.cdist(bank, bank) + torch.eye(50) * 1e9
    # float32 |x|² - 2x·m + |m|² loses ~1e-7·|x|² before the root, i.e. ~3e-4·|x| after it.
    assert torch.all(nearest_distances(bank[None, :5], bank) < 1e-2 * others.min())


def test_gaussian_kernel_is_normalised_and_symmetric() -> None:
    kernel = gaussian_kernel(1.5)
    assert kernel.shape == (1, 1, 13, 13)
    assert torch.isclose(kernel.sum(), torch.tensor(1.0))
    assert torch.equal(kernel, kernel.flip(-1))


def test_extractor_grid_and_dimensions() -> None:
    extractor = PatchFeatureExtractor.build("resnet18", channels=3)
    assert extractor(torch.zeros(1, 3, 64, 64)).shape == (1, 128 + 256, 8, 8)
    projected = PatchFeatureExtractor.build("resnet18", channels=1, projection_dim=32)
    assert projected.feature_dim == 32
    assert projected(torch.zeros(2, 1, 64, 64)).shape == (2, 32, 8, 8)


def test_backbone_without_the_layers_is_refused() -> None:
    with pytest.raises(ConfigError, match="ResNet-family"):
        PatchFeatureExtractor.build("mobilenet_v2", channels=3)


def test_model_outputs_and_the_defect_lights_up() -> None:
    torch.manual_seed(0)
    extractor = PatchFeatureExtractor.build("resnet18", channels=3, layers=("layer1", "layer2"))
    good = torch.randn(4, 3, 64, 64) * 0.1
    features = extractor(good)
    bank = features.permute(0, 2, 3, 1).reshape(-1, features.shape[1])
    model = PatchCoreModel(extractor, bank, image_size=64, sigma=1.0)
    defect = good[:1].clone()
    defect[..., 40:52, 8:20] += 3.0
    score, heatmap, embedding = model(torch.cat([good[:1], defect]))
    assert heatmap.shape == (2, 64, 64) and embedding.shape == (2, features.shape[1])
    assert score[0] < 1e-2 < score[1]
    inside, outside = heatmap[1, 40:52, 8:20].mean(), heatmap[1, :, 32:].mean()
    assert inside > 5 * outside
