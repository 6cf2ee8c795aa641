"""A bundle as a Weights & Biases model artifact: logged by ``export``, downloaded by ``serve``.

``visionops export --wandb`` calls :func:`log_bundle_artifact` after a successful export: one
short W&B run (job type ``export``) logs the whole bundle folder as an artifact of type
``model`` named ``<run>-bundle``, with the bundle's task, labels, metrics and model version as
metadata and the model version as an alias. Offline mode (``tracking.mode=offline``) stages
everything under ``$WANDB_DIR`` for a later ``wandb sync``.

``visionops serve wandb:entity/project/name:alias`` downloads such an artifact through
wandb's own client (:func:`download_bundle_artifact`; ``WANDB_API_KEY`` or ``wandb login``).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from visionops.artifacts import BundleMeta
from visionops.config import TrackingSettings
from visionops.tracking.wandb_run import LOGIN_FIX, wandb_errors

__all__ = [
    "WANDB_PREFIX",
    "ArtifactReference",
    "BundleArtifact",
    "download_bundle_artifact",
    "log_bundle_artifact",
    "parse_artifact_reference",
]

WANDB_PREFIX = "wandb:"
"""How a bundle argument names a W&B artifact: ``wandb:entity/project/name:alias``."""

_PART = r"[A-Za-z0-9][A-Za-z0-9._-]*"
_REFERENCE = re.compile(
    rf"(?P<entity>{_PART})/(?P<project>{_PART})/(?P<name>{_PART})(?::(?P<alias>{_PART}))?"
)
DOWNLOAD_FIX = (
    "set WANDB_API_KEY (or run `wandb login`) and check the network and the artifact's"
    " entity/project/name:alias"
)
"""What to do when an artifact cannot be downloaded."""


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


@dataclass(frozen=True)
class ArtifactReference:
    """A W&B artifact by its full name.

    Attributes:
        entity: The W&B entity (user or team).
        project: The project.
        name: The artifact's name (``export --wandb`` logs ``<run>-bundle``).
        alias: A version alias (``latest``, ``v3``, the model version).
    """

    entity: str
    project: str
    name: str
    alias: str

    @property
    def path(self) -> str:
        """``entity/project/name:alias``, as the W&B client takes it."""
        return f"{self.entity}/{self.project}/{self.name}:{self.alias}"

    def __str__(self) -> str:
        return f"{WANDB_PREFIX}{self.path}"


def parse_artifact_reference(source: str) -> ArtifactReference:
    """Read ``wandb:entity/project/name[:alias]`` (alias ``latest`` when left out).

    Raises:
        ArtifactError: Not that shape; the message shows it.
    """
    from visionops.errors import ArtifactError

    match = _REFERENCE.fullmatch(source.removeprefix(WANDB_PREFIX))
    if not source.startswith(WANDB_PREFIX) or match is None:
        raise ArtifactError(
            f"'{source}' is not a W&B artifact reference — write"
            " wandb:entity/project/name:alias, e.g. wandb:my-team/fruit/run-007-bundle:latest"
        )
    return ArtifactReference(
        match["entity"], match["project"], match["name"], match["alias"] or "latest"
    )


def download_bundle_artifact(reference: ArtifactReference, destination: Path) -> Path:
    """Download a ``model`` artifact's files into ``destination`` with wandb's own client.

    Args:
        reference: The artifact.
        destination: An empty folder.

    Returns:
        ``destination``, holding the artifact's files (a bundle's files at its top).

    Raises:
        TrackingError: No login, no network, or no such artifact: one line naming
            ``WANDB_API_KEY``.
    """
    failed = f"cannot download {reference} from Weights & Biases"
    with wandb_errors(failed, DOWNLOAD_FIX):
        import wandb

        api = wandb.Api(timeout=60)  # no key: a UsageError at once, before any request
        artifact = api.artifact(reference.path, type="model")
        artifact.download(root=str(destination))
    return destination
