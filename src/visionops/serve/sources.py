"""What ``visionops serve`` takes as models: ``[NAME=]SOURCE``, and the names they get.

A SOURCE is a bundle folder, a run (folder or name), an fsspec URL of a bundle folder
(``s3://``, ``gs://``, ``https://``) or a W&B artifact (``wandb:entity/project/name:alias``).
Light on purpose: the command line reads its arguments with it before anything heavy loads.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from visionops.errors import ConfigError
from visionops.storage import is_url, public_source

__all__ = [
    "NAME_PATTERN",
    "check_name",
    "model_name",
    "public_source",
    "split_model_args",
    "split_source",
]

NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
"""A model's name: it appears in URL paths and metric labels as it is."""

_WANDB = "wandb:"


def _is_remote(text: str) -> bool:
    return text.startswith(_WANDB) or is_url(text)


def check_name(name: str, source: str) -> str:
    """``name`` if it can name a model.

    Raises:
        ConfigError: Not letters, digits, ``-`` and ``_`` (64 at most, starting with a
            letter or digit); the message says how to name it.
    """
    if not NAME_PATTERN.fullmatch(name):
        raise ConfigError(
            f"'{name}' cannot name the model {source}: use letters, digits, '-' and '_'"
            f" (at most 64) — e.g. visionops serve my-model={source}"
        )
    return name


def split_source(text: str) -> tuple[str | None, str]:
    """``NAME=SOURCE`` → ``(NAME, SOURCE)``; a plain SOURCE → ``(None, SOURCE)``.

    A URL whose query holds ``=`` and a folder whose name holds ``=`` stay whole.

    Raises:
        ConfigError: A NAME that cannot name a model (see :func:`check_name`).
    """
    if _is_remote(text) or Path(text).exists():
        return None, text
    name, sep, source = text.partition("=")
    if sep and source and "/" not in name:
        return check_name(name, source), source
    return None, text


def split_model_args(
    args: Sequence[str] | None, setting_keys: Sequence[str]
) -> tuple[list[str], list[str]]:
    """Split ``serve``'s arguments into models (in order) and ``key=value`` overrides.

    ``KEY=VALUE`` is an override when KEY is a setting (dotted, or a top-level one such as
    ``device``), else ``NAME=SOURCE``, a named model.

    Args:
        args: The command's variadic arguments.
        setting_keys: The top-level setting names (``device``, ``runs_root``, ``serve``...).

    Returns:
        ``(models, overrides)``.
    """
    models: list[str] = []
    overrides: list[str] = []
    for item in args or []:
        key, sep, _ = item.partition("=")
        if not sep or _is_remote(item) or Path(item).exists():
            models.append(item)
        elif "." in key or key in setting_keys:
            overrides.append(item)
        else:
            models.append(item)
    return models, overrides


def model_name(source: str, bundle_dir: Path | None = None) -> str:
    """A model's name when none is given, from where it came.

    A local bundle is named after its run's folder (``runs/a/bundle`` → ``a``), a URL after
    its last folder but ``bundle`` (``s3://m/runs/a/bundle`` → ``a``), a W&B artifact after
    its name less ``-bundle`` (``wandb:e/p/a-bundle:v3`` → ``a``). Characters a URL path or a
    metric label would not take become ``-``.
    """
    if source.startswith(_WANDB):
        tail = source.rsplit("/", 1)[-1].split(":", 1)[0]
        named = tail.removesuffix("-bundle")
    elif is_url(source):
        parts = [part for part in source.split("://", 1)[1].split("?")[0].split("/") if part]
        if len(parts) > 1 and parts[-1] == "bundle":
            parts.pop()
        named = parts[-1] if parts else "model"
    else:
        folder = (bundle_dir or Path(source)).resolve()
        parent = folder.parent.name
        named = parent if folder.name == "bundle" and parent else folder.name
    cleaned = re.sub(r"[^A-Za-z0-9_-]+", "-", named).strip("-_")[:64]
    return cleaned or "model"
