"""Weights from a file: read a state dict, drop the old head, check every shape, load.

``model.weights=PATH`` and the offline caches (torchvision's ``TORCH_HOME``, the Hugging Face
cache for timm) all end here, so a file that does not fit the network gives the same one-line
error whichever way it came.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import torch
from torch import nn

from visionops.errors import ConfigError

__all__ = ["WEIGHT_SUFFIXES", "load_backbone_state", "read_state_dict"]

WEIGHT_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors")
"""File types ``model.weights`` reads (``.bin``: the Hugging Face cache's torch files)."""

_NESTED_KEYS = ("state_dict", "model", "state_dict_ema", "model_ema")
"""Where training scripts commonly nest the state dict inside a checkpoint."""

StateFilter = Callable[[dict[str, torch.Tensor], nn.Module], dict[str, torch.Tensor]]


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Read a state dict from a ``.pth``, ``.pt``, ``.bin`` or ``.safetensors`` file.

    A checkpoint that nests it (``{"state_dict": ...}`` or ``{"model": ...}``) is unwrapped,
    and the ``module.`` prefix of a DistributedDataParallel save is removed. Only tensors are
    read (``weights_only``): a pickle cannot run code here.

    Raises:
        ConfigError: Missing, unreadable or not a state dict.
    """
    if path.suffix not in WEIGHT_SUFFIXES:
        raise ConfigError(
            f"model.weights={path}: not a weights file — give a state dict saved as"
            f" {', '.join(WEIGHT_SUFFIXES)}"
        )
    if not path.is_file():
        raise ConfigError(
            f"model.weights={path}: no such file — give the path of a saved state dict"
            " (torch.save(model.state_dict(), PATH))"
        )
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            loaded: object = load_file(str(path), device="cpu")
        else:
            loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch and safetensors raise many types
        reason = (str(exc).splitlines() or [type(exc).__name__])[0][:120]
        raise ConfigError(
            f"model.weights={path}: cannot read it ({reason}) — save the state dict again"
            " with torch.save(model.state_dict(), PATH) or safetensors"
        ) from None
    state = _unwrap(loaded)
    if state is None:
        raise ConfigError(
            f"model.weights={path}: holds no state dict of tensors — save"
            " model.state_dict(), not the model object"
        )
    return state


def _unwrap(loaded: object) -> dict[str, torch.Tensor] | None:
    if not isinstance(loaded, Mapping):
        return None
    for key in _NESTED_KEYS:
        nested = loaded.get(key)
        if isinstance(nested, Mapping) and nested:
            loaded = nested
            break
    if not loaded or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        return None
    state = {str(k): v for k, v in loaded.items()}
    if all(k.startswith("module.") for k in state):
        state = {k.removeprefix("module."): v for k, v in state.items()}
    return state


def _is_under(key: str, prefixes: Sequence[str]) -> bool:
    return any(key == p or key.startswith(p + ".") for p in prefixes)


def load_backbone_state(
    network: nn.Module,
    state: dict[str, torch.Tensor],
    *,
    head: Sequence[str],
    source: str,
    name: str,
) -> None:
    """Load ``state`` into a backbone whose classifier is already removed.

    Args:
        network: The backbone (its classifier an identity, so it has no such keys).
        state: Weights, with or without the old classifier.
        head: Dotted names of the old classifier; their keys are dropped from ``state``.
        source: Where the weights came from, for the error.
        name: The ``model.name``, for the error.

    Raises:
        ConfigError: A key missing or left over, or a tensor of another shape.
    """
    kept = {k: v for k, v in state.items() if not _is_under(k, head)}
    expected = network.state_dict()
    missing = [k for k in expected if k not in kept]
    unexpected = [k for k in kept if k not in expected]
    wrong = [
        f"{k} {tuple(kept[k].shape)} vs {tuple(expected[k].shape)}"
        for k in kept
        if k in expected and kept[k].shape != expected[k].shape
    ]
    problems = [
        f"{len(items)} {what} (first: {items[0]})"
        for what, items in (
            ("missing keys", missing),
            ("unexpected keys", unexpected),
            ("tensors of another shape", wrong),
        )
        if items
    ]
    if problems:
        raise ConfigError(
            f"weights from {source} do not fit {name}: {'; '.join(problems)} — give weights"
            f" saved from {name} (the classifier may differ; nothing else may)"
        )
    network.load_state_dict(kept)
