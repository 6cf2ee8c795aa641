"""The names ``model.name`` accepts, from both families, and what is known of each."""

from __future__ import annotations

import difflib
import fnmatch
from dataclasses import dataclass, field, replace

import visionops.models.timm_family as timm_family
import visionops.models.torchvision_family as torchvision_family
from visionops.errors import ConfigError

__all__ = [
    "STARTERS",
    "BackboneFacts",
    "check_model_name",
    "describe_backbones",
    "describe_starters",
    "list_backbones",
    "pretrained_normalization",
]

STARTERS = {
    "resnet18": "the default; a baseline",
    "resnet50": "the classic mid-size CNN",
    "mobilenet_v3_small": "smallest; quick tests",
    "mobilenet_v3_large": "fast on a CPU or phone",
    "efficientnet_b0": "accurate for its size",
    "efficientnet_v2_s": "accurate, quick to train",
    "convnext_tiny": "modern CNN, transfers well",
    "regnet_y_800mf": "good accuracy per FLOP",
    "timm:mobilenetv4_conv_small": "built for CPUs and phones",
    "timm:fastvit_t8": "fast CNN-transformer hybrid",
    "timm:convnextv2_nano": "ConvNeXt V2, self-supervised",
    "timm:resnet50": "ResNet-50, timm's new recipe",
    "timm:vit_small_patch16_224": "a small Vision Transformer",
    "timm:eva02_tiny_patch14_224": "tiny ViT with strong weights",
    "timm:swin_tiny_patch4_window7_224": "windowed transformer",
    "timm:vit_small_patch14_dinov2": "DINOv2: few labels, anomaly",
}
"""The backbones ``visionops models`` shows by default, each with why one would start there."""

_PARAMS_UP_TO = 60
"""Counting a timm model's parameters builds it (on the meta device): only for short lists."""


def list_backbones(family: str = "all") -> list[str]:
    """Names accepted by ``model.name``: torchvision classifiers, then ``timm:<name>``.

    Args:
        family: ``all``, ``torchvision`` or ``timm``.
    """
    listed: list[str] = []
    if family in ("all", "torchvision"):
        listed += torchvision_family.names()
    if family in ("all", "timm"):
        listed += timm_family.names()
    return listed


@dataclass(frozen=True)
class BackboneFacts:
    """One backbone and what its family's metadata says of it.

    Attributes:
        name: The ``model.name``.
        family: ``torchvision`` or ``timm``.
        params_m: Parameters in millions, with the ImageNet head.
        gflops: GFLOPs at 224 px (torchvision only).
        imagenet_top1: ImageNet-1K top-1 accuracy (%) of the default weights (torchvision).
        weights: The default weights' name (what ``--pretrained`` loads; torchvision).
        pretrained_tags: timm's pretrained tags (``model.name=timm:<name>.<tag>``).
        why: Why one would start from it (the starters of :data:`STARTERS`), else None.
    """

    name: str
    family: str = "torchvision"
    params_m: float | None = None
    gflops: float | None = None
    imagenet_top1: float | None = None
    weights: str | None = None
    pretrained_tags: list[str] = field(default_factory=list)
    why: str | None = None


def describe_backbones(pattern: str = "*", family: str = "all") -> list[BackboneFacts]:
    """Every backbone matching ``pattern`` with what is known of it (nothing is downloaded).

    timm parameter counts need the model built on the meta device, so they are given only
    when at most 60 timm models match.

    Args:
        pattern: Shell-style pattern on the name (``*vit*``, ``timm:convnext*``).
        family: ``all``, ``torchvision`` or ``timm``.
    """
    matching = [n for n in list_backbones(family) if fnmatch.fnmatchcase(n, pattern)]
    tags = timm_family.pretrained_tags()
    timm_count = sum(1 for n in matching if timm_family.is_timm(n))
    described: list[BackboneFacts] = []
    for name in matching:
        if not timm_family.is_timm(name):
            facts = torchvision_family.describe(name)
            described.append(
                BackboneFacts(
                    name,
                    params_m=facts.params_m,
                    gflops=facts.gflops,
                    imagenet_top1=facts.imagenet_top1,
                    weights=facts.weights,
                )
            )
            continue
        arch = timm_family.arch_of(name)
        described.append(
            BackboneFacts(
                name,
                family="timm",
                params_m=timm_family.param_count(name) if timm_count <= _PARAMS_UP_TO else None,
                pretrained_tags=list(tags.get(arch, ())),
            )
        )
    return described


def describe_starters(family: str = "all") -> list[BackboneFacts]:
    """The backbones worth starting from (:data:`STARTERS`), torchvision's first.

    Args:
        family: ``all``, ``torchvision`` or ``timm``.
    """
    known = set(list_backbones(family))
    return [
        replace(describe_backbones(name, family)[0], why=why)
        for name, why in STARTERS.items()
        if name in known
    ]


def check_model_name(name: str) -> None:
    """Raise a :class:`ConfigError` with close suggestions if ``name`` is not a backbone."""
    if timm_family.is_timm(name):
        problem = timm_family.check(name)
        if problem is None:
            return
        known = [n.removeprefix("timm:") for n in timm_family.names()]
        matches = difflib.get_close_matches(timm_family.arch_of(name), known, n=3, cutoff=0.6)
        close = [f"timm:{c}" for c in matches]
    else:
        known_tv = torchvision_family.names()
        if name in known_tv:
            return
        problem = f"unknown model '{name}'"
        timm_names = [n.removeprefix("timm:") for n in timm_family.names()]
        # A timm name given without its prefix is the likeliest meaning.
        close = [f"timm:{name}"] if name in timm_names else []
        close += difflib.get_close_matches(name, known_tv, n=3, cutoff=0.5)
        timm_close = difflib.get_close_matches(name, timm_names, n=3, cutoff=0.75)
        close += [f"timm:{c}" for c in timm_close if f"timm:{c}" not in close]
        close = close[:3]
    hint = f"did you mean {', '.join(repr(c) for c in close)}? " if close else ""
    raise ConfigError(f"{problem} — {hint}`visionops models` lists the choices")


def pretrained_normalization(name: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Mean and std the pretrained weights of ``name`` expect (its family's pretrained config)."""
    if timm_family.is_timm(name):
        return timm_family.normalization(name)
    return torchvision_family.normalization(name)
