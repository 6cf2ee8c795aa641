"""Log an exported bundle to Weights & Biases as a versioned model artifact.

``visionops export --wandb`` calls :func:`log_bundle_artifact` after a successful export: one
short W&B run (job type ``export``) logs the whole bundle folder as an artifact of type
``model`` named ``<run>-bundle``, with the bundle's task, labels, metrics and model version as
metadata and the model version as an alias. Offline mode (``tracking.mode=offline``) stages
everything under ``$WANDB_DIR`` for a later ``wandb sync``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from visionops.artifacts import BundleMeta
from visionops.config import TrackingSettings
from visionops.tracking.wandb_run import LOGIN_FIX, wandb_errors

__all__ = ["BundleArtifact", "log_bundle_artifact"]


@dataclass(frozen=True)
class BundleArtifact:
    """What was logged.

    Attributes:
        name: Artifact name (``<run>-bundle``).
        aliases: Its aliases (``latest`` and the model version).
        files: Logged file name → W&B digest (base64 MD5 of the content).
        wandb_run_dir: The W&B run folder (offline: what ``wandb sync`` uploads).
    """

    name: str
    aliases: list[str]
    files: dict[str, str]
    wandb_run_dir: Path


def log_bundle_artifact(bundle_dir: Path, settings: TrackingSettings) -> BundleArtifact:
    """Log ``bundle_dir`` as a W&B ``model`` artifact in one ``export`` job.

    Args:
        bundle_dir: An exported bundle (with ``visionops.json``).
        settings: ``tracking`` settings; ``disabled`` means online here (the user asked for
            W&B with ``--wandb``).

    Returns:
        The artifact's name, aliases and files.

    Raises:
        ArtifactError: ``bundle_dir`` is not a bundle.
        TrackingError: W&B cannot start or log.
    """
    meta = BundleMeta.read(bundle_dir)
    run_name = meta.run.name if meta.run is not None else bundle_dir.parent.name
    version = meta.model_version
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", f"{run_name}-bundle")
    aliases = ["latest", re.sub(r"[^A-Za-z0-9._-]+", "-", version)]
    mode = "online" if settings.mode == "disabled" else settings.mode
    import wandb

    wandb_dir = os.environ.get("WANDB_DIR") or str(bundle_dir.parent)
    with wandb_errors("could not log the bundle to Weights & Biases", LOGIN_FIX):
        run = wandb.init(
            project=settings.project,
            entity=settings.entity,
            name=f"export-{run_name}",
            job_type="export",
            mode=mode,
            dir=wandb_dir,
            settings=wandb.Settings(init_timeout=60, console="off", silent=True),
        )
        artifact = wandb.Artifact(
            name,
            type="model",
            description=f"visionops bundle of run {run_name} ({meta.task})",
            metadata=meta.model_dump(
                mode="json",
                include={
                    "task",
                    "model_version",
                    "class_names",
                    "target_names",
                    "metrics",
                    "input",
                    "training_data_fingerprint",
                    "versions",
                },
            ),
        )
        artifact.add_dir(str(bundle_dir))
        run.log_artifact(artifact, aliases=aliases)
        files = {path: entry.digest for path, entry in artifact.manifest.entries.items()}
        run_dir = Path(run.dir).parent
        run.finish()
    return BundleArtifact(name, aliases, files, run_dir)
