"""The task head on a backbone, and the surgery that fits a backbone to visionops' inputs."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["VisionModel", "adapt_first_conv", "replace_module"]


class VisionModel(nn.Module):
    """A backbone producing an embedding, and a head producing the task's raw outputs.

    Args:
        backbone: Network mapping normalised images ``(B, C, H, W)`` to ``(B, D)`` features.
        feature_dim: ``D``.
        num_outputs: Classes, labels or regression targets.
        dropout: Dropout applied to the embedding before the head.
    """

    def __init__(
        self, backbone: nn.Module, feature_dim: int, num_outputs: int, dropout: float = 0.0
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.feature_dim = feature_dim
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.head = nn.Linear(feature_dim, num_outputs)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(raw outputs (B, K), embedding (B, D))`` for normalised float images."""
        embedding = torch.flatten(self.backbone(images), 1)
        return self.head(self.dropout(embedding)), embedding


def replace_module(root: nn.Module, dotted: str, new: nn.Module) -> None:
    """Put ``new`` where the submodule ``dotted`` (e.g. ``classifier.1``) of ``root`` is."""
    parent_name, _, child = dotted.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, new)


def adapt_first_conv(network: nn.Module, channels: int) -> None:
    """Make the first convolution accept ``channels`` inputs (pretrained RGB weights summed)."""
    name, conv = next((n, m) for n, m in network.named_modules() if isinstance(m, nn.Conv2d))
    if conv.in_channels == channels:
        return
    new = nn.Conv2d(
        channels,
        conv.out_channels,
        kernel_size=conv.kernel_size,  # type: ignore[arg-type]
        stride=conv.stride,  # type: ignore[arg-type]
        padding=conv.padding,  # type: ignore[arg-type]
        dilation=conv.dilation,  # type: ignore[arg-type]
        groups=conv.groups,
        bias=conv.bias is not None,
    )
    with torch.no_grad():
        # Summing over RGB keeps the response to a grey image equal to the RGB network's.
        new.weight.copy_(conv.weight.sum(dim=1, keepdim=True).expand_as(new.weight))
        if conv.bias is not None and new.bias is not None:
            new.bias.copy_(conv.bias)
    replace_module(network, name, new)
