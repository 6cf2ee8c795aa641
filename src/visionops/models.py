"""Backbones from torchvision's model registry, with a new task head.

Any fully convolutional torchvision classifier works: the last ``nn.Linear`` of the network
(its ImageNet classifier) is replaced by an identity, so the backbone returns the pooled
feature vector (the *embedding* that drift detection uses) and a fresh head maps it to the
task's outputs.

Examples:
    >>> model = build_model("resnet18", num_outputs=8)
    >>> outputs, embedding = model(torch.zeros(2, 3, 64, 64))
    >>> outputs.shape, embedding.shape
    (torch.Size([2, 8]), torch.Size([2, 512]))
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torchvision
from pydantic import BaseModel, Field
from torch import nn

from visionops.errors import ConfigError

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "BackboneFacts",
    "VisionModel",
    "build_model",
    "check_model_name",
    "describe_backbones",
    "list_backbones",
    "pretrained_normalization",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Families whose global pooling makes them work at any input size (64 px demos included).
_SUPPORTED_PREFIXES = (
    "resnet",
    "resnext",
    "wide_resnet",
    "mobilenet_v2",
    "mobilenet_v3",
    "efficientnet",
    "convnext",
    "regnet",
    "densenet",
    "shufflenet",
    "mnasnet",
)


def list_backbones() -> list[str]:
    """Names accepted by ``model.name``: torchvision classifiers that work at any input size."""
    names = torchvision.models.list_models(module=torchvision.models)
    return sorted(name for name in names if name.startswith(_SUPPORTED_PREFIXES))


@dataclass(frozen=True)
class BackboneFacts:
    """One backbone with facts from torchvision's weights metadata.

    Attributes:
        name: The ``model.name``.
        params_m: Parameters in millions, with the ImageNet head.
        gflops: GFLOPs at 224 px.
        imagenet_top1: ImageNet-1K top-1 accuracy (%) of the default weights.
        weights: The default weights' name (what ``--pretrained`` downloads).
    """

    name: str
    params_m: float | None = None
    gflops: float | None = None
    imagenet_top1: float | None = None
    weights: str | None = None


class _WeightsMeta(BaseModel):
    """The part of torchvision's ``Weights.meta`` that :func:`describe_backbones` shows."""

    num_params: int | None = None
    ops: float | None = Field(None, alias="_ops")
    metrics: dict[str, dict[str, float]] = Field(default_factory=dict, alias="_metrics")


def describe_backbones() -> list[BackboneFacts]:
    """Every backbone with facts from torchvision's weights metadata (nothing is built)."""
    described: list[BackboneFacts] = []
    for name in list_backbones():
        try:
            weights = torchvision.models.get_model_weights(name).DEFAULT
        except (ValueError, KeyError, AttributeError):
            described.append(BackboneFacts(name))
            continue
        facts = _WeightsMeta.model_validate(weights.meta)
        described.append(
            BackboneFacts(
                name,
                params_m=round(facts.num_params / 1e6, 2) if facts.num_params else None,
                gflops=facts.ops,
                imagenet_top1=facts.metrics.get("ImageNet-1K", {}).get("acc@1"),
                weights=f"{type(weights).__name__}.{weights.name}",
            )
        )
    return described


def check_model_name(name: str) -> None:
    """Raise a :class:`ConfigError` with close suggestions if ``name`` is not a backbone."""
    known = list_backbones()
    if name not in known:
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
        hint = f"did you mean {', '.join(repr(c) for c in close)}? " if close else ""
        raise ConfigError(
            f"unknown model '{name}' — {hint}`visionops models` lists the {len(known)} choices"
        )


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


def _replace_module(root: nn.Module, dotted: str, new: nn.Module) -> None:
    parent_name, _, child = dotted.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, new)


def _adapt_first_conv(network: nn.Module, channels: int) -> None:
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
    _replace_module(network, name, new)


def _load_network(name: str, pretrained: bool) -> nn.Module:
    weights: Any = None
    if pretrained:
        weights = torchvision.models.get_model_weights(name).DEFAULT
    try:
        network: nn.Module = torchvision.models.get_model(name, weights=weights)
    except (OSError, RuntimeError) as exc:
        if not pretrained:
            raise
        torch_home = Path(os.environ.get("TORCH_HOME", Path.home() / ".cache" / "torch"))
        filename = str(weights.url).rsplit("/", 1)[-1]
        raise ConfigError(
            f"cannot get pretrained weights for {name} ({type(exc).__name__}: no network?)"
            f" — pass --no-pretrained, or put {filename} in {torch_home / 'hub' / 'checkpoints'}"
        ) from None
    return network


def pretrained_normalization(name: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Mean and std the pretrained weights of ``name`` expect (from torchvision's weights API)."""
    weights = torchvision.models.get_model_weights(name).DEFAULT
    transforms = weights.transforms()
    mean = tuple(float(v) for v in getattr(transforms, "mean", IMAGENET_MEAN))
    std = tuple(float(v) for v in getattr(transforms, "std", IMAGENET_STD))
    return mean, std


def build_model(
    name: str,
    *,
    num_outputs: int,
    channels: int = 3,
    pretrained: bool = False,
    dropout: float = 0.0,
) -> VisionModel:
    """Build a torchvision backbone with a new head.

    Args:
        name: A name from :func:`list_backbones`.
        num_outputs: Size of the head's output.
        channels: Input channels (1 for grayscale; the first convolution is adapted).
        pretrained: Load torchvision's default weights (downloaded to ``TORCH_HOME`` once).
        dropout: Dropout before the head.

    Returns:
        The model; its ``forward`` returns ``(outputs, embedding)``.

    Raises:
        ConfigError: Unknown name, or pretrained weights that cannot be downloaded.
    """
    check_model_name(name)
    network = _load_network(name, pretrained)
    linear_name, linear = [(n, m) for n, m in network.named_modules() if isinstance(m, nn.Linear)][
        -1
    ]
    _replace_module(network, linear_name, nn.Identity())
    _adapt_first_conv(network, channels)
    return VisionModel(network, linear.in_features, num_outputs, dropout)
