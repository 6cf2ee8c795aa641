"""One ``visionops deploy k8s|cloudrun`` call: find the bundle, measure it, write manifests.

Examples:
    >>> result = write_manifests(load_settings(), None, platform="k8s", out_dir=Path("deploy"),
    ...     log_dir="s3://bucket/predictions")  # doctest: +SKIP
    >>> [path.name for path in result.files]  # doctest: +SKIP
    ['deployment.yaml', 'service.yaml', 'hpa.yaml', 'pdb.yaml']
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from visionops._io import atomic_write_text
from visionops.config import Settings
from visionops.deploy.manifests import (
    CLOUD_RUN_TERMINATION_S,
    DeploySpec,
    cloudrun_service,
    drain_seconds,
    kubernetes_manifests,
    resource_name,
)
from visionops.deploy.needs import measure_needs
from visionops.errors import ArtifactError, ConfigError
from visionops.inference.bundle import find_bundle, load_bundle
from visionops.inference.predlog import DEFAULT_DRAIN_S
from visionops.inference.remote import fetch_bundle, is_remote_bundle
from visionops.storage import is_url

__all__ = ["DEFAULT_CORES", "DeployResult", "Platform", "write_manifests"]

DEFAULT_CORES = 2
"""Cores per replica unless ``--cpu`` or ``serve.threads`` says otherwise."""

Platform = Literal["k8s", "cloudrun"]
_FILES: dict[str, str] = {
    "Deployment": "deployment.yaml",
    "Service": "service.yaml",
    "HorizontalPodAutoscaler": "hpa.yaml",
    "PodDisruptionBudget": "pdb.yaml",
}


@dataclass
class DeployResult:
    """What ``deploy`` wrote.

    Attributes:
        platform: ``k8s`` or ``cloudrun``.
        files: The manifest files written.
        spec: What they describe.
        notes: Things the user should know (no log URL, Cloud Run's 10 s stop).
    """

    platform: Platform
    files: list[Path]
    spec: DeploySpec
    notes: list[str] = field(default_factory=list)


def _dump(documents: list[dict[str, Any]]) -> str:
    return yaml.safe_dump_all(documents, sort_keys=False, default_flow_style=False)


def write_manifests(
    settings: Settings,
    target: Path | str | None,
    *,
    platform: Platform,
    out_dir: Path,
    image: str | None = None,
    log_dir: str | None = None,
    name: str | None = None,
    min_replicas: int = 1,
    max_replicas: int = 10,
    concurrency: int | None = None,
    cpu_target: int = 70,
    cpu: int | None = None,
    service_account: str | None = None,
    force: bool = False,
) -> DeployResult:
    """Write the manifests that serve a bundle's image on ``platform``.

    Args:
        settings: Resolved settings (``serve.*`` shape the replica; ``runs_root``).
        target: A bundle, a run folder or name; None for ``runs/latest``; or a bundle's URL
            or ``wandb:`` reference, which replicas download when they start (it is
            downloaded here too, once, to measure it).
        platform: ``k8s`` (Deployment, Service, HPA, PDB) or ``cloudrun`` (one Service).
        out_dir: Folder for the YAML files.
        image: The serving image (default ``visionops-serve:<model version>``).
        log_dir: The bucket URL replicas upload prediction logs to (default: the
            ``serve.log_dir`` setting; a local folder is refused: it dies with the pod).
        name: Resource name (default: from the run's name).
        min_replicas: Fewest replicas.
        max_replicas: Most replicas.
        concurrency: Requests per replica at once (default ``serve.queue_size`` / 4, at
            least ``serve.max_batch``).
        cpu_target: HPA target CPU utilisation (percent of the request).
        cpu: Cores per replica, its CPU request and limit (default: ``serve.threads`` x
            ``serve.workers`` when threads are set, else :data:`DEFAULT_CORES`).
        service_account: Identity that writes the bucket.
        force: Replace manifests that exist.

    Raises:
        ArtifactError: No bundle, a bundle that fails verification, or manifests that
            exist without ``force``.
        ConfigError: A local log folder, or replica bounds that do not fit.
    """
    if not 1 <= min_replicas <= max_replicas:
        raise ConfigError(
            f"--min-replicas {min_replicas} and --max-replicas {max_replicas}: pass 1 <= min <= max"
        )
    bundle_url = str(target) if target is not None and is_remote_bundle(str(target)) else None
    if bundle_url is not None:
        bundle = load_bundle(fetch_bundle(bundle_url).path)
    else:
        bundle = load_bundle(
            find_bundle(None if target is None else Path(target), settings.runs_root)
        )
    serve = settings.serve
    chosen_log = log_dir or serve.log_dir
    if chosen_log is not None and not is_url(chosen_log):
        raise ConfigError(
            f"--log-dir {chosen_log} is a local folder, which vanishes with the pod — pass a"
            " bucket URL such as s3://bucket/predictions or gs://bucket/predictions"
        )
    files = list(_FILES.values()) if platform == "k8s" else ["service.yaml"]
    existing = [out_dir / f for f in files if (out_dir / f).exists()]
    if existing and not force:
        raise ArtifactError(
            f"{existing[0]} exists — pass --force to replace it, or another --out-dir"
        )
    needs = measure_needs(
        bundle.path,
        cores=cpu or serve.threads * serve.workers or DEFAULT_CORES,
        threads=serve.threads,
        workers=serve.workers,
        max_batch=serve.max_batch,
        precision=serve.precision,
    )
    run_name = bundle.meta.run.name if bundle.meta.run and bundle.meta.run.name else None
    model_version = bundle.model_version
    extra: list[str] = []
    if serve.log_upload_seconds != type(serve).model_fields["log_upload_seconds"].default:
        extra.append(f"serve.log_upload_seconds={serve.log_upload_seconds:g}")
    spec = DeploySpec(
        name=resource_name(name or run_name or model_version),
        image=image or f"visionops-serve:{resource_name(model_version)}",
        model_version=model_version,
        task=bundle.task,
        log_dir=chosen_log,
        needs=needs,
        min_replicas=min_replicas,
        max_replicas=max_replicas,
        concurrency=concurrency or max(serve.max_batch, serve.queue_size // 4),
        cpu_target=cpu_target,
        drain_s=drain_seconds(serve.timeout_s, DEFAULT_DRAIN_S),
        timeout_s=serve.timeout_s,
        service_account=service_account,
        args=tuple(extra),
        bundle_url=bundle_url,
    )
    notes: list[str] = []
    if bundle_url is not None:
        notes.append(
            f"replicas download {bundle_url} when they start and check it (the image's own"
            " /bundle is not used): give them the bucket's read credentials (--service-account,"
            " or the driver's variables such as AWS_*; WANDB_API_KEY for wandb:)"
        )
    if chosen_log is None:
        notes.append(
            "no --log-dir: each replica logs into its own container and the log vanishes with"
            " it; pass --log-dir s3://... or gs://... so `visionops drift report` reads the fleet"
        )
    if platform == "k8s":
        documents = {_FILES[doc["kind"]]: doc for doc in kubernetes_manifests(spec)}
    else:
        documents = {"service.yaml": cloudrun_service(spec)}
        if spec.drain_s > CLOUD_RUN_TERMINATION_S:
            notes.append(
                f"Cloud Run stops an instance {CLOUD_RUN_TERMINATION_S} s after SIGTERM, less"
                f" than the {spec.drain_s} s a full drain may take: segments still pending then"
                " are lost with the instance; a small serve.log_upload_seconds keeps that short"
            )
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        written = []
        for filename, document in documents.items():
            atomic_write_text(out_dir / filename, _dump([document]))
            written.append(out_dir / filename)
    except OSError as exc:
        raise ArtifactError(
            f"cannot write manifests in {out_dir} ({exc.strerror}) — pass a writable --out-dir"
        ) from None
    return DeployResult(platform, written, spec, notes)
