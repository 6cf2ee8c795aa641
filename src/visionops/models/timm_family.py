"""timm's model zoo as ``model.name=timm:<name>[.<pretrained tag>]``.

Pretrained weights load offline: from the Hugging Face cache (``HF_HUB_CACHE``, else
``HF_HOME/hub``, else ``~/.cache/huggingface/hub``) when timm publishes them there, else from
``TORCH_HOME/hub/checkpoints``. Only when the file is missing and ``HF_HUB_OFFLINE`` is not set
is a download tried; any failure is one line saying where the file was looked for and how to
fill the cache on a connected machine. A ViT's position embeddings are resampled to
``data.image_size`` after its weights load (timm's ``set_input_size``).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import torch
from torch import nn

from visionops.errors import ConfigError
from visionops.models.weights import StateFilter

__all__ = [
    "TIMM_PREFIX",
    "TimmWeights",
    "arch_of",
    "cached_config",
    "hf_cache_dir",
    "input_size",
    "is_timm",
    "is_vit",
    "names",
    "new_network",
    "normalization",
    "param_count",
    "pretrained_file",
    "pretrained_tags",
    "state_filter",
]

TIMM_PREFIX = "timm:"
_HF_FILES = ("model.safetensors", "pytorch_model.bin")
"""The files timm's Hugging Face repositories hold, in the order timm prefers them."""


def is_timm(name: str) -> bool:
    """Whether ``name`` is a timm model (``timm:<name>``)."""
    return name.startswith(TIMM_PREFIX)


def _model_name(name: str) -> str:
    return name.removeprefix(TIMM_PREFIX)


def arch_of(name: str) -> str:
    """``timm:vit_small_patch14_dinov2.lvd142m`` → ``vit_small_patch14_dinov2``."""
    return _model_name(name).partition(".")[0]


@cache
def names() -> tuple[str, ...]:
    """Every timm architecture, prefixed ``timm:``."""
    import timm

    return tuple(TIMM_PREFIX + arch for arch in timm.list_models())


@cache
def pretrained_tags() -> dict[str, tuple[str, ...]]:
    """Architecture → the pretrained tags timm knows for it."""
    import timm

    tags: dict[str, list[str]] = {}
    for tagged in timm.list_pretrained():
        arch, _, tag = tagged.partition(".")
        tags.setdefault(arch, []).append(tag)
    return {arch: tuple(found) for arch, found in tags.items()}


def check(name: str) -> str | None:
    """Why ``name`` is not a timm model (None when it is)."""
    arch, _, tag = _model_name(name).partition(".")
    if TIMM_PREFIX + arch not in names():
        return f"unknown timm model '{arch}'"
    if tag and tag not in pretrained_tags().get(arch, ()):
        known = ", ".join(pretrained_tags().get(arch, ())) or "none"
        return f"timm knows no pretrained tag '{tag}' for {arch} (its tags: {known})"
    return None


def _pretrained_cfg(name: str) -> Any:
    from timm.models import get_pretrained_cfg

    return get_pretrained_cfg(_model_name(name), allow_unregistered=False)


def cached_config(name: str) -> dict[str, Any]:
    """The ``pretrained_cfg`` of the ``config.json`` beside the cached weights ({} if none).

    The file a team filled the cache with describes its own weights (mean, std, input size);
    it wins over timm's built-in entry for the tag.
    """
    from huggingface_hub import try_to_load_from_cache

    where = _weights_location(name)
    if not where.repo_id:
        return {}
    found = try_to_load_from_cache(where.repo_id, "config.json", cache_dir=hf_cache_dir())
    if not isinstance(found, str):
        return {}
    try:
        config = json.loads(Path(found).read_text())
    except (OSError, ValueError):
        return {}
    pretrained = config.get("pretrained_cfg") if isinstance(config, dict) else None
    return pretrained if isinstance(pretrained, dict) else {}


def normalization(name: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Mean and std of the pretrained weights (cached ``config.json``, timm's entry, ImageNet)."""
    cfg = _pretrained_cfg(name)
    cached = cached_config(name)
    mean = cached.get("mean") or (cfg.mean if cfg else (0.485, 0.456, 0.406))
    std = cached.get("std") or (cfg.std if cfg else (0.229, 0.224, 0.225))
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)


def input_size(name: str) -> int | None:
    """The image side the pretrained weights were trained at (cached config, else timm's)."""
    cfg = _pretrained_cfg(name)
    size = cached_config(name).get("input_size") or (cfg.input_size if cfg else None)
    return int(size[-1]) if size else None


def param_count(name: str) -> float:
    """Parameters in millions, with the model's own classifier (counted on the meta device)."""
    import timm

    with torch.device("meta"):
        network = timm.create_model(_model_name(name), pretrained=False)
    return round(sum(p.numel() for p in network.parameters()) / 1e6, 2)


def new_network(name: str) -> tuple[nn.Module, list[str]]:
    """A randomly initialised timm model with its classifier, and the classifier's names.

    Raises:
        ConfigError: A model whose classifier cannot be reset.
    """
    import timm

    network = timm.create_model(_model_name(name), pretrained=False)
    if not callable(getattr(network, "reset_classifier", None)):
        raise ConfigError(
            f"{name} has no classifier to replace — pick a classifier from `visionops models`"
        )
    config: dict[str, Any] = dict(getattr(network, "pretrained_cfg", None) or {})
    classifier = config.get("classifier") or ()
    head = [classifier] if isinstance(classifier, str) else list(classifier)
    return network, head


def is_vit(network: nn.Module) -> bool:
    """Whether ``network`` is a vision transformer (patch tokens and position embeddings)."""
    return all(hasattr(network, a) for a in ("patch_embed", "blocks", "forward_intermediates"))


def state_filter(network: nn.Module) -> StateFilter | None:
    """The checkpoint converter timm has for ``network``'s family (position embeddings, layouts)."""
    import sys

    module = sys.modules.get(type(network).__module__)
    converter = getattr(module, "checkpoint_filter_fn", None)
    return converter if callable(converter) else None


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache, read from the environment at call time."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    home = os.environ.get("HF_HOME") or str(Path.home() / ".cache" / "huggingface")
    return Path(home) / "hub"


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class TimmWeights:
    """Where a timm model's pretrained weights live: a Hugging Face repository, or a URL."""

    repo_id: str | None
    filename: str | None
    url: str | None


def _weights_location(name: str) -> TimmWeights:
    cfg = _pretrained_cfg(name)
    if cfg is None:
        return TimmWeights(None, None, None)
    return TimmWeights(cfg.hf_hub_id or None, cfg.hf_hub_filename or None, cfg.url or None)


def _fill_hint(name: str) -> str:
    return (
        f'on a connected machine run `python -c "import timm;'
        f" timm.create_model('{_model_name(name)}', pretrained=True)\"` with the same HF_HOME"
        " and copy its cache here, or pass model.weights=PATH"
    )


def _from_hf_cache(name: str, where: TimmWeights) -> Path:
    from huggingface_hub import try_to_load_from_cache

    assert where.repo_id is not None
    cache_dir = hf_cache_dir()
    filenames = (where.filename,) if where.filename else _HF_FILES
    for filename in filenames:
        found = try_to_load_from_cache(where.repo_id, filename, cache_dir=cache_dir)
        if isinstance(found, str):
            return Path(found)
    looked = f"{cache_dir}/models--{where.repo_id.replace('/', '--')}"
    if _offline():
        raise ConfigError(
            f"no pretrained weights for {name} in the Hugging Face cache (looked in {looked},"
            f" HF_HUB_OFFLINE is set) — {_fill_hint(name)}"
        )
    try:
        from huggingface_hub import hf_hub_download

        path = hf_hub_download(where.repo_id, filenames[0], cache_dir=cache_dir)
    except Exception as exc:  # the hub client raises many types; one line is the contract
        reason = (str(exc).splitlines() or [type(exc).__name__])[0][:100]
        raise ConfigError(
            f"cannot get pretrained weights for {name}: not in {looked} and the download failed"
            f" ({type(exc).__name__}: {reason}) — {_fill_hint(name)}"
        ) from None
    return Path(path)


def _from_torch_cache(name: str, url: str) -> Path:
    torch_home = Path(os.environ.get("TORCH_HOME", Path.home() / ".cache" / "torch"))
    path = torch_home / "hub" / "checkpoints" / url.rsplit("/", 1)[-1]
    if not path.is_file():
        if _offline():
            raise ConfigError(
                f"no pretrained weights for {name}: {path} is missing (HF_HUB_OFFLINE is set)"
                f" — {_fill_hint(name)}"
            )
        try:
            torch.hub.download_url_to_file(url, str(path), progress=False)
        except Exception as exc:  # urllib raises many types; one line is the contract
            raise ConfigError(
                f"cannot get pretrained weights for {name}: {path} is missing and the download"
                f" failed ({type(exc).__name__}) — {_fill_hint(name)}"
            ) from None
    return path


def pretrained_file(name: str) -> tuple[Path, str]:
    """The file holding ``name``'s pretrained weights, and its name (``timm/<arch>.<tag>``).

    Raises:
        ConfigError: timm publishes no weights for it, or they are neither cached nor
            downloadable (one line naming the cache and how to fill it).
    """
    where = _weights_location(name)
    if where.repo_id:
        return _from_hf_cache(name, where), where.repo_id
    if where.url and where.url.rsplit(".", 1)[-1] in {"pth", "pt", "bin", "safetensors"}:
        return _from_torch_cache(name, where.url), where.url.rsplit("/", 1)[-1]
    raise ConfigError(
        f"timm publishes no loadable pretrained weights for {name} — pick a tag from"
        " `visionops models`, pass model.weights=PATH, or train with --no-pretrained"
    )
