"""Run folders: naming, ``runs/latest``, manifests, and safe checkpoint loading.

See ``docs/artifacts.md`` for the layout. Checkpoints are always loaded with
``weights_only=True``: a checkpoint can never run code on load.
"""

from __future__ import annotations

import os
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

from visionops._io import read_json
from visionops.errors import ArtifactError

__all__ = [
    "CHECKPOINT_FORMAT",
    "RUN_KIND",
    "SCHEMA_VERSION",
    "latest_run",
    "load_checkpoint",
    "load_trained_model",
    "next_run_name",
    "read_run_manifest",
    "resolve_run",
    "update_latest",
]

SCHEMA_VERSION = 1
RUN_KIND = "visionops.run"
CHECKPOINT_FORMAT = "visionops.checkpoint"
_RUN_NAME = re.compile(r"^run-(\d+)$")


def next_run_name(runs_root: Path) -> str:
    """The next free auto-numbered name: ``run-001``, ``run-002``, ..."""
    numbers = [
        int(match.group(1))
        for entry in (runs_root.iterdir() if runs_root.is_dir() else [])
        if (match := _RUN_NAME.match(entry.name))
    ]
    return f"run-{max(numbers, default=0) + 1:03d}"


def update_latest(runs_root: Path, run_dir: Path) -> None:
    """Point ``runs_root/latest`` at ``run_dir``.

    A relative symlink; a text file holding the name where symlinks are not allowed.
    """
    link = runs_root / "latest"
    tmp = runs_root / f".latest.{os.getpid()}.tmp"
    try:
        tmp.symlink_to(run_dir.name, target_is_directory=True)
    except OSError:
        tmp.write_text(run_dir.name + "\n", encoding="utf-8")
    if link.is_dir() and not link.is_symlink():
        raise ArtifactError(f"{link} is a real folder, not visionops' pointer — rename it")
    os.replace(tmp, link)


def latest_run(runs_root: Path) -> Path | None:
    """The run ``runs_root/latest`` points to, or None."""
    link = runs_root / "latest"
    if link.is_symlink():
        target = runs_root / os.readlink(link)
        return target if target.is_dir() else None
    if link.is_file():
        target = runs_root / link.read_text(encoding="utf-8").strip()
        return target if target.is_dir() else None
    return None


def resolve_run(run: str | Path | None, runs_root: Path) -> Path:
    """Find a run folder from a path, a run name, or nothing (``runs/latest``).

    Raises:
        ArtifactError: No such run.
    """
    if run is None or str(run) == "latest":
        found = latest_run(runs_root)
        if found is None:
            raise ArtifactError(
                f"no training run in {runs_root}/ — train one with `visionops train`"
            )
        return found
    for candidate in (Path(run), runs_root / str(run)):
        if (candidate / "run.json").is_file():
            return candidate
    raise ArtifactError(
        f"{run} is not a visionops run folder (no run.json) — pass a folder under {runs_root}/"
        " or train one with `visionops train`"
    )


def read_run_manifest(run_dir: Path) -> dict[str, Any]:
    """Read and validate ``run.json``.

    Raises:
        ArtifactError: Missing, unreadable or foreign manifest.
    """
    path = run_dir / "run.json"
    try:
        manifest = read_json(path)
    except FileNotFoundError:
        raise ArtifactError(
            f"{run_dir} has no run.json — it is not a visionops run; train with `visionops train`"
        ) from None
    except ValueError:
        raise ArtifactError(f"{path} is not valid JSON — the run folder is damaged") from None
    if not isinstance(manifest, dict) or manifest.get("kind") != RUN_KIND:
        raise ArtifactError(f"{path} is not a visionops run manifest")
    if manifest.get("schema_version") != SCHEMA_VERSION:
        raise ArtifactError(
            f"{path} has schema_version {manifest.get('schema_version')}, this visionops reads"
            f" {SCHEMA_VERSION} — use the visionops version that wrote it"
        )
    return manifest


def load_checkpoint(path: Path, map_location: str = "cpu") -> dict[str, Any]:
    """Load a visionops checkpoint safely (``weights_only=True``) and check its format.

    Raises:
        ArtifactError: Missing, corrupt, foreign, or containing pickled objects.
    """
    import torch

    if not path.is_file():
        raise ArtifactError(
            f"no checkpoint at {path} — train (or resume) the run with `visionops train`"
        )
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "unsafe content"
        raise ArtifactError(
            f"{path} holds objects a safe load refuses ({first[:120]}) — it is not a visionops"
            " checkpoint; retrain or point to the right file"
        ) from None
    # Garbage bytes make the weights-only unpickler fail in many ways (IndexError, KeyError...).
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError, LookupError) as exc:
        raise ArtifactError(
            f"{path} is corrupt or truncated ({type(exc).__name__}) — use the other checkpoint"
            " (best.pt/last.pt) or retrain"
        ) from None
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise ArtifactError(
            f"{path} is not a visionops checkpoint — pass a run trained by `visionops train`"
        )
    return checkpoint


def load_trained_model(run_dir: Path, which: str = "best") -> tuple[Any, dict[str, Any]]:
    """Rebuild a run's model with its trained weights, in eval mode on the CPU.

    Args:
        run_dir: The run folder.
        which: ``best`` or ``last``.

    Returns:
        ``(VisionModel, run manifest)``.

    Raises:
        ArtifactError: Missing or corrupt checkpoint, or weights that do not fit the model.
    """
    from visionops.models import build_model

    manifest = read_run_manifest(run_dir)
    checkpoint = load_checkpoint(run_dir / "checkpoints" / f"{which}.pt")
    spec = manifest["model"]
    model = build_model(
        spec["name"],
        num_outputs=spec["num_outputs"],
        channels=spec["channels"],
        pretrained=False,
        dropout=spec.get("dropout", 0.0),
    )
    state = checkpoint.get("ema") or checkpoint["model"]
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise ArtifactError(
            f"{run_dir}/checkpoints/{which}.pt does not fit model {spec['name']}"
            f" ({str(exc).splitlines()[0][:120]}) — the checkpoint belongs to another run"
        ) from None
    model.eval()
    return model, manifest
