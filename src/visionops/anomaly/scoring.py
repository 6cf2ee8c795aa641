"""Scoring against the memory bank: patch distances, image score, pixel heatmap.

Each patch's score is its Euclidean distance to the nearest memory-bank feature, found with
a chunked matrix product and a running minimum (``|x|² - 2x·m + |m|²``), so the temporary
``(patches, chunk)`` block stays small however large the bank is. The image score is the
largest patch score; the heatmap is the patch-score grid upsampled to the input size and
smoothed with a Gaussian. Everything is plain tensor algebra, so the same module exports to
ONNX with the bank inside the graph.

Examples:
    >>> model = PatchCoreModel(extractor, bank, image_size=64)
    >>> score, heatmap, embedding = model(images)
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional

from visionops.anomaly.features import PatchFeatureExtractor
from visionops.artifacts import AnomalyModelRecord

__all__ = [
    "PatchCoreModel",
    "build_patchcore",
    "gaussian_kernel",
    "nearest_distances",
    "sigma_for_size",
]

DEFAULT_BANK_CHUNK = 4096
"""Bank rows per matrix product: 1 image × 784 patches × 4096 rows × 4 B = 13 MB."""


def sigma_for_size(sigma_at_224: float, image_size: int) -> float:
    """The heatmap's Gaussian sigma at ``image_size`` for a sigma stated at 224 px."""
    return sigma_at_224 * image_size / 224.0


def gaussian_kernel(sigma: float) -> torch.Tensor:
    """A normalised 2-D Gaussian ``(1, 1, k, k)`` with ``k = 2·ceil(4σ) + 1``."""
    radius = max(1, math.ceil(4.0 * sigma))
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32)
    line = torch.exp(-(offsets**2) / (2.0 * sigma**2))
    line = line / line.sum()
    return torch.outer(line, line)[None, None]


def nearest_distances(
    patches: torch.Tensor, bank: torch.Tensor, chunk: int = DEFAULT_BANK_CHUNK
) -> torch.Tensor:
    """Euclidean distance of each patch ``(B, P, D)`` to its nearest bank row ``(M, D)``.

    Returns:
        ``(B, P)`` distances.
    """
    patch_norms = patches.pow(2).sum(dim=-1)
    nearest: torch.Tensor | None = None
    for start in range(0, int(bank.shape[0]), chunk):
        rows = bank[start : start + chunk]
        products = torch.matmul(patches, rows.transpose(0, 1))
        squared = rows.pow(2).sum(dim=-1) - 2.0 * products
        block = squared.min(dim=-1).values
        nearest = block if nearest is None else torch.minimum(nearest, block)
    assert nearest is not None, "the memory bank is empty"
    # Rounding can make |x|² - 2x·m + |m|² slightly negative for a patch that is in the bank.
    return torch.sqrt(torch.clamp(nearest + patch_norms, min=0.0))


class PatchCoreModel(nn.Module):
    """Normalised images → anomaly score, heatmap and embedding.

    Args:
        extractor: The frozen patch-feature extractor.
        bank: ``(M, D)`` memory bank of good patch features.
        image_size: Side of the input images (the heatmap has the same size).
        sigma: Gaussian smoothing of the heatmap in pixels at ``image_size`` (0: none).
        chunk: Bank rows per matrix product.
    """

    bank: torch.Tensor
    kernel: torch.Tensor | None

    def __init__(
        self,
        extractor: PatchFeatureExtractor,
        bank: torch.Tensor,
        *,
        image_size: int,
        sigma: float = 1.0,
        chunk: int = DEFAULT_BANK_CHUNK,
    ) -> None:
        super().__init__()
        self.extractor = extractor
        self.register_buffer("bank", bank.float().contiguous())
        self.register_buffer("kernel", gaussian_kernel(sigma) if sigma > 0 else None)
        self.image_size = image_size
        self.chunk = chunk
        self.eval()

    def patch_scores(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Patch-score grid ``(B, h, w)`` and embedding ``(B, D)`` (the mean patch feature)."""
        features = self.extractor(images)
        batch, dim, height, width = features.shape
        patches = features.reshape(batch, dim, height * width).transpose(1, 2)
        distances = nearest_distances(patches, self.bank, self.chunk)
        return distances.reshape(batch, height, width), patches.mean(dim=1)

    def heatmap(self, grid: torch.Tensor) -> torch.Tensor:
        """Patch-score grid ``(B, h, w)`` → smoothed pixel heatmap ``(B, H, W)``."""
        size = (self.image_size, self.image_size)
        upsampled = functional.interpolate(
            grid[:, None], size=size, mode="bilinear", align_corners=False
        )
        if self.kernel is not None:
            radius = int(self.kernel.shape[-1]) // 2
            # Replicate, not zero, padding: a border must not look less anomalous than it is.
            padded = functional.pad(upsampled, (radius, radius, radius, radius), mode="replicate")
            upsampled = functional.conv2d(padded, self.kernel)
        return upsampled[:, 0]

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(score (B,), heatmap (B, H, W), embedding (B, D))`` of normalised images."""
        grid, embedding = self.patch_scores(images)
        score = grid.flatten(1).max(dim=1).values
        return score, self.heatmap(grid), embedding


def build_patchcore(name: str, channels: int, record: AnomalyModelRecord) -> PatchCoreModel:
    """An empty model of a run's shape (backbone, ``anomaly`` record), to load a state into.

    Raises:
        ValueError: The record lacks the model's shape (a run older than the checkpoint's).
    """
    if record.image_size is None or record.sigma is None or record.chunk is None:
        raise ValueError("the anomaly record has no image_size, sigma or chunk")
    extractor = PatchFeatureExtractor.build(
        name, channels=channels, layers=record.layers, image_size=record.image_size
    )
    if record.projection_dim is not None:
        extractor.set_projection(torch.zeros(extractor.full_dim, record.projection_dim))
    return PatchCoreModel(
        extractor,
        torch.zeros(record.bank_size, record.feature_dim),
        image_size=record.image_size,
        sigma=record.sigma,
        chunk=record.chunk,
    )
