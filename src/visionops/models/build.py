"""Build a backbone (random, pretrained or from a file) and put the task's head on it."""

from __future__ import annotations

from pathlib import Path

from torch import nn

import visionops.models.timm_family as timm_family
import visionops.models.torchvision_family as torchvision_family
from visionops.models.heads import VisionModel, adapt_first_conv
from visionops.models.registry import check_model_name
from visionops.models.weights import load_backbone_state, read_state_dict

__all__ = ["build_backbone", "build_model"]


def _timm_backbone(
    name: str, *, pretrained: bool | str, weights: Path | None, image_size: int | None
) -> tuple[nn.Module, int]:
    network, head = timm_family.new_network(name)
    state, source = None, ""
    if weights is not None:
        state, source = read_state_dict(weights), str(weights)
    elif pretrained:
        path, label = timm_family.pretrained_file(name)
        state, source = read_state_dict(path), f"{label} ({path})"
    if state is not None:
        converter = timm_family.state_filter(network)
        if converter is not None:
            # timm's converter maps other layouts (original DINOv2, ...) to its own and
            # resamples position embeddings saved at another size.
            state = converter(state, network)
    network.reset_classifier(0)  # type: ignore[operator]
    if state is not None:
        load_backbone_state(network, state, head=head, source=source, name=name)
    set_size = getattr(network, "set_input_size", None)
    if image_size is not None and callable(set_size) and timm_family.is_vit(network):
        set_size(img_size=image_size)
    dim = getattr(network, "head_hidden_size", None) or network.num_features
    return network, int(dim)  # type: ignore[arg-type]


def build_backbone(
    name: str,
    *,
    channels: int = 3,
    pretrained: bool | str = False,
    weights: Path | None = None,
    image_size: int | None = None,
) -> tuple[nn.Module, int]:
    """A backbone returning its pre-logits features ``(B, D)``.

    Args:
        name: A name from :func:`~visionops.models.registry.list_backbones`.
        channels: Input channels (1 for grayscale; the first convolution is adapted).
        pretrained: Load pretrained weights from the local cache: ``True`` for any official
            ImageNet file of a torchvision architecture in ``TORCH_HOME`` (``DEFAULT`` first)
            or a timm model's (tagged) weights in the Hugging Face cache; a torchvision
            weights name (``IMAGENET1K_V1``) for that file.
        weights: A state dict file instead (its old classifier dropped, every shape checked).
        image_size: Input side; a ViT's position embeddings are resampled to it.

    Returns:
        ``(network, D)``.

    Raises:
        ConfigError: Unknown name, weights that are missing or do not fit.
    """
    check_model_name(name)
    if timm_family.is_timm(name):
        network, dim = _timm_backbone(
            name, pretrained=pretrained, weights=weights, image_size=image_size
        )
    else:
        network, dim, head = torchvision_family.headless_network(
            name, pretrained=pretrained if weights is None else False
        )
        if weights is not None:
            load_backbone_state(
                network, read_state_dict(weights), head=head, source=str(weights), name=name
            )
    adapt_first_conv(network, channels)
    return network, dim


def build_model(
    name: str,
    *,
    num_outputs: int,
    channels: int = 3,
    pretrained: bool | str = False,
    dropout: float = 0.0,
    weights: Path | None = None,
    image_size: int | None = None,
) -> VisionModel:
    """Build a backbone with a new head.

    Args:
        name: A torchvision name or ``timm:<name>[.<tag>]`` (``visionops models``).
        num_outputs: Size of the head's output.
        channels: Input channels (1 for grayscale; the first convolution is adapted).
        pretrained: Start from pretrained weights in the local cache (see
            :func:`build_backbone`).
        dropout: Dropout before the head.
        weights: Start from this state dict file instead.
        image_size: Input side (a ViT's position embeddings are resampled to it).

    Returns:
        The model; its ``forward`` returns ``(outputs, embedding)``.

    Raises:
        ConfigError: Unknown name, or weights that are missing or do not fit.
    """
    network, dim = build_backbone(
        name, channels=channels, pretrained=pretrained, weights=weights, image_size=image_size
    )
    return VisionModel(network, dim, num_outputs, dropout)
