"""`visionops train`, `models` and `sweep` driven through the real CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from visionops.artifacts import RunRecord
from visionops.cli.app import app
from visionops.errors import ArtifactError, ConfigError, DeviceError, TrainingError

runner = CliRunner()
FAST = ["--model", "mobilenet_v3_small", "--batch-size", "32", "--device", "cpu"]


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "NO_COLOR": "1", **extra}


def _history(run: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]


def test_train_resume_and_refuse_a_taken_name(prepared_shapes: Path) -> None:
    result = runner.invoke(
        app, ["train", str(prepared_shapes), "--epochs", "1", "--name", "cli", *FAST]
    )
    assert result.exit_code == 0, result.output
    assert "accuracy (monitored)" in result.stdout
    assert "visionops eval runs/cli" in result.output
    assert "visionops export runs/cli" in result.output
    run = Path("runs/cli")
    assert RunRecord.read(run).status == "completed"

    again = runner.invoke(app, ["train", str(prepared_shapes), "--name", "cli", *FAST])
    assert isinstance(again.exception, ConfigError)
    assert "already exists — pass --exist-ok" in str(again.exception)

    resumed = runner.invoke(app, ["train", "--resume", "cli", "--epochs", "2"])
    assert resumed.exit_code == 0, resumed.output
    assert [row["epoch"] for row in _history(run)] == [1, 2]
    config = (run / "config.yaml").read_text()
    assert "mobilenet_v3_small" in config  # the run's own settings were used
    assert "epochs: 2" in config

    done = runner.invoke(app, ["train", "--resume"])  # no RUN: runs/latest
    assert isinstance(done.exception, TrainingError)
    assert "already trained 2 of 2 epochs" in str(done.exception)
    old_spelling = runner.invoke(app, ["train", "--resume-latest"])
    assert "deprecated: --resume-latest is now --resume" in old_spelling.output
    assert isinstance(old_spelling.exception, TrainingError)


def test_print_config_shows_flags_and_overrides() -> None:
    result = runner.invoke(
        app,
        ["train", "--epochs", "3", "--lr", "0.01", "train.label_smoothing=0.1", "--print-config"],
    )
    assert result.exit_code == 0
    assert "epochs: 3" in result.stdout
    assert "lr: 0.01" in result.stdout
    assert "label_smoothing: 0.1" in result.stdout
    assert not Path("runs").exists()


def test_json_result(prepared_shapes: Path) -> None:
    result = runner.invoke(app, ["train", str(prepared_shapes), "-e", "1", "--json", *FAST])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["status"] == "completed"
    assert payload["monitor"] == "accuracy"
    assert "test" in payload["metrics"]


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "visionops", *args],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=300,
    )


def test_user_errors_exit_with_one_line(prepared_shapes: Path) -> None:
    unknown = _cli("train", str(prepared_shapes), "--model", "resnet81")
    assert unknown.returncode == 2
    errors = [line for line in unknown.stderr.splitlines() if line.strip()]
    assert len(errors) == 1
    assert errors[0].startswith("error: unknown model 'resnet81' — did you mean 'resnet18'")
    assert not Path("runs").exists() or not any(Path("runs").iterdir())


@pytest.mark.parametrize(
    ("args", "error", "message"),
    [
        (["--task", "regression"], ConfigError, "is a classification dataset but data.task is"),
        (["--resume"], ArtifactError, "not a visionops run folder"),
        (["--batch-size", "4096"], TrainingError, "fewer than one batch of train.batch_size=4096"),
        pytest.param(
            ["--device", "cuda"],
            DeviceError,
            "no usable CUDA GPU",
            marks=pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is present"),
        ),
    ],
)
def test_user_errors(
    prepared_shapes: Path, args: list[str], error: type[Exception], message: str
) -> None:
    result = runner.invoke(app, ["train", str(prepared_shapes), *args])
    assert isinstance(result.exception, error)
    assert message in str(result.exception)
    assert not Path("runs").exists() or not any(Path("runs").iterdir())


def test_models_lists_backbones() -> None:
    result = runner.invoke(app, ["models", "--json"])
    assert result.exit_code == 0
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert rows["resnet18"]["params_m"] == pytest.approx(11.69, abs=0.01)
    assert rows["resnet18"]["weights"] == "ResNet18_Weights.IMAGENET1K_V1"
    table = runner.invoke(app, ["models"])
    assert "mobilenet_v3_small" in table.stdout


def test_zero_config_trains_the_embedded_demo() -> None:
    result = runner.invoke(
        app,
        [
            "train",
            "data.demo.images_per_class=8",
            "data.image_size=32",
            "--epochs",
            "1",
            "--batch-size",
            "8",
            "--model",
            "mobilenet_v3_small",
        ],
    )
    assert result.exit_code == 0, result.output
    assert Path("data/prepared/shapes/manifest.json").is_file()
    assert RunRecord.read(Path("runs/run-001")).dataset.path == "data/prepared/shapes"
    assert Path("runs/latest").resolve() == Path("runs/run-001").resolve()


def test_wandb_offline_run(prepared_shapes: Path, tmp_path: Path) -> None:
    env = {"WANDB_DIR": str(tmp_path / "wandb-files"), "WANDB_CONFIG_DIR": str(tmp_path / "wc")}
    Path(env["WANDB_DIR"]).mkdir()
    result = runner.invoke(
        app,
        ["train", str(prepared_shapes), "-e", "1", "tracking.mode=offline", *FAST],
        env=env,
    )
    assert result.exit_code == 0, result.output
    tracking = RunRecord.read(Path("runs/run-001")).tracking
    assert tracking is not None and tracking.mode == "offline"
    offline = list((Path(env["WANDB_DIR"]) / "wandb").glob(f"offline-run-*-{tracking.id}"))
    assert len(offline) == 1
    assert list(offline[0].glob("*.wandb"))
    assert list(offline[0].glob("files/media/images/predictions_*.png"))


def test_sweep_without_network_is_one_line(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text("parameters:\n  train.lr: {values: [0.001, 0.01]}\n", encoding="utf-8")
    env = _env(WANDB_CONFIG_DIR=str(tmp_path / "wc"), NETRC=str(tmp_path / "none"))
    env.pop("WANDB_API_KEY", None)
    result = subprocess.run(
        [sys.executable, "-m", "visionops", "sweep", str(sweep), "--create-only"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1
    assert "wandb login" in errors[0]
    bad = tmp_path / "bad.yaml"
    bad.write_text("parameters:\n  train.lrr: {values: [1]}\n", encoding="utf-8")
    typo = runner.invoke(app, ["sweep", str(bad)])
    assert isinstance(typo.exception, ConfigError)
    assert "did you mean 'train.lr'" in str(typo.exception)


def _start_long_run(dataset: Path, name: str, *extra: str) -> subprocess.Popen[str]:
    """A real `visionops train` of 500 epochs of 224 small batches, logging at -vv."""
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "visionops",
            "train",
            str(dataset),
            "--epochs",
            "500",
            "--name",
            name,
            *FAST[:2],
            "--batch-size",
            "2",
            "--device",
            "cpu",
            "-vv",
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
    )


def _interrupt_at(process: subprocess.Popen[str], line_part: str) -> tuple[int, str]:
    """Read stderr until a line contains ``line_part``, send SIGINT; (exit code, stderr)."""
    assert process.stderr is not None
    seen = []
    for line in process.stderr:  # blocks on the process's own output: no timing
        seen.append(line)
        if line_part in line:
            break
    else:
        process.wait(timeout=60)
        pytest.fail(f"{line_part!r} never came:\n{''.join(seen)}")
    process.send_signal(signal.SIGINT)
    _, rest = process.communicate(timeout=120)
    return process.returncode, "".join(seen) + rest


def _interrupted_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "interrupted" in line]


@pytest.mark.parametrize(
    "event",
    [
        "training mobilenet_v3_small on",  # the engine is built; no batch yet
        "epoch 1: first batch done",  # mid-epoch 1
    ],
    ids=["before-the-first-batch", "mid-epoch-1"],
)
def test_ctrl_c_before_an_epoch_is_kept_says_nothing_was_kept(
    prepared_shapes: Path, event: str
) -> None:
    code, stderr = _interrupt_at(_start_long_run(prepared_shapes, "early"), event)
    assert code == 130, stderr
    assert _interrupted_lines(stderr) == [
        "interrupted: nothing was kept (Ctrl-C came before the run saved a checkpoint) —"
        " run the same command again to start over"
    ], stderr
    assert "Traceback" not in stderr
    assert not Path("runs/early").exists()


def test_ctrl_c_mid_epoch_n_keeps_the_last_epoch_and_a_resume_says_the_plan_changed(
    prepared_shapes: Path,
) -> None:
    code, stderr = _interrupt_at(
        _start_long_run(prepared_shapes, "long"), "epoch 2: first batch done"
    )
    assert code == 130, stderr
    assert _interrupted_lines(stderr) == [
        "interrupted: runs/long keeps epoch 1 of 500 — continue it with"
        " `visionops train --resume runs/long`"
    ], stderr
    record = RunRecord.read(Path("runs/long"))
    assert (record.status, record.epochs_completed, record.epochs) == ("interrupted", 1, 500)

    resumed = subprocess.run(
        [sys.executable, "-m", "visionops", "train", "--resume", "runs/long", "--epochs", "2"],
        capture_output=True,
        text=True,
        env=_env(),
        check=False,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert "the plan changed: runs/long was planned for 500 epochs and now trains to 2" in " ".join(
        resumed.stderr.split()
    ), resumed.stderr
    assert [row["epoch"] for row in _history(Path("runs/long"))] == [1, 2]
    assert RunRecord.read(Path("runs/long")).status == "completed"


def test_two_processes_with_gloo_make_one_run(prepared_shapes: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "visionops",
            "train",
            str(prepared_shapes),
            "--epochs",
            "1",
            "--nproc-per-node",
            "2",
            "--name",
            "ddp",
            *FAST,
        ],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(p.name for p in Path("runs").iterdir()) == ["ddp", "latest"]
    record = RunRecord.read(Path("runs/ddp"))
    assert record.status == "completed"
    assert record.device is not None and record.device.world_size == 2
    assert result.stdout.count("accuracy (monitored)") == 1  # only rank 0 reports


def test_an_error_under_two_processes_is_one_line_with_its_exit_code(
    prepared_shapes: Path,
) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "visionops",
            "train",
            str(prepared_shapes),
            "--task",
            "regression",  # a classification dataset: every worker raises ConfigError
            "--nproc-per-node",
            "2",
            *FAST,
        ],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=300,
    )
    assert result.returncode == ConfigError.exit_code, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr[-3000:]
    assert "is a classification dataset but data.task is regression" in errors[0]
    assert "Traceback" not in result.stderr
    assert "ChildFailedError" not in result.stderr
