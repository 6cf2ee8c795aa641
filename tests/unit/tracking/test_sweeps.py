"""Sweep files turned into W&B sweep configurations, checked like ``key=value`` overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from visionops.config import Settings, load_settings
from visionops.errors import ConfigError, TrackingError
from visionops.tracking.sweeps import create_sweep, load_sweep_file, sweep_config


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
