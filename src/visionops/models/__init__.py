"""Backbones from torchvision and timm, with a new task head.

``model.name`` is a torchvision convolutional classifier (``resnet18``) or any timm model
whose classifier can be reset (``timm:convnext_atto``, ``timm:vit_small_patch14_dinov2.lvd142m``).
The classifier is replaced by an identity, so the backbone returns its pre-logits features
(the *embedding* that drift detection uses) and a fresh head maps them to the task's outputs.
Pretrained weights come from the local caches or from ``model.weights=PATH``
(:mod:`visionops.models.weights`), never from a download the user did not allow.

Modules: ``registry`` (names, facts, did-you-mean), ``torchvision_family``, ``timm_family``
(offline weights), ``weights`` (state dict files), ``provenance`` (where the starting
weights came from), ``heads`` (:class:`VisionModel`), ``build``.

Examples:
    >>> model = build_model("resnet18", num_outputs=8)
    >>> outputs, embedding = model(torch.zeros(2, 3, 64, 64))
    >>> outputs.shape, embedding.shape
    (torch.Size([2, 8]), torch.Size([2, 512]))
"""

from __future__ import annotations

from visionops.models.build import build_backbone, build_model
from visionops.models.heads import VisionModel
from visionops.models.provenance import WeightsSource, weights_source
from visionops.models.registry import (
    BackboneFacts,
    check_model_name,
    describe_backbones,
    describe_starters,
    list_backbones,
    pretrained_normalization,
)
from visionops.models.timm_family import TIMM_PREFIX, is_timm, is_vit
from visionops.models.torchvision_family import IMAGENET_MEAN, IMAGENET_STD

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "TIMM_PREFIX",
    "BackboneFacts",
    "VisionModel",
    "WeightsSource",
    "build_backbone",
    "build_model",
    "check_model_name",
    "describe_backbones",
    "describe_starters",
    "is_timm",
    "is_vit",
    "list_backbones",
    "pretrained_normalization",
    "weights_source",
]
