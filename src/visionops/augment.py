"""Training-time augmentation on uint8 image batches, with different random draws per image.

torchvision's ``transforms.v2`` draws *one* set of random parameters per call, so applying
``RandomResizedCrop`` to a ``(B, C, H, W)`` batch would crop every image identically, and a
Python loop over the images costs more than a training step of a small model. This module
applies the same operations as ``v2.RandomResizedCrop`` (at the input size),
``v2.RandomHorizontalFlip``/``v2.RandomVerticalFlip``, ``v2.RandomRotation`` and
``v2.ColorJitter`` (brightness, contrast, saturation) with per-image parameters in a few
batched tensor operations: one affine resampling for all geometry, three blends for colour.
It runs on the batch's device (GPU or CPU) and never touches the validation or test splits.

Examples:
    >>> augment = BatchAugment(AugmentSettings(rotate_degrees=15))
    >>> out = augment(torch.zeros(8, 3, 64, 64, dtype=torch.uint8))
    >>> out.dtype, out.shape
    (torch.uint8, torch.Size([8, 3, 64, 64]))
"""

from __future__ import annotations

import math

import torch
from torch.nn import functional

from visionops.config import AugmentSettings

__all__ = ["BatchAugment", "build_augment"]

# v2.RandomResizedCrop's default aspect-ratio range.
_RATIO = (3.0 / 4.0, 4.0 / 3.0)
# ITU-R 601-2 luma, as torchvision's rgb_to_grayscale.
_LUMA = (0.2989, 0.587, 0.114)
# Columns of the per-image random draw.
_HFLIP, _VFLIP, _AREA, _RATIO_DRAW, _CX, _CY, _ANGLE, _BRIGHT, _CONTRAST, _SAT = range(10)
_DRAWS = 10


class BatchAugment:
    """Random crop/flip/rotate/colour jitter with per-image parameters.

    Args:
        settings: ``train.augment``.
        generator: Random source (default: torch's global generator, which the engine seeds
            and checkpoints, so a resumed run draws the same augmentations).
    """

    def __init__(self, settings: AugmentSettings, generator: torch.Generator | None = None) -> None:
        self.settings = settings
        self.generator = generator

    @property
    def geometric(self) -> bool:
        """Whether a resampling step is needed (crop or rotation)."""
        return self.settings.crop_scale < 1.0 or self.settings.rotate_degrees > 0

    def _draw(self, n: int, device: torch.device) -> torch.Tensor:
        # All random numbers of a batch in one CPU draw and one copy: cheap on a GPU, and the
        # CPU generator is the one a checkpoint saves.
        return torch.rand(n, _DRAWS, generator=self.generator).to(device, non_blocking=True)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """Augment a batch.

        Args:
            images: ``(B, C, H, W)`` uint8 (any memory format).

        Returns:
            The augmented batch, uint8, same shape and device.
        """
        if not self.settings.enabled or images.shape[0] == 0:
            return images
        draw = self._draw(images.shape[0], images.device)
        out = self._geometry(images, draw)
        if self.settings.color_jitter > 0:
            as_float = out.float() if out.dtype == torch.uint8 else out
            out = self._colour(as_float, draw)
        if out.dtype != torch.uint8:
            out = out.round_().clamp_(0, 255).to(torch.uint8)
        return out

    def _geometry(self, images: torch.Tensor, draw: torch.Tensor) -> torch.Tensor:
        n, _, height, width = images.shape
        s = self.settings
        hflip = draw[:, _HFLIP] < s.hflip if s.hflip > 0 else None
        vflip = draw[:, _VFLIP] < s.vflip if s.vflip > 0 else None
        if not self.geometric:
            # Exact flips, no resampling.
            out = images
            if hflip is not None:
                out = torch.where(hflip.view(-1, 1, 1, 1), out.flip(-1), out)
            if vflip is not None:
                out = torch.where(vflip.view(-1, 1, 1, 1), out.flip(-2), out)
            return out
        # RandomResizedCrop: area share in [crop_scale, 1], log-uniform aspect ratio, crop
        # fully inside the image, resized back to the input size.
        area = _scale(draw[:, _AREA], s.crop_scale, 1.0)
        ratio = torch.exp(_scale(draw[:, _RATIO_DRAW], math.log(_RATIO[0]), math.log(_RATIO[1])))
        crop_w = torch.sqrt(area * ratio).clamp(max=1.0)
        crop_h = torch.sqrt(area / ratio).clamp(max=1.0)
        # Centre in normalised [-1, 1] coordinates, anywhere the crop fits.
        centre_x = (1 - crop_w) * _scale(draw[:, _CX], -1.0, 1.0)
        centre_y = (1 - crop_h) * _scale(draw[:, _CY], -1.0, 1.0)
        angle = torch.deg2rad(_scale(draw[:, _ANGLE], -s.rotate_degrees, s.rotate_degrees))
        cos, sin = torch.cos(angle), torch.sin(angle)
        ones = torch.ones_like(area)
        flip_x = 1 - 2 * hflip.float() if hflip is not None else ones
        flip_y = 1 - 2 * vflip.float() if vflip is not None else ones
        # input = centre + diag(crop) @ R(angle) @ diag(flip) @ output   (per image)
        theta = torch.stack(
            [
                torch.stack([crop_w * cos * flip_x, -crop_w * sin * flip_y, centre_x], dim=1),
                torch.stack([crop_h * sin * flip_x, crop_h * cos * flip_y, centre_y], dim=1),
            ],
            dim=1,
        )
        grid = functional.affine_grid(theta, [n, 1, height, width], align_corners=False)
        # Outside the image (after rotation) is filled with 0, as v2.RandomRotation does.
        return functional.grid_sample(
            images.float(), grid, mode="bilinear", padding_mode="zeros", align_corners=False
        )

    def _colour(self, images: torch.Tensor, draw: torch.Tensor) -> torch.Tensor:
        channels = images.shape[1]
        jitter = self.settings.color_jitter
        low, high = max(0.0, 1 - jitter), 1 + jitter

        def factor(column: int) -> torch.Tensor:
            return _scale(draw[:, column], low, high).view(-1, 1, 1, 1)

        # Brightness: blend with black. Contrast: blend with the mean grey level.
        # Saturation: blend with the grey image. Same formulas as v2.functional.adjust_*.
        out = (images * factor(_BRIGHT)).clamp_(0, 255)
        grey = _grey(out) if channels == 3 else out
        mean = grey.mean(dim=(1, 2, 3), keepdim=True)
        contrast = factor(_CONTRAST)
        out = (out * contrast + mean * (1 - contrast)).clamp_(0, 255)
        if channels == 3:
            saturation = factor(_SAT)
            out = (out * saturation + _grey(out) * (1 - saturation)).clamp_(0, 255)
        return out


def _scale(uniform: torch.Tensor, low: float, high: float) -> torch.Tensor:
    return low + (high - low) * uniform


def _grey(images: torch.Tensor) -> torch.Tensor:
    red, green, blue = images.unbind(dim=1)
    grey = _LUMA[0] * red + _LUMA[1] * green + _LUMA[2] * blue
    return grey.unsqueeze(1)


def build_augment(settings: AugmentSettings) -> BatchAugment | None:
    """The training augmentation for ``settings``, or None when it would do nothing."""
    active = settings.enabled and (
        settings.hflip > 0
        or settings.vflip > 0
        or settings.rotate_degrees > 0
        or settings.crop_scale < 1.0
        or settings.color_jitter > 0
    )
    return BatchAugment(settings) if active else None
