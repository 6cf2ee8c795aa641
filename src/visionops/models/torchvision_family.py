"""torchvision's convolutional classifiers: names, facts, networks and their weights.

Pretrained weights come from ``TORCH_HOME/hub/checkpoints`` (downloaded there once on a
connected machine); the ImageNet classifier (the network's last ``nn.Linear``) is replaced by
an identity, so the network returns its pooled features.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torchvision
from pydantic import BaseModel, Field
from torch import nn

from visionops.errors import ConfigError
from visionops.models.heads import replace_module

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "TorchvisionFacts",
    "describe",
    "headless_network",
    "names",
    "normalization",
    "torch_cache",
    "weights_choice",
    "weights_file",
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


def names() -> list[str]:
    """The torchvision classifiers that work at any input size."""
    listed = torchvision.models.list_models(module=torchvision.models)
    return sorted(name for name in listed if name.startswith(_SUPPORTED_PREFIXES))


@dataclass(frozen=True)
class TorchvisionFacts:
    """What torchvision's weights metadata says of one network."""

    params_m: float | None = None
    gflops: float | None = None
    imagenet_top1: float | None = None
    weights: str | None = None


class _WeightsMeta(BaseModel):
    """The part of torchvision's ``Weights.meta`` that :func:`describe` shows."""

    num_params: int | None = None
    ops: float | None = Field(None, alias="_ops")
    metrics: dict[str, dict[str, float]] = Field(default_factory=dict, alias="_metrics")


def describe(name: str) -> TorchvisionFacts:
    """Facts of ``name`` from its default weights' metadata (nothing is built)."""
    try:
        weights = torchvision.models.get_model_weights(name).DEFAULT
    except (ValueError, KeyError, AttributeError):
        return TorchvisionFacts()
    facts = _WeightsMeta.model_validate(weights.meta)
    return TorchvisionFacts(
        params_m=round(facts.num_params / 1e6, 2) if facts.num_params else None,
        gflops=facts.ops,
        imagenet_top1=facts.metrics.get("ImageNet-1K", {}).get("acc@1"),
        weights=f"{type(weights).__name__}.{weights.name}",
    )


def torch_cache() -> Path:
    """``TORCH_HOME/hub/checkpoints``, read from the environment at call time."""
    torch_home = Path(os.environ.get("TORCH_HOME", Path.home() / ".cache" / "torch"))
    return torch_home / "hub" / "checkpoints"


def _file_name(weights: Any) -> str:
    return str(weights.url).rsplit("/", 1)[-1]


def weights_choice(name: str, choice: bool | str) -> Any:
    """The torchvision weights ``model.pretrained`` picks for ``name``.

    ``True`` takes the first official ImageNet file of the architecture already in
    ``TORCH_HOME`` (``DEFAULT`` first, then the others), else ``DEFAULT`` (downloaded once where
    the network allows); a name (``IMAGENET1K_V1``, ``DEFAULT``) takes that one.

    Raises:
        ConfigError: A weights name the architecture does not have (the message lists them).
    """
    enum = torchvision.models.get_model_weights(name)
    if isinstance(choice, str):
        try:
            return enum[choice.removeprefix(f"{enum.__name__}.")]
        except KeyError:
            known = ", ".join(member.name for member in enum)
            raise ConfigError(
                f"{name} has no weights '{choice}' — pick one of: {known}, or true for any"
                " cached ImageNet file"
            ) from None
    members = [enum.DEFAULT, *(member for member in enum if member is not enum.DEFAULT)]
    for member in members:
        if (torch_cache() / _file_name(member)).is_file():
            return member
    return enum.DEFAULT


def weights_file(weights: Any) -> Path:
    """Where torch keeps (or will keep) the file of a torchvision weights entry."""
    return torch_cache() / _file_name(weights)


def _network(name: str, pretrained: bool | str) -> nn.Module:
    weights: Any = weights_choice(name, pretrained) if pretrained else None
    try:
        network: nn.Module = torchvision.models.get_model(name, weights=weights)
    except (OSError, RuntimeError) as exc:
        if weights is None:
            raise
        if isinstance(pretrained, str):
            looked = f"{_file_name(weights)} ({weights.name}) is not"
        else:
            looked = "none of " + ", ".join(_file_name(member) for member in type(weights)) + " is"
        raise ConfigError(
            f"cannot get pretrained weights for {name} ({type(exc).__name__}: no network?):"
            f" {looked} in {torch_cache()} — put the file there (or set TORCH_HOME), pass"
            " model.pretrained=true for any cached ImageNet file, model.weights=PATH, or"
            " --no-pretrained"
        ) from None
    return network


def headless_network(name: str, pretrained: bool | str) -> tuple[nn.Module, int, list[str]]:
    """The network with its classifier replaced by an identity.

    Returns:
        ``(network, feature_dim, head)``: ``head`` names the removed classifier (its keys in
        a full state dict).

    Raises:
        ConfigError: Pretrained weights neither cached nor downloadable.
    """
    network = _network(name, pretrained)
    linear_name, linear = [(n, m) for n, m in network.named_modules() if isinstance(m, nn.Linear)][
        -1
    ]
    replace_module(network, linear_name, nn.Identity())
    return network, int(linear.in_features), [linear_name]


def normalization(name: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Mean and std the pretrained weights of ``name`` expect (torchvision's weights API)."""
    weights = torchvision.models.get_model_weights(name).DEFAULT
    transforms = weights.transforms()
    mean = tuple(float(v) for v in getattr(transforms, "mean", IMAGENET_MEAN))
    std = tuple(float(v) for v in getattr(transforms, "std", IMAGENET_STD))
    return mean, std
