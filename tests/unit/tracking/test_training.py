"""What a training run reports to W&B, for real in offline mode."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from visionops.artifacts import (
    DatasetRef,
    ModelSpec,
    Monitor,
    Normalization,
    RunRecord,
    RunTracking,
)
from visionops.config import TrackingSettings
from visionops.tasks import ClassificationTask
from visionops.tracking.training import (
    PREDICTION_SAMPLES,
    log_training_epoch,
    log_training_outcome,
    start_run_tracking,
)


def _record() -> RunRecord:
    return RunRecord(
        name="run-001",
        status="running",
        task="classification",
        dataset=DatasetRef(path="data/prepared/shapes", name="shapes", fingerprint="f"),
        model=ModelSpec(name="resnet18", num_outputs=2, channels=3, image_size=16),
        normalization=Normalization(mean=[0.5] * 3, std=[0.25] * 3),
        monitor=Monitor(metric="accuracy", mode="max"),
        config_hash="c",
    )


def test_disabled_tracking_leaves_the_record_alone(tmp_path: Path) -> None:
    record = _record()
    tracker = start_run_tracking(
        TrackingSettings(), record, tmp_path / "run-001", config={}, tags=["classification"]
    )
    assert not tracker.enabled
    log_training_epoch(
        tracker, 1, train_loss=1.0, val={"loss": 1.0}, lr=0.1, images_per_s=1.0, best=None
    )
    assert record.tracking is None
    assert not (tmp_path / "run-001").exists()


def test_a_run_is_noted_in_its_record_and_resume_continues_it(
    tmp_path: Path, wandb_env: Path
) -> None:
    record = _record()
    settings = TrackingSettings(mode="offline", project="shapes")
    run_dir = tmp_path / "runs" / "run-001"
    tracker = start_run_tracking(settings, record, run_dir, config={}, tags=["classification"])
    tracker.finish("interrupted")
    assert isinstance(record.tracking, RunTracking)
    assert (record.tracking.mode, record.tracking.project) == ("offline", "shapes")
    first_id = record.tracking.id
    assert first_id is not None and first_id.startswith("run-001-")

    again = start_run_tracking(settings, record, run_dir, config={}, tags=["classification"])
    again.finish("completed")
    assert record.tracking.id == first_id
    assert list((wandb_env / "wandb").glob(f"offline-run-*-{first_id}"))


def test_outcome_logs_samples_confusion_matrix_and_best_checkpoint(
    tmp_path: Path, wandb_env: Path
) -> None:
    record = _record()
    run_dir = tmp_path / "runs" / "run-001"
    tracker = start_run_tracking(
        TrackingSettings(mode="offline"), record, run_dir, config={}, tags=["classification"]
    )
    log_training_epoch(
        tracker,
        1,
        train_loss=0.9,
        val={"loss": 0.8, "accuracy": 0.5},
        lr=1e-3,
        images_per_s=100.0,
        best=0.5,
    )
    images = np.zeros((PREDICTION_SAMPLES + 8, 16, 16, 3), np.uint8)
    indices = np.arange(4, PREDICTION_SAMPLES + 8)
    targets = np.arange(len(indices)) % 2
    predictions = np.eye(2)[targets]
    checkpoint = run_dir / "checkpoints" / "best.pt"
    checkpoint.parent.mkdir(parents=True)
    checkpoint.write_bytes(b"weights")
    log_training_outcome(
        tracker,
        ClassificationTask(["circle", "square"]),
        run_name="run-001",
        results={"val": {"loss": 0.8, "accuracy": 1.0}},
        images=images,
        indices=indices,
        predictions=predictions,
        targets=targets,
        checkpoint=checkpoint,
        best_epoch=1,
        best_metric=1.0,
    )
    tracker.finish("completed")
    (run,) = (wandb_env / "wandb").glob("offline-run-*")
    assert list(run.glob("files/media/images/predictions_*.png"))
    assert list(run.glob("files/media/table/confusion_matrix_*.table.json"))
