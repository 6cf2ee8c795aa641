"""A Weights & Biases run, for real in offline mode (no credentials, no network)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from visionops.config import TrackingSettings
from visionops.errors import TrackingError
from visionops.tracking.training import SWEEP_METRIC
from visionops.tracking.wandb_run import NullTracker, start_tracking


def test_disabled_tracking_does_nothing(tmp_path: Path) -> None:
    tracker = start_tracking(TrackingSettings(), run_dir=tmp_path, run_name="run-001", config={})
    assert isinstance(tracker, NullTracker)
    assert not tracker.enabled
    tracker.log_epoch(1, {"val/accuracy": 1.0})
    tracker.finish("completed")
    assert list(tmp_path.iterdir()) == []


def test_offline_run_writes_wandb_files(tmp_path: Path, wandb_env: Path) -> None:
    tracker = start_tracking(
        TrackingSettings(mode="offline"),
        run_dir=tmp_path / "runs" / "run-001",
        run_name="run-001",
        config={"train": {"epochs": 2}},
        tags=["classification"],
    )
    assert tracker.enabled
    assert tracker.run_id is not None
    assert tracker.run_id.startswith("run-001-")
    tracker.log_epoch(1, {"train/loss": 1.0, "val/accuracy": 0.5, SWEEP_METRIC: 0.5})
    tracker.log_predictions(np.zeros((2, 16, 16, 3), np.uint8), ["pred a · true a", "pred b"])
    tracker.log_confusion_matrix([0, 1, 1], [0, 1, 0], ["a", "b"])
    checkpoint = tmp_path / "best.pt"
    checkpoint.write_bytes(b"weights")
    tracker.log_checkpoint(checkpoint, "model-run-001", {"task": "classification"})
    tracker.log_summary({"test/accuracy": 0.75})
    tracker.finish("completed")
    runs = list((wandb_env / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    assert list(runs[0].glob("run-*.wandb"))
    assert list(runs[0].glob("files/media/images/predictions_*.png"))
    assert list(runs[0].glob("files/media/table/confusion_matrix_*.table.json"))


def test_online_without_login_is_one_line_error(tmp_path: Path, wandb_env: Path) -> None:
    with pytest.raises(TrackingError, match=r"wandb login.*tracking.mode=offline") as info:
        start_tracking(TrackingSettings(mode="online"), run_dir=tmp_path, run_name="x", config={})
    assert "\n" not in str(info.value)
