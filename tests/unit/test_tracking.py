"""Weights & Biases tracking, for real in offline mode, and sweep configuration."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from visionops.config import Settings, TrackingSettings, load_settings
from visionops.errors import ConfigError, TrackingError
from visionops.tracking.wandb_run import (
    SWEEP_METRIC,
    NullTracker,
    create_sweep,
    load_sweep_file,
    start_tracking,
    sweep_config,
)


@pytest.fixture
def wandb_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """W&B files under tmp, no credentials, no network."""
    folder = tmp_path / "wandb-dir"
    folder.mkdir()
    monkeypatch.setenv("WANDB_DIR", str(folder))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "wandb-cache"))
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    return folder


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


# --------------------------------------------------------------------------- sweeps


def test_sweep_config_adds_command_and_default_metric() -> None:
    config = sweep_config(
        {
            "method": "bayes",
            "parameters": {
                "train.lr": {"min": 0.0001, "max": 0.01},
                "model.name": {"values": ["resnet18", "mobilenet_v3_small"]},
            },
            "dataset": "data/prepared/shapes",
        }
    )
    assert config["command"] == [
        "visionops",
        "train",
        "data/prepared/shapes",
        "tracking.mode=online",
        "${args_no_hyphens}",
    ]
    assert config["metric"] == {"name": "best_metric", "goal": "maximize"}
    assert "dataset" not in config
    assert config["method"] == "bayes"


def test_sweep_keeps_a_given_metric_and_dataset_option_wins() -> None:
    config = sweep_config(
        {
            "parameters": {"train.epochs": {"values": [5, 10]}},
            "metric": {"name": "val/accuracy", "goal": "maximize"},
            "dataset": "a",
        },
        dataset="b",
    )
    assert config["metric"]["name"] == "val/accuracy"
    assert config["method"] == "random"
    assert config["command"][2] == "b"


@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        ({"train.lrr": {"values": [0.1]}}, "unknown setting 'train.lrr'.*did you mean 'train.lr'"),
        ({"train.epochs": {"values": ["many"]}}, "train.epochs.*valid integer"),
        ({"train.lr": 0.1}, "must be a mapping"),
        ({}, "no `parameters`"),
    ],
)
def test_bad_sweep_files_name_the_problem(parameters: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        sweep_config({"parameters": parameters})


def test_sweep_method_is_checked() -> None:
    with pytest.raises(ConfigError, match="grid, random, bayes"):
        sweep_config({"method": "hyperband", "parameters": {"train.lr": {"value": 0.1}}})


def test_sweep_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_sweep_file(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("parameters: [unclosed", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_sweep_file(bad)


def test_creating_a_sweep_without_login_is_one_line_error(tmp_path: Path, wandb_env: Path) -> None:
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text("parameters:\n  train.lr: {values: [0.001, 0.01]}\n", encoding="utf-8")
    settings: Settings = load_settings(cwd=tmp_path)
    with pytest.raises(TrackingError, match="needs the network and `wandb login`") as info:
        create_sweep(sweep, settings, create_only=True)
    assert "\n" not in str(info.value)
