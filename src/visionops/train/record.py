"""``run.json`` of a new run: what is known before the first epoch (or the one pass)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from visionops.artifacts import DatasetRef, ModelSpec, Monitor, Normalization, RunRecord
from visionops.config import Settings
from visionops.data.prepared import PreparedDataset
from visionops.tasks import Task
from visionops.train.dataset import shown
from visionops.train.engine import training_versions

__all__ = ["new_run_record", "now"]


def now() -> str:
    """The current UTC time as ``run.json`` records it."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def new_run_record(
    name: str,
    settings: Settings,
    dataset: PreparedDataset,
    task: Task,
    *,
    feature_dim: int,
    normalization: tuple[Sequence[float], Sequence[float]],
    config_hash: str,
    device: dict[str, Any],
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
