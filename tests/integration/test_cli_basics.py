"""The CLI shell: version, help, doctor, config, recipes, init, error boundary."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from visionops import __version__
from visionops.cli.app import app

runner = CliRunner()


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "visionops", *args], capture_output=True, text=True, timeout=120
    )


def test_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert __version__ in result.stdout


def test_help_lists_lifecycle_and_examples() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for word in ("doctor", "config", "recipes", "init", "quickstart"):
        assert word in result.stdout
    assert "visionops serve --port 8000" in result.stdout


def test_doctor_json_reports_device_choice() -> None:
    result = runner.invoke(app, ["doctor", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["auto_device"]["device"] in {"cpu", "mps"} or report["cuda"]["available"]
    assert report["auto_device"]["reason"]
    assert "CPUExecutionProvider" in report["onnxruntime_providers"]
    assert report["disk"]["free_gib"] > 0
    assert report["wandb"]["mode"] == "disabled"


def test_config_show_applies_overrides() -> None:
    result = runner.invoke(app, ["config", "show", "train.epochs=3", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["train"]["epochs"] == 3


def test_config_show_key_prints_one_key_and_its_layer() -> None:
    result = runner.invoke(app, ["config", "show", "train.epochs", "--recipe", "demo-anomaly"])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "train.epochs: 10  # set by: default"
    result = runner.invoke(app, ["config", "show", "model.name", "--recipe", "demo-anomaly"])
    assert result.stdout.strip() == "model.name: resnet18  # set by: recipe demo-anomaly"
    result = runner.invoke(app, ["config", "show", "train.epochs", "train.epochs=3", "--json"])
    assert json.loads(result.stdout) == {"key": "train.epochs", "value": 3, "layer": "key=value"}


def test_unknown_key_is_one_line_and_exit_2() -> None:
    result = _cli("config", "show", "train.epoch=3")
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "did you mean 'train.epochs'" in lines[0]
    assert "Traceback" not in result.stderr


def test_verbose_shows_traceback() -> None:
    result = _cli("-v", "config", "show", "train.epoch=3")
    assert result.returncode == 2
    assert "Traceback" in result.stderr


def test_recipes_list_json() -> None:
    result = runner.invoke(app, ["recipes", "list", "--json"])
    assert result.exit_code == 0
    recipes = json.loads(result.stdout)
    assert "fer2013" in recipes and "Seed 5" in recipes["fer2013"]


def test_init_writes_project_and_refuses_to_overwrite(tmp_path: Path) -> None:
    result = runner.invoke(app, ["init", "--recipe", "fer2013"])
    assert result.exit_code == 0, result.output
    project = yaml.safe_load((tmp_path / "visionops.yaml").read_text())
    assert project["data"]["channels"] == 1
    pipeline = yaml.safe_load((tmp_path / "dvc.yaml").read_text())
    assert list(pipeline["stages"]) == ["fetch", "preprocess", "train", "eval", "export"]
    assert pipeline["stages"]["fetch"]["cmd"] == "visionops data fetch --name fer2013 --force"
    # The project file is picked up by every later command.
    shown = runner.invoke(app, ["config", "show", "--json"])
    assert json.loads(shown.stdout)["data"]["channels"] == 1
    again = runner.invoke(app, ["init", "--recipe", "fer2013"])
    assert again.exit_code != 0
    assert "--force" in str(again.exception)


def test_print_config_exits_before_work() -> None:
    result = runner.invoke(app, ["doctor", "--print-config", "--recipe", "nutrition5k"])
    assert result.exit_code == 0
    assert "freeze_backbone: true" in result.stdout
    assert "CUDA" not in result.stdout  # printed the settings, did not run the checks


def test_python_dash_m_entry_point() -> None:
    result = _cli("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"visionops {__version__}"
