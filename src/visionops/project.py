"""``visionops init``: a project folder with ``visionops.yaml`` and a DVC pipeline.

``dvc.yaml`` has one stage per lifecycle step, each a visionops command::

    fetch → preprocess → train → eval → export

Each stage's ``params`` are the ``visionops.yaml`` keys that step reads, so ``dvc repro``
re-runs a stage only when its inputs or its own settings change (``train.epochs`` re-runs
train, eval and export; ``data.image_size`` re-runs everything from preprocess on). DVC needs
every tracked key to be present in the file, so ``visionops.yaml`` is written with the
recipe's values *and* the defaults of every tracked key. ``eval`` provides DVC ``metrics``
and ``train`` the per-epoch ``plots`` (``history.csv``). With ``remote`` the folder's DVC
remote is configured too (``gs://bucket/path`` for Google Cloud Storage needs
``pip install 'dvc[gs]'``, the ``dvc`` extra).
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from visionops._io import atomic_write_text
from visionops.config import PROJECT_FILE, Settings, load_recipe, load_settings
from visionops.data.fetch import parse_source
from visionops.errors import ConfigError

__all__ = ["PIPELINE_RUN", "STAGE_PARAMS", "InitResult", "configure_remote", "init_project"]

PIPELINE_RUN = "dvc"
"""Name of the run folder the pipeline trains into (``runs/dvc``)."""

STAGE_PARAMS: dict[str, tuple[str, ...]] = {
    "fetch": ("data.source", "data.demo", "data.max_archive_bytes"),
    "preprocess": (
        "data.task",
        "data.image_size",
        "data.channels",
        "data.resize",
        "data.val_ratio",
        "data.test_ratio",
        "data.seed",
        "data.camera",
        "data.max_image_pixels",
    ),
    "train": ("model", "train"),
    "eval": (),
    "export": ("export",),
}
"""The ``visionops.yaml`` keys (dotted; a section means all its keys) each stage reads."""

_REMOTE_NAME = "store"
_GITIGNORE = """\
# Written by `visionops init`. DVC ignores the files it caches itself (runs/dvc/.gitignore,
# data/.gitignore); these are by-products no stage tracks.
/runs/latest
/runs/*/eval/*.png
/runs/*/predictions/
/wandb/
"""


def _lookup(settings: Mapping[str, Any], dotted: str) -> Any:
    node: Any = settings
    for part in dotted.split("."):
        node = node[part]
    return node


def _assign(target: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = target
    for part in parents:
        node = node.setdefault(part, {})
    if isinstance(value, Mapping) and isinstance(node.get(leaf), Mapping):
        merged = dict(value)
        merged.update(node[leaf])
        node[leaf] = merged
    else:
        node.setdefault(leaf, value)


def _project_settings(recipe_layer: Mapping[str, Any], settings: Settings) -> dict[str, Any]:
    """The recipe's keys, plus the resolved value of every key a stage tracks."""
    resolved = settings.model_dump(mode="json")
    layer: dict[str, Any] = {"recipe": recipe_layer.get("recipe")}
    layer.update({k: v for k, v in recipe_layer.items() if k != "recipe"})
    for keys in STAGE_PARAMS.values():
        for key in keys:
            _assign(layer, key, _lookup(resolved, key))
    order = ["recipe", "device", "data", "model", "train", "export"]
    return {k: layer[k] for k in order if k in layer} | {
        k: v for k, v in layer.items() if k not in order
    }


def _params(stage: str) -> list[Any]:
    keys = STAGE_PARAMS[stage]
    return [{PROJECT_FILE: list(keys)}] if keys else []


def _pipeline(name: str) -> dict[str, Any]:
    raw = f"data/raw/{name}"
    prepared = f"data/prepared/{name}"
    run = f"runs/{PIPELINE_RUN}"
    return {
        "stages": {
            "fetch": {
                "cmd": f"visionops data fetch --name {name} --force",
                "params": _params("fetch"),
                "outs": [raw],
            },
            "preprocess": {
                "cmd": f"visionops data preprocess {raw} --force",
                "deps": [raw],
                "params": _params("preprocess"),
                "outs": [prepared],
            },
            "train": {
                "cmd": [
                    f"visionops train {prepared} --name {PIPELINE_RUN} --force",
                    f"visionops runs history {PIPELINE_RUN} --out {run}/history.csv --force",
                ],
                "deps": [prepared],
                "params": _params("train"),
                "outs": [
                    f"{run}/checkpoints",
                    f"{run}/run.json",
                    f"{run}/config.yaml",
                    f"{run}/history.jsonl",
                    f"{run}/plots",
                    f"{run}/train.log",
                ],
                "metrics": [{f"{run}/metrics.json": {"cache": False}}],
                "plots": [{f"{run}/history.csv": {"cache": False, "x": "epoch"}}],
            },
            "eval": {
                "cmd": f"visionops eval {run}",
                "deps": [f"{run}/checkpoints", f"{run}/run.json", prepared],
                "outs": [f"{run}/eval/report.html", f"{run}/eval/predictions.npz"],
                "metrics": [{f"{run}/eval/metrics.json": {"cache": False}}],
            },
            "export": {
                "cmd": f"visionops export {run} --force",
                "deps": [f"{run}/checkpoints", f"{run}/run.json", prepared],
                "params": _params("export"),
                "outs": [f"{run}/bundle"],
            },
        }
    }


def _dvc(folder: Path, *args: str) -> str:
    executable = shutil.which("dvc")
    if executable is None:
        raise ConfigError(
            "DVC is not installed — install it with `pip install 'dvc[gs]'`"
            " (with Google Cloud Storage support)"
        )
    result = subprocess.run(
        [executable, *args], cwd=folder, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).strip().splitlines()
        reason = detail[-1] if detail else f"exit code {result.returncode}"
        raise ConfigError(f"`dvc {' '.join(args)}` failed in {folder}: {reason}")
    return result.stdout


def _in_git(folder: Path) -> bool:
    inside = subprocess.run(
        ["git", "rev-parse", "--is-inside-work-tree"],
        cwd=folder,
        capture_output=True,
        text=True,
        check=False,
    )
    return inside.returncode == 0


def _dvc_ready(folder: Path, *, required: bool) -> tuple[bool, str | None]:
    """Make ``folder`` a DVC repository when it can be; else say the next step.

    Returns:
        Whether ``dvc init`` ran now, and the step the user still has to take (None if none).

    Raises:
        ConfigError: ``required`` (a remote was asked for) and DVC cannot be set up here.
    """
    if (folder / ".dvc").is_dir():
        return False, None
    if shutil.which("dvc") is None:
        step = (
            "DVC is not installed — install it with `pip install 'dvc[gs]'` (with Google Cloud"
            f" Storage support), then run `dvc init` in {folder} before `dvc repro`"
        )
    elif not _in_git(folder):
        step = (
            f"{folder.resolve()} is not a git repository — run `git init` there first"
            " (DVC keeps its pointers in git), then `dvc init`"
        )
    else:
        _dvc(folder, "init", "--quiet")
        return True, None
    if required:
        raise ConfigError(f"{step}, then `visionops init --remote` again")
    return False, step


def configure_remote(folder: Path, url: str) -> None:
    """Make ``url`` the default DVC remote of ``folder`` (initialising DVC there if needed).

    Args:
        folder: A git work tree (DVC keeps its pointers in git).
        url: ``gs://bucket/path``, ``s3://...``, or a local folder for a shared disk.

    Raises:
        ConfigError: DVC is missing, the folder is not in a git repository, or DVC refuses.
    """
    _dvc_ready(folder, required=True)
    _dvc(folder, "remote", "add", "--default", "--force", _REMOTE_NAME, url)


@dataclass(frozen=True)
class InitResult:
    """What ``visionops init`` did.

    Attributes:
        written: The files written.
        dvc_initialised: Whether ``dvc init`` ran in the folder now.
        next_step: What the user must still do before ``dvc repro`` works (None: nothing).
    """

    written: list[Path]
    dvc_initialised: bool
    next_step: str | None


def _undo(folder: Path, created_folder: bool, initialised: bool) -> None:
    if initialised:
        shutil.rmtree(folder / ".dvc", ignore_errors=True)
        (folder / ".dvcignore").unlink(missing_ok=True)
    if created_folder and not any(folder.iterdir()):
        folder.rmdir()


def init_project(
    folder: Path, recipe: str, *, force: bool = False, remote: str | None = None
) -> InitResult:
    """Write ``visionops.yaml`` (from a recipe), ``dvc.yaml`` and ``.gitignore`` into ``folder``.

    When the folder is not a DVC repository yet, ``dvc init`` runs first if DVC is installed
    and the folder is in git; otherwise the result says the next step. Nothing is written
    when a step fails (a ``dvc init`` done here is undone).

    Args:
        folder: The project folder (created if missing).
        recipe: A shipped recipe name.
        force: Overwrite existing files.
        remote: Configure this URL as the default DVC remote (see :func:`configure_remote`).

    Returns:
        The files written, whether DVC was initialised, and the step left to the user.

    Raises:
        ConfigError: Unknown recipe, files exist and ``force`` is False, or DVC cannot be
            set up although a remote was asked for.
    """
    layer = load_recipe(recipe)
    settings = load_settings(recipe=recipe, cwd=folder / ".no-project-file")
    targets = [folder / PROJECT_FILE, folder / "dvc.yaml"]
    existing = [path for path in targets if path.exists()]
    if existing and not force:
        raise ConfigError(f"{existing[0]} already exists — pass --force to overwrite it")
    created_folder = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    initialised = False
    try:
        initialised, next_step = _dvc_ready(folder, required=remote is not None)
        if remote is not None:
            _dvc(folder, "remote", "add", "--default", "--force", _REMOTE_NAME, remote)
    except BaseException:
        _undo(folder, created_folder, initialised)
        raise
    header = (
        f"# visionops settings, started from recipe '{recipe}'.\n"
        "# Layers: defaults < recipe < this file < --config FILE < flags and key=value.\n"
        "# `visionops config show` prints every key with its resolved value; the keys below\n"
        "# are the ones dvc.yaml tracks, so `dvc repro` re-runs exactly what a change affects.\n"
    )
    project = _project_settings(layer, settings)
    atomic_write_text(targets[0], header + yaml.safe_dump(project, sort_keys=False))
    name = parse_source(settings.data.source).default_name
    pipeline = (
        "# DVC pipeline written by `visionops init`: `dvc repro` re-runs only what changed.\n"
        "# Store data and models on Google Cloud Storage:"
        " visionops init --remote gs://BUCKET/PATH --force\n"
        + yaml.safe_dump(_pipeline(name), sort_keys=False)
    )
    atomic_write_text(targets[1], pipeline)
    ignore = folder / ".gitignore"
    if not ignore.exists():
        atomic_write_text(ignore, _GITIGNORE)
        targets.append(ignore)
    if remote is not None:
        targets.append(folder / ".dvc" / "config")
    return InitResult(written=targets, dvc_initialised=initialised, next_step=next_step)
