"""Locally aware patch features from a frozen backbone (PatchCore's feature extractor).

The intermediate maps of a backbone (``layer2`` and ``layer3`` by default) are each averaged
over a 3×3 neighbourhood, so every patch feature sees its surroundings; the deeper, coarser
maps are upsampled to the first one's grid and concatenated along channels. An optional
seeded Gaussian random projection then shortens the feature vectors.

Three kinds of trunk give the maps (:mod:`visionops.anomaly.trunks`): a torchvision
ResNet's children, a timm CNN's stages at stride 4..32, and a timm ViT's patch tokens of
chosen blocks (the DINOv2 family included).

Examples:
    >>> extractor = PatchFeatureExtractor.build("resnet18", channels=3)
    >>> extractor(torch.zeros(2, 3, 64, 64)).shape
    torch.Size([2, 384, 8, 8])
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn
from torch.nn import functional

from visionops.anomaly.trunks import build_trunk
from visionops.models import build_backbone

__all__ = [
    "PatchFeatureExtractor",
    "calibrate_batchnorm",
    "normalised_batches",
    "random_projection",
]


def normalised_batches(
    images: NDArray[np.uint8],
    mean: Sequence[float],
    std: Sequence[float],
    batch_size: int,
    device: torch.device | str = "cpu",
) -> Iterator[torch.Tensor]:
    """uint8 ``(N, H, W, C)`` images → normalised float ``(B, C, H, W)`` batches."""
    mean_t = torch.tensor(list(mean), dtype=torch.float32, device=device).view(1, -1, 1, 1)
    std_t = torch.tensor(list(std), dtype=torch.float32, device=device).view(1, -1, 1, 1)
    for start in range(0, len(images), batch_size):
        chunk = torch.from_numpy(np.ascontiguousarray(images[start : start + batch_size]))
        pixels = chunk.to(device).permute(0, 3, 1, 2).float() / 255.0
        yield (pixels - mean_t) / std_t


def random_projection(in_dim: int, out_dim: int, seed: int) -> torch.Tensor:
    """A seeded Gaussian Johnson-Lindenstrauss projection ``(in_dim, out_dim)``.

    Entries are N(0, 1/out_dim), so squared distances are preserved in expectation.
    """
    generator = torch.Generator().manual_seed(seed)
    matrix = torch.randn(in_dim, out_dim, generator=generator)
    return matrix / math.sqrt(out_dim)


class PatchFeatureExtractor(nn.Module):
    """Frozen trunk of a backbone returning ``(B, D, h, w)`` patch features.

    Args:
        stages: The trunk: maps images to the requested layers' maps, in order.
        layers: The layers' names (``layer2``, ``block8``, ...).
        channels: Input channels.
        probe_size: Input side used once to count the maps' channels.

    Attributes:
        full_dim: Channels of the concatenated features before any projection.
        projection: ``(full_dim, D)`` projection matrix (a buffer), or None.
    """

    projection: torch.Tensor | None

    def __init__(
        self, stages: nn.Module, layers: Sequence[str], channels: int, probe_size: int = 32
    ) -> None:
        super().__init__()
        self.stages = stages
        self.layers = tuple(layers)
        self.register_buffer("projection", None)
        self.requires_grad_(False)
        self.eval()
        with torch.no_grad():
            maps = self._layer_maps(torch.zeros(1, channels, probe_size, probe_size))
        self.full_dim = sum(int(m.shape[1]) for m in maps)

    @classmethod
    def build(
        cls,
        name: str,
        *,
        channels: int,
        layers: Sequence[str] = ("layer2", "layer3"),
        pretrained: bool | str = False,
        weights: Path | None = None,
        image_size: int = 224,
        projection_dim: int | None = None,
        seed: int = 0,
    ) -> PatchFeatureExtractor:
        """Build the extractor from a ``model.name``.

        Args:
            name: A ResNet-family torchvision backbone (``resnet18``, ``wide_resnet50_2``) or a
                timm CNN or ViT (``timm:convnext_atto``, ``timm:vit_small_patch14_dinov2``).
            channels: Input channels (1 or 3).
            layers: Layers whose features are concatenated: ``layer1``..``layer4`` (the CNN
                stage at stride 4..32; a ViT's block ending that quarter of its depth), or
                ``block<i>`` (a ViT's block ``i``, from 0).
            pretrained: Load the family's pretrained weights from the local cache.
            weights: Load this state dict file instead.
            image_size: Input side (a ViT's position embeddings are resampled to it).
            projection_dim: Project the concatenated features to this many dimensions.
            seed: Seeds the random initialisation and the projection.

        Raises:
            ConfigError: A backbone without the requested layers, or an unknown name.
        """
        torch.manual_seed(seed)
        network, _ = build_backbone(
            name,
            channels=channels,
            pretrained=pretrained,
            weights=weights,
            image_size=image_size,
        )
        trunk = build_trunk(name, network, layers)
        extractor = cls(trunk, layers, channels, probe_size=image_size)
        if projection_dim is not None and projection_dim < extractor.full_dim:
            extractor.set_projection(
                random_projection(extractor.full_dim, projection_dim, seed + 1)
            )
        return extractor

    def set_projection(self, projection: torch.Tensor | None) -> None:
        """Use ``projection`` ``(full_dim, D)`` (None: keep every channel)."""
        self.register_buffer("projection", projection)

    @property
    def feature_dim(self) -> int:
        """``D``: the length of one patch feature."""
        return int(self.projection.shape[1]) if self.projection is not None else self.full_dim

    def _layer_maps(self, images: torch.Tensor) -> list[torch.Tensor]:
        maps: list[torch.Tensor] = self.stages(images)
        return maps

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Patch features ``(B, D, h, w)`` of normalised images ``(B, C, H, W)``."""
        maps = self._layer_maps(images)
        size = maps[0].shape[-2:]
        pooled = []
        for feature_map in maps:
            local = functional.avg_pool2d(feature_map, kernel_size=3, stride=1, padding=1)
            if local.shape[-2:] != size:
                local = functional.interpolate(
                    local, size=size, mode="bilinear", align_corners=False
                )
            pooled.append(local)
        features = torch.cat(pooled, dim=1)
        if self.projection is not None:
            features = torch.einsum("bchw,cd->bdhw", features, self.projection)
        return features


@torch.no_grad()
def calibrate_batchnorm(extractor: PatchFeatureExtractor, batches: Sequence[torch.Tensor]) -> None:
    """Set BatchNorm statistics from images (the cumulative mean over ``batches``).

    A randomly initialised network has running mean 0 and variance 1 everywhere, so its
    activations drift in scale from layer to layer and the deeper map either swamps or
    vanishes next to the shallower one; statistics from the good training images keep every
    layer at unit scale. Pretrained networks keep their own statistics (never call this).
    """
    norms = [m for m in extractor.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None
    extractor.train()
    for batch in batches:
        extractor(batch)
    extractor.eval()
    for norm in norms:
        norm.momentum = 0.1
