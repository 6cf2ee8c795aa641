"""The maps of chosen layers of a backbone, for the patch feature extractor.

- torchvision ResNets: the network's children up to the deepest layer (``layer1``..``layer4``);
- timm CNNs: the stages at stride 4, 8, 16 and 32 (timm's ``forward_intermediates``);
- timm ViTs: the patch tokens of chosen blocks as ``(B, D, h, w)`` maps (prefix tokens
  dropped, blocks after the deepest one pruned). ``layerN`` reads the block that ends the
  N-th quarter of the depth, so the defaults mean the same depth on every backbone.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from visionops.errors import ConfigError
from visionops.models import is_timm, is_vit

__all__ = ["ChildStages", "TimmIntermediates", "build_trunk", "vit_block_indices"]

_LAYER = re.compile(r"^layer([1-4])$")
_BLOCK = re.compile(r"^block(\d+)$")


class ChildStages(nn.ModuleDict):
    """A network's children in order, returning the maps of the ``layers`` among them."""

    def __init__(self, stages: Sequence[tuple[str, nn.Module]], layers: Sequence[str]) -> None:
        super().__init__(dict(stages))
        self.layers = tuple(layers)

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        """The requested layers' maps, shallowest first."""
        maps: list[torch.Tensor] = []
        x = images
        for stage_name, stage in self.items():
            x = stage(x)
            if stage_name in self.layers:
                maps.append(x)
        return maps


class TimmIntermediates(nn.Module):
    """A timm model returning the maps of chosen stages or blocks (``forward_intermediates``).

    A ViT's maps are its patch tokens (prefix tokens dropped) after its final norm, as
    DINO-style patch features are taken.

    Args:
        network: A timm model with ``forward_intermediates``.
        indices: Indices of its ``feature_info`` stages (a CNN) or blocks (a ViT), from 0.
        vit: Whether it is a ViT.
    """

    def __init__(self, network: nn.Module, indices: Sequence[int], *, vit: bool) -> None:
        super().__init__()
        self.indices = [int(i) for i in indices]
        self.vit = vit
        # What comes after the deepest map (blocks, the classifier) is never run: drop it.
        prune: Any = network.prune_intermediate_layers
        prune(self.indices, prune_norm=not vit, prune_head=True)
        self.network = network

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        """The chosen maps, shallowest first."""
        options = {"norm": True} if self.vit else {}
        maps: list[torch.Tensor] = self.network.forward_intermediates(  # type: ignore[operator]
            images, indices=self.indices, output_fmt="NCHW", intermediates_only=True, **options
        )
        return maps


def vit_block_indices(layers: Sequence[str], depth: int) -> list[int]:
    """Block indices of ``layers`` in a ViT of ``depth`` blocks.

    Raises:
        ConfigError: A layer name a ViT does not have.
    """
    indices: list[int] = []
    for layer in layers:
        if match := _LAYER.match(layer):
            indices.append(max(0, depth * int(match.group(1)) // 4 - 1))
        elif (match := _BLOCK.match(layer)) and int(match.group(1)) < depth:
            indices.append(int(match.group(1)))
        else:
            raise ConfigError(
                f"the ViT has no layer '{layer}' — anomaly.layers takes layer1..layer4 or"
                f" block0..block{depth - 1}"
            )
    return sorted(set(indices))


def _timm_cnn_indices(name: str, network: nn.Module, layers: Sequence[str]) -> list[int]:
    info = getattr(network, "feature_info", None)
    reductions = [int(entry["reduction"]) for entry in info] if isinstance(info, list) else []
    indices: list[int] = []
    for layer in layers:
        match = _LAYER.match(layer)
        stride = 2 ** (int(match.group(1)) + 1) if match else None
        if stride not in reductions:
            raise ConfigError(
                f"backbone '{name}' has no layer {layer} — anomaly.layers takes layer1..layer4"
                " (the stages at stride 4..32) for a timm CNN"
                + (f" with stages at strides {reductions}" if reductions else "")
            )
        # The last stage at that stride (a stem and a stage can share one).
        indices.append(len(reductions) - 1 - reductions[::-1].index(stride))
    return sorted(set(indices))


def build_trunk(name: str, network: nn.Module, layers: Sequence[str]) -> nn.Module:
    """The trunk returning the maps of ``layers`` of ``network`` (the backbone of ``name``).

    Raises:
        ConfigError: The backbone has no such layer (or none was asked).
    """
    if not layers:
        raise ConfigError("anomaly.layers is empty — give at least one, e.g. [layer2, layer3]")
    if is_timm(name):
        if not callable(getattr(network, "forward_intermediates", None)):
            raise ConfigError(
                f"backbone '{name}' cannot return intermediate maps — pick a timm CNN or ViT"
                " with forward_intermediates (resnet, convnext, efficientnet, vit, ...)"
            )
        if is_vit(network):
            depth = len(network.blocks)  # type: ignore[arg-type]
            return TimmIntermediates(network, vit_block_indices(layers, depth), vit=True)
        return TimmIntermediates(network, _timm_cnn_indices(name, network, layers), vit=False)
    children = list(network.named_children())
    names = [child for child, _ in children]
    missing = [layer for layer in layers if layer not in names]
    if missing:
        raise ConfigError(
            f"backbone '{name}' has no layer {', '.join(missing)} — anomaly detection needs a"
            " ResNet-family torchvision backbone (resnet18, wide_resnet50_2, ...) with"
            " anomaly.layers from layer1..layer4, or a timm CNN or ViT (timm:...)"
        )
    deepest = max(names.index(layer) for layer in layers)
    return ChildStages(children[: deepest + 1], layers)
