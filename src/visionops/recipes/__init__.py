"""Shipped recipes: one YAML settings layer per seed system, plus the embedded demos.

:func:`describe_recipe` explains a recipe key by key, from the settings' own field
descriptions, so ``visionops recipes show NAME`` cannot drift from what the settings do.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

__all__ = ["RecipeSetting", "ShownRecipe", "describe_recipe"]

# Fields declared without a description in visionops.config; the rest explain themselves.
_EXTRA_HELP = {
    "train.epochs": "Passes over the training split.",
    "train.batch_size": "Images per optimiser step, per process.",
    "train.label_smoothing": "Share of each target spread over the other classes.",
    "train.weight_decay": "AdamW weight decay.",
    "train.warmup_epochs": "Epochs of linear learning-rate warm-up.",
    "train.seed": "Seed of initialisation, shuffling and augmentation.",
    "train.channels_last": "NHWC memory layout (faster on most GPUs).",
    "train.augment.enabled": "Augment training images at all.",
}


@dataclass(frozen=True)
class RecipeSetting:
    """One setting a recipe changes.

    Attributes:
        key: Dotted setting name (``train.lr``).
        value: The recipe's value.
        default: The built-in default it replaces.
        help: What the setting does.
    """

    key: str
    value: Any
    default: Any
    help: str


@dataclass(frozen=True)
class ShownRecipe:
    """A recipe explained: its one-line summary and each setting it changes."""

    name: str
    summary: str
    settings: list[RecipeSetting]


def _walk(
    layer: Mapping[str, Any], model: type[BaseModel], defaults: Any, prefix: str = ""
) -> list[RecipeSetting]:
    found: list[RecipeSetting] = []
    for key, value in layer.items():
        field = model.model_fields.get(key)
        if field is None:
            continue
        dotted = f"{prefix}{key}"
        annotation = field.annotation
        default = getattr(defaults, key)
        if (
            isinstance(value, Mapping)
            and isinstance(annotation, type)
            and issubclass(annotation, BaseModel)
        ):
            found += _walk(value, annotation, default, dotted + ".")
            continue
        if isinstance(default, BaseModel):
            default = default.model_dump(mode="json")
        elif hasattr(default, "as_posix"):
            default = str(default)
        help_text = field.description or _EXTRA_HELP.get(dotted, "")
        found.append(RecipeSetting(dotted, value, default, help_text))
    return found


def describe_recipe(name: str) -> ShownRecipe:
    """Explain a shipped recipe: each setting it changes, with the default and what it does.

    Args:
        name: A recipe name (``visionops recipes list``).

    Raises:
        ConfigError: No recipe of that name.
    """
    from visionops.config import Settings, available_recipes, load_recipe

    layer = load_recipe(name)
    layer.pop("recipe", None)
    settings = _walk(layer, Settings, Settings())
    return ShownRecipe(name, available_recipes().get(name, ""), settings)
