"""Building the memory bank: patch features of every good training image, then a coreset.

The memory it takes is known before any image is read (images × patches × dimensions × 4
bytes), so an oversized bank is refused up front with the number and the setting to lower,
instead of failing an hour in.

Examples:
    >>> plan = plan_bank(extractor, images=200, image_size=224, channels=3, settings=settings)
    >>> plan.describe()
    '200 images × 784 patches × 384 dims: 230.6 MB of features, bank 15680 patches (23.1 MB)'
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch

from visionops.anomaly.coreset import coreset_indices
from visionops.anomaly.features import PatchFeatureExtractor
from visionops.config import AnomalySettings
from visionops.errors import TrainingError
from visionops.progress import NULL_PROGRESS, ProgressReporter

__all__ = ["BankPlan", "build_memory_bank", "plan_bank"]

_MB = 1024.0**2


@dataclass(frozen=True)
class BankPlan:
    """The memory bank's size, computed before any image is read.

    Attributes:
        images: Good training images.
        patches_per_image: Patch features per image (the feature grid's area).
        grid: ``(h, w)`` of the feature grid.
        dim: Length of one patch feature.
        bank_size: Patches kept after coreset selection.
    """

    images: int
    patches_per_image: int
    grid: tuple[int, int]
    dim: int
    bank_size: int

    @property
    def bytes_per_image(self) -> int:
        """Feature bytes one training image adds before the coreset (float32)."""
        return self.patches_per_image * self.dim * 4

    @property
    def features_mb(self) -> float:
        """All training patch features, MB: what must fit in memory during selection."""
        return self.images * self.bytes_per_image / _MB

    @property
    def bank_mb(self) -> float:
        """The kept memory bank, MB (what the checkpoint and the ONNX graph carry)."""
        return self.bank_size * self.dim * 4 / _MB

    def describe(self) -> str:
        """One line for the log."""
        return (
            f"{self.images} images × {self.patches_per_image} patches × {self.dim} dims:"
            f" {self.features_mb:.1f} MB of features ({self.bytes_per_image / 1024:.0f} KB per"
            f" image), bank {self.bank_size} patches ({self.bank_mb:.1f} MB)"
        )


def plan_bank(
    extractor: PatchFeatureExtractor,
    *,
    images: int,
    image_size: int,
    channels: int,
    settings: AnomalySettings,
) -> BankPlan:
    """Size the bank for ``images`` training images and refuse one over the limit.

    Raises:
        TrainingError: No training image, or the features exceed ``anomaly.max_bank_mb``.
    """
    if images == 0:
        raise TrainingError(
            "no good image in the train split — anomaly detection learns from good images;"
            " put some in train/good and preprocess again"
        )
    with torch.no_grad():
        grid = extractor(torch.zeros(1, channels, image_size, image_size)).shape[-2:]
    patches = int(grid[0]) * int(grid[1])
    total = images * patches
    plan = BankPlan(
        images=images,
        patches_per_image=patches,
        grid=(int(grid[0]), int(grid[1])),
        dim=extractor.feature_dim,
        bank_size=max(1, min(total, round(total * settings.coreset_ratio))),
    )
    if plan.features_mb > settings.max_bank_mb:
        raise TrainingError(
            f"the memory bank needs {plan.features_mb:.0f} MB of patch features"
            f" ({plan.describe()}), above anomaly.max_bank_mb={settings.max_bank_mb:g} — raise"
            " anomaly.max_bank_mb, set anomaly.projection_dim (e.g. 128), or lower"
            " data.image_size"
        )
    return plan


@torch.no_grad()
def build_memory_bank(
    extractor: PatchFeatureExtractor,
    batches: Iterable[torch.Tensor],
    plan: BankPlan,
    *,
    settings: AnomalySettings,
    seed: int,
    progress: ProgressReporter = NULL_PROGRESS,
) -> torch.Tensor:
    """Extract every training patch feature and keep a greedy k-centre coreset of them.

    Args:
        extractor: The frozen extractor.
        batches: Normalised good training images, batch by batch (on the extractor's device).
        plan: From :func:`plan_bank`; the features are written into one preallocated block.
        settings: ``anomaly`` settings.
        seed: Seeds the coreset selection.
        progress: Receives a bar over the images, then one over the coreset.

    Returns:
        ``(bank_size, D)`` float32 memory bank, on the extractor's device.
    """
    features: torch.Tensor | None = None
    row = 0
    bar = progress.start("patch features", total=plan.images)
    for batch in batches:
        maps = extractor(batch)
        patches = maps.permute(0, 2, 3, 1).reshape(-1, maps.shape[1])
        if features is None:
            total = plan.images * plan.patches_per_image
            features = torch.empty(total, plan.dim, dtype=torch.float32, device=patches.device)
        features[row : row + len(patches)] = patches
        row += len(patches)
        bar.advance(len(batch))
    bar.close()
    if features is None:
        raise TrainingError("no training image was read — check the train split")
    features = features[:row]
    chosen = coreset_indices(
        features,
        plan.bank_size,
        seed=seed,
        projection_dim=settings.coreset_projection_dim,
        progress=progress,
    )
    return features[chosen].clone()
