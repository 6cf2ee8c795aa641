"""Locally aware patch features from a frozen backbone (PatchCore's feature extractor).

The intermediate maps of a ResNet-family network (``layer2`` and ``layer3`` by default) are
each averaged over a 3×3 neighbourhood, so every patch feature sees its surroundings; the
deeper, coarser maps are upsampled to the first one's grid and concatenated along channels.
An optional seeded Gaussian random projection then shortens the feature vectors.

Examples:
    >>> extractor = PatchFeatureExtractor.build("resnet18", channels=3)
    >>> extractor(torch.zeros(2, 3, 64, 64)).shape
    torch.Size([2, 384, 8, 8])
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn
from torch.nn import functional

from visionops.errors import ConfigError
from visionops.models import build_model

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
        stages: The backbone's children in order, up to the deepest requested layer.
        layers: Names of the children whose outputs are used (e.g. ``layer2``, ``layer3``).
        channels: Input channels.

    Attributes:
        full_dim: Channels of the concatenated features before any projection.
        projection: ``(full_dim, D)`` projection matrix (a buffer), or None.
    """

    projection: torch.Tensor | None

    def __init__(
        self, stages: Sequence[tuple[str, nn.Module]], layers: Sequence[str], channels: int
    ) -> None:
        super().__init__()
        self.stages = nn.ModuleDict(dict(stages))
        self.layers = tuple(layers)
        self.register_buffer("projection", None)
        self.requires_grad_(False)
        self.eval()
        with torch.no_grad():
            maps = self._layer_maps(torch.zeros(1, channels, 32, 32))
        self.full_dim = sum(int(m.shape[1]) for m in maps)

    @classmethod
    def build(
        cls,
        name: str,
        *,
        channels: int,
        layers: Sequence[str] = ("layer2", "layer3"),
        pretrained: bool = False,
        projection_dim: int | None = None,
        seed: int = 0,
    ) -> PatchFeatureExtractor:
        """Build the extractor from a torchvision backbone name.

        Args:
            name: A ResNet-family backbone (``resnet18``, ``wide_resnet50_2``, ...).
            channels: Input channels (1 or 3).
            layers: Intermediate layers whose features are concatenated.
            pretrained: Load torchvision's ImageNet weights.
            projection_dim: Project the concatenated features to this many dimensions.
            seed: Seeds the random initialisation and the projection.

        Raises:
            ConfigError: A backbone without the requested layers, or an unknown name.
        """
        torch.manual_seed(seed)
        network = build_model(name, num_outputs=1, channels=channels, pretrained=pretrained)
        children = list(network.backbone.named_children())
        names = [child for child, _ in children]
        missing = [layer for layer in layers if layer not in names]
        if missing or not layers:
            raise ConfigError(
                f"backbone '{name}' has no layer {', '.join(missing) or '(none asked)'} — anomaly"
                " detection needs a ResNet-family backbone (resnet18, wide_resnet50_2, ...) and"
                " anomaly.layers from layer1..layer4"
            )
        deepest = max(names.index(layer) for layer in layers)
        stages = children[: deepest + 1]
        extractor = cls(stages, layers, channels)
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
        maps: list[torch.Tensor] = []
        x = images
        for stage_name, stage in self.stages.items():
            x = stage(x)
            if stage_name in self.layers:
                maps.append(x)
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
