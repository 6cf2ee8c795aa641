"""``run.json`` of a new run, and whether a run left behind can be continued.

A new run's record holds what is known before its first epoch (or its one pass);
:func:`check_resume_fits` refuses ``--resume`` with another dataset or network.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from visionops.artifacts import (
    DatasetRef,
    ModelSpec,
    Monitor,
    Normalization,
    RunDevice,
    RunRecord,
    WeightsRecord,
)
from visionops.config import Settings
from visionops.data.prepared import PreparedDataset
from visionops.errors import ConfigError
from visionops.models import weights_source
from visionops.tasks import Task
from visionops.train.dataset import shown
from visionops.train.engine import training_versions

__all__ = ["check_resume_fits", "new_run_record", "now"]


def now() -> str:
    """The current UTC time as ``run.json`` records it."""
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _weights_record(settings: Settings) -> WeightsRecord | None:
    model = settings.model
    source = weights_source(
        model.name,
        pretrained=model.pretrained,
        weights=Path(model.weights) if model.weights else None,
    )
    return WeightsRecord(**dataclasses.asdict(source)) if source is not None else None


def new_run_record(
    name: str,
    settings: Settings,
    dataset: PreparedDataset,
    task: Task,
    *,
    feature_dim: int,
    normalization: tuple[Sequence[float], Sequence[float]],
    config_hash: str,
    device: RunDevice,
    epochs: int,
    freeze_backbone: bool,
    created_at: str | None = None,
) -> RunRecord:
    """The record of a run about to train, status ``running``.

    Args:
        name: The run folder's name.
        settings: The settings the run uses (``config.yaml``).
        dataset: Its prepared dataset.
        task: Its task (head size, monitor, the fields it adds).
        feature_dim: Length of the model's embedding.
        normalization: ``(mean, std)`` per channel on the 0..1 scale.
        config_hash: SHA-256 of ``config.yaml``.
        device: Where it trains (``type``, ``precision``, ``world_size``).
        epochs: Epochs it is to train.
        freeze_backbone: Whether the backbone's weights stay as they are.
        created_at: When the run was first created (a rebuilt run keeps it); default now.
    """
    manifest = dataset.manifest
    mean, std = normalization
    return RunRecord(
        name=name,
        status="running",
        task=task.name,
        dataset=DatasetRef(
            path=shown(dataset.path), name=dataset.name, fingerprint=dataset.fingerprint
        ),
        model=ModelSpec(
            name=settings.model.name,
            num_outputs=task.num_outputs,
            channels=dataset.channels,
            image_size=dataset.image_size,
            feature_dim=feature_dim,
            dropout=settings.model.dropout,
            pretrained=settings.model.pretrained,
            weights=settings.model.weights,
            weights_source=_weights_record(settings),
            freeze_backbone=freeze_backbone,
        ),
        normalization=Normalization(mean=list(mean), std=list(std)),
        resize=dataset.resize,
        class_names=manifest.class_names,
        target_names=manifest.target_names,
        target_units=manifest.target_units,
        target_mean=manifest.target_mean,
        target_std=manifest.target_std,
        **task.run_fields(),
        monitor=Monitor(metric=task.monitor, mode=task.mode),
        epochs=epochs,
        config_hash=config_hash,
        created_at=created_at or now(),
        device=device,
        versions=training_versions(),
    )


def check_resume_fits(
    record: RunRecord, settings: Settings, dataset: PreparedDataset, task: Task, run_dir: Path
) -> None:
    """Refuse to continue a run on another dataset, or with another network.

    Raises:
        ConfigError: The dataset's fingerprint, the model name, head size or channels differ;
            the message says how to resume or to start a new run.
    """
    if record.dataset.fingerprint != dataset.fingerprint:
        raise ConfigError(
            f"{dataset.path} is not the dataset {run_dir} was trained on (fingerprint"
            " differs) — resume on the run's own dataset, or start a new run"
        )
    spec = record.model
    trained = {"name": spec.name, "num_outputs": spec.num_outputs, "channels": spec.channels}
    wanted = {
        "name": settings.model.name,
        "num_outputs": task.num_outputs,
        "channels": dataset.channels,
    }
    for key, value in wanted.items():
        if trained[key] != value:
            raise ConfigError(
                f"{run_dir} was trained with model.{key}={trained[key]!r}, not {value!r}"
                " — drop that override to resume, or start a new run"
            )
