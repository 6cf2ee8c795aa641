"""Class activation maps: where a classifier with global average pooling and a linear head looks.

A network that ends ``feature map (B, D, h, w) → mean over h, w → linear head`` gives each
location of the feature map a share of every logit: ``logit_c = mean_xy(w_c · F(x, y)) + b_c``.
The map ``w_c · F(x, y)`` of the predicted class ``c`` (Zhou et al., 2016, "Learning Deep
Features for Discriminative Localization") is upsampled to the image and stretched to 0..1,
the way the anomaly heatmap is upsampled: bilinear, so it is smooth at the image's size.

:func:`activation_map_model` finds the feature map of a :class:`~visionops.models.VisionModel`
(the children of a torchvision network before its pooling, a timm network's
``forward_features``) and keeps it only when the backbone's own output *is* that map's
spatial mean on a probe image, so a network whose pooling is followed by more layers
(ConvNeXt's norm, MobileNetV3's hidden layer, a ViT's tokens) is refused with the reason
instead of explained wrongly. The result computes outputs, embedding and map in one pass,
which is what the exported graph holds (serving stays torch-free).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import torch
from torch import nn
from torch.nn import functional

from visionops.models.heads import VisionModel

__all__ = ["ActivationMapModel", "CamSupport", "activation_map_model", "class_activation_map"]

_PROBE_SEED: Final = 0
_FLAT: Final = 0.01
"""Spread, relative to the map's magnitude, below which a map is not stretched to 0..1."""
_RELATIVE_TOLERANCE: Final = 1e-4
"""How close the probe's pooled map must be to the backbone's output (float32 summation order
differs between ``mean`` and adaptive pooling)."""


@dataclass(frozen=True)
class CamSupport:
    """Whether a model has a class activation map, and where it comes from.

    Attributes:
        available: The map can be computed.
        layer: The module whose output is the feature map (``backbone.layer4``,
            ``backbone.forward_features``), when available.
        feature_size: ``(h, w)`` of the feature map at the model's input size.
        reason: Why there is no map (None when there is one).
    """

    available: bool
    layer: str | None = None
    feature_size: tuple[int, int] | None = None
    reason: str | None = None


class _Trunk(nn.Module):
    """Named children of a network run in order: the part before its global pooling."""

    def __init__(self, parts: list[tuple[str, nn.Module]], relu: bool = False) -> None:
        super().__init__()
        self.names = [name for name, _ in parts]
        self.parts = nn.ModuleList([module for _, module in parts])
        self.relu = relu

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """The feature map ``(B, D, h, w)``."""
        features = images
        for part in self.parts:
            features = part(features)
        return functional.relu(features) if self.relu else features


class _ForwardFeatures(nn.Module):
    """A timm network's ``forward_features`` (its unpooled feature map)."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """The feature map ``(B, D, h, w)`` (or tokens, for a transformer)."""
        features: torch.Tensor = self.network.forward_features(images)  # type: ignore[operator]
        return features


def _is_head_part(module: nn.Module) -> bool:
    """Identity, dropout, flatten (or a sequence of them): what stays of a removed classifier."""
    if isinstance(module, nn.Sequential):
        return all(_is_head_part(child) for child in module)
    return isinstance(module, nn.Identity | nn.Dropout | nn.Flatten)


def _candidates(backbone: nn.Module) -> list[tuple[str, nn.Module]]:
    """Possible feature-map trunks of a backbone, most likely first, with their layer names."""
    if callable(getattr(backbone, "forward_features", None)):
        return [("backbone.forward_features", _ForwardFeatures(backbone))]
    children = list(backbone.named_children())
    found: list[_Trunk] = []
    pools = [i for i, (_, m) in enumerate(children) if isinstance(m, nn.AdaptiveAvgPool2d)]
    if pools:
        found.append(_Trunk(children[: pools[0]]))
    else:
        head_start = len(children)
        while head_start > 0 and _is_head_part(children[head_start - 1][1]):
            head_start -= 1
        if 0 < head_start < len(children):
            body = children[:head_start]
            found.append(_Trunk(body))
            # DenseNet applies a ReLU between its features and the pooling, outside any module.
            found.append(_Trunk(body, relu=True))
    return [
        (f"backbone.{trunk.names[-1]}" + (" (ReLU)" if trunk.relu else ""), trunk)
        for trunk in found
        if trunk.names
    ]


def _probe(channels: int, image_size: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(_PROBE_SEED)
    return torch.randn(2, channels, image_size, image_size, generator=generator)


def _find_trunk(
    model: VisionModel, channels: int, image_size: int
) -> tuple[nn.Module | None, CamSupport]:
    backbone = model.backbone
    candidates = _candidates(backbone)
    if not candidates:
        return None, CamSupport(
            False, reason="its backbone has no feature map visionops can find before the pooling"
        )
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            probe = _probe(channels, image_size)
            pooled = torch.flatten(backbone(probe), 1)
            shapes: list[str] = []
            for layer, trunk in candidates:
                features = trunk(probe)
                if features.ndim != 4:
                    shapes.append(f"{layer} gives {features.ndim}-d tokens, not a 2-d map")
                    continue
                mean = features.mean(dim=(2, 3))
                scale = float(pooled.abs().max()) or 1.0
                if mean.shape == pooled.shape and float((mean - pooled).abs().max()) <= (
                    _RELATIVE_TOLERANCE * scale
                ):
                    size = (int(features.shape[2]), int(features.shape[3]))
                    if size == (1, 1):
                        return None, CamSupport(
                            False,
                            layer=layer,
                            feature_size=size,
                            reason=f"{layer}'s map is 1x1 at {image_size} px: no place to"
                            " point at (train at a larger data.image_size)",
                        )
                    return trunk, CamSupport(True, layer=layer, feature_size=size)
                shapes.append(f"the pooled features are not the mean of {layer}'s map")
    finally:
        model.train(was_training)
    return None, CamSupport(
        False,
        reason=(
            "its backbone does not end in global average pooling followed by the linear head ("
            + "; ".join(shapes)
            + ")"
        ),
    )


def class_activation_map(
    features: torch.Tensor, weight: torch.Tensor, classes: torch.Tensor, size: tuple[int, int]
) -> torch.Tensor:
    """The map of one class per image, upsampled to ``size`` and stretched to 0..1.

    Args:
        features: ``(B, D, h, w)`` feature map.
        weight: ``(K, D)`` linear head weights.
        classes: ``(B,)`` the class each image's map explains.
        size: ``(H, W)`` of the image.

    Returns:
        ``(B, H, W)`` float32: 0 where the class gets the least evidence, 1 the most; a map
        that varies by less than 1% of its magnitude stays near 0 (nothing stands out).
    """
    chosen = weight[classes]  # (B, D)
    maps = (chosen[:, :, None, None] * features).sum(dim=1, keepdim=True)
    upsampled = functional.interpolate(maps, size=size, mode="bilinear", align_corners=False)
    flat = upsampled.flatten(1)
    low = flat.min(dim=1, keepdim=True).values
    high = flat.max(dim=1, keepdim=True).values
    # A spread under 1% of the map's magnitude is not stretched to the full range: min-max
    # would blow float32 rounding up into a pattern (and past export's parity bound).
    magnitude = torch.maximum(low.abs(), high.abs())
    spread = torch.maximum(high - low, _FLAT * magnitude)
    stretched = (flat - low) / torch.where(spread > 0, spread, torch.ones_like(spread))
    return stretched.view(upsampled.shape[0], size[0], size[1])


class ActivationMapModel(nn.Module):
    """A :class:`VisionModel` run through its feature map: outputs, embedding and class maps.

    ``forward`` returns what the wrapped model returns (raw outputs, embedding), computed from
    the feature map's mean; :meth:`explain` adds the map of each image's top class.

    Args:
        model: The trained model.
        trunk: Its backbone up to the feature map (:func:`activation_map_model` finds it).
        image_size: Side of the input (and of the maps).
        support: What was found (layer, feature size).
    """

    def __init__(
        self, model: VisionModel, trunk: nn.Module, image_size: int, support: CamSupport
    ) -> None:
        super().__init__()
        self.model = model
        self.trunk = trunk
        self.image_size = image_size
        self.support = support

    def explain(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(raw outputs (B, K), embedding (B, D), map of the top class (B, H, W))``."""
        features = self.trunk(images)
        embedding = features.mean(dim=(2, 3))
        head = self.model.head
        raw = head(self.model.dropout(embedding))
        classes = raw.argmax(dim=1)
        size = (int(images.shape[2]), int(images.shape[3]))
        maps = class_activation_map(features.float(), head.weight.float(), classes, size)
        return raw, embedding, maps

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(raw outputs, embedding)``, as :class:`VisionModel` gives them."""
        raw, embedding, _ = self.explain(images)
        return raw, embedding


def activation_map_model(
    model: nn.Module, *, channels: int, image_size: int
) -> tuple[ActivationMapModel | None, CamSupport]:
    """The model with its class activation map, or None and the reason it has none.

    Args:
        model: A trained model (only a :class:`VisionModel` with a linear head qualifies).
        channels: Its input channels.
        image_size: Its input side.

    Returns:
        ``(model with maps, support)``; the model is None when ``support.available`` is False.
    """
    if not isinstance(model, VisionModel) or not isinstance(model.head, nn.Linear):
        return None, CamSupport(False, reason="the model has no linear head on pooled features")
    trunk, support = _find_trunk(model, channels, image_size)
    if trunk is None:
        return None, support
    return ActivationMapModel(model, trunk, image_size, support).eval(), support
