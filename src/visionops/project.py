"""``visionops init``: a project folder with ``visionops.yaml`` and DVC pipeline stages."""

from __future__ import annotations

from pathlib import Path

import yaml

from visionops._io import atomic_write_text
from visionops.config import PROJECT_FILE, load_recipe, load_settings
from visionops.errors import ConfigError

__all__ = ["init_project"]


def _dvc_pipeline(source: str, name: str) -> str:
    raw = f"data/raw/{name}"
    prepared = f"data/prepared/{name}"
    stages = {
        "stages": {
            "fetch": {
                "cmd": f"visionops data fetch {source}",
                "outs": [raw],
                "always_changed": False,
            },
            "preprocess": {
                "cmd": f"visionops data preprocess {raw} --force",
                "deps": [raw, PROJECT_FILE],
                "outs": [prepared],
            },
            "train": {
                "cmd": f"visionops train {prepared} --name dvc --exist-ok",
                "deps": [prepared, PROJECT_FILE],
                "outs": ["runs/dvc/checkpoints"],
                "metrics": [{"runs/dvc/metrics.json": {"cache": False}}],
            },
            "export": {
                "cmd": "visionops export runs/dvc --force",
                "deps": ["runs/dvc/checkpoints"],
                "outs": ["runs/dvc/bundle"],
            },
        }
    }
    return (
        "# DVC pipeline written by `visionops init`: `dvc repro` re-runs only what changed.\n"
        "# Add a Google Cloud Storage remote with: dvc remote add -d store gs://BUCKET/visionops\n"
        + yaml.safe_dump(stages, sort_keys=False)
    )


def init_project(folder: Path, recipe: str, *, force: bool = False) -> list[Path]:
    """Write ``visionops.yaml`` (from a recipe) and ``dvc.yaml`` into ``folder``.

    Args:
        folder: The project folder (created if missing).
        recipe: A shipped recipe name.
        force: Overwrite existing files.

    Returns:
        The files written.

    Raises:
        ConfigError: Unknown recipe, or files exist and ``force`` is False.
    """
    layer = load_recipe(recipe)
    settings = load_settings(recipe=recipe, cwd=folder / ".no-project-file")
    targets = [folder / PROJECT_FILE, folder / "dvc.yaml"]
    existing = [path for path in targets if path.exists()]
    if existing and not force:
        raise ConfigError(f"{existing[0]} already exists — pass --force to overwrite it")
    header = (
        f"# visionops settings, started from recipe '{recipe}'.\n"
        "# Layers: defaults < recipe < this file < --config FILE < flags and key=value.\n"
        "# `visionops config show` prints every key with its resolved value.\n"
    )
    atomic_write_text(targets[0], header + yaml.safe_dump(layer, sort_keys=False))
    name = settings.data.source.split(":", 1)[-1].rstrip("/").split("/")[-1]
    atomic_write_text(targets[1], _dvc_pipeline(settings.data.source, name))
    return targets
