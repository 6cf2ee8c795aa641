"""``visionops eval`` end to end: tables, files, --json, exit codes."""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from visionops.artifacts import EvalMetrics, RunRecord
from visionops.cli.app import app

runner = CliRunner()


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "visionops", *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
    )


def _embedded_pngs(report: Path) -> list[bytes]:
    found = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', report.read_text())
    return [base64.b64decode(data) for data in found]


def test_eval_latest_prints_tables_and_writes_the_report(
    handmade_runs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(handmade_runs)
    result = runner.invoke(app, ["eval", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "colours-run · classification · test (16 images)" in result.stdout
    assert "Accuracy" in result.stdout
    assert "1.0000" in result.stdout
    for name in ("red", "green", "blue", "yellow"):
        assert name in result.stdout
    eval_dir = handmade_runs / "runs" / "colours-run" / "eval"
    assert "report.html" in result.output
    assert EvalMetrics.read(eval_dir).metrics["accuracy"] == 1.0
    pngs = _embedded_pngs(eval_dir / "report.html")
    assert pngs == [
        (eval_dir / "confusion_matrix.png").read_bytes(),
        (eval_dir / "reliability_diagram.png").read_bytes(),
    ]


def test_eval_json_is_metrics_json(handmade_runs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(handmade_runs)
    result = runner.invoke(app, ["eval", "tags-run", "--json", "-q"])
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    # --json prints metrics.json as it is on disk: both compared as JSON on purpose.
    saved = json.loads((handmade_runs / "runs" / "tags-run" / "eval" / "metrics.json").read_text())
    assert printed == saved
    assert printed["task"] == "multilabel"
    assert set(printed["metrics"]) >= {"map", "f1_micro", "f1_macro"}
    assert len(printed["per_class"]) == 12


def test_top_rows_and_all(handmade_runs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(handmade_runs)
    labels = RunRecord.read(handmade_runs / "runs" / "tags-run").class_names
    assert labels is not None and len(labels) == 12

    def shown(output: str) -> list[str]:
        return [name for name in labels if re.search(rf"\b{name}\b", output)]

    short = runner.invoke(app, ["eval", "tags-run"])
    assert short.exit_code == 0, short.output
    assert "weakest 10 of 12 by AP" in short.stdout
    assert len(shown(short.stdout)) == 10
    full = runner.invoke(app, ["eval", "tags-run", "--all"])
    assert full.exit_code == 0, full.output
    assert shown(full.stdout) == labels
    assert "weakest" not in full.stdout


def test_split_and_checkpoint_options(handmade_runs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(handmade_runs)
    result = runner.invoke(
        app, ["eval", "runs/dishes-run", "--split", "val", "--checkpoint", "last", "-b", "3"]
    )
    assert result.exit_code == 0, result.output
    assert "per target" in result.stdout
    assert "kcal" in result.stdout
    saved = EvalMetrics.read(handmade_runs / "runs" / "dishes-run" / "eval")
    assert (saved.split, saved.n) == ("val", 8)
    assert saved.checkpoint.which == "last"
    assert saved.inference is not None and saved.inference.batch_size == 3
    pngs = _embedded_pngs(handmade_runs / "runs" / "dishes-run" / "eval" / "report.html")
    assert len(pngs) == 2  # one scatter per target


def test_print_config_exits_before_evaluating(tmp_path: Path) -> None:
    result = _cli("eval", "--print-config", "train.batch_size=7", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "batch_size: 7" in result.stdout


def test_no_run_exits_2_naming_train(tmp_path: Path) -> None:
    result = _cli("eval", cwd=tmp_path)
    assert result.returncode == 2
    assert "visionops train" in result.stderr
    assert not (tmp_path / "runs").exists()


def test_unknown_split_exits_2(tmp_path: Path) -> None:
    result = _cli("eval", "--split", "holdout", cwd=tmp_path)
    assert result.returncode == 2
    assert "--split/-s" in result.stderr  # the flag is named, not a config file
    assert "holdout" in result.stderr


def test_missing_dataset_exits_2_naming_preprocess(handmade_runs: Path, tmp_path: Path) -> None:
    import shutil

    shutil.copytree(
        handmade_runs / "runs" / "tags-run",
        tmp_path / "runs" / "tags-run",
        ignore=shutil.ignore_patterns("eval"),
    )
    result = _cli("eval", "tags-run", cwd=tmp_path)
    assert result.returncode == 2
    assert "visionops data preprocess" in result.stderr
    assert not (tmp_path / "runs" / "tags-run" / "eval").exists()


# ------------------------------------------------------------- runs trained by `visionops train`


# The quality bar of the train issue, on runs trained from random initialisation on the CPU.
# One test per trained run: under pytest-xdist a session fixture shared by two tests can be
# built twice (once per worker), and each of these runs costs about a minute of training.
@pytest.mark.slow
@pytest.mark.parametrize(
    ("fixture", "metric", "at_least"),
    [
        ("trained_shapes_run", "accuracy", 0.95),
        ("trained_multilabel_run", "map", 0.90),
        ("trained_regression_run", "r2", 0.80),
    ],
)
def test_trained_demo_runs_meet_the_quality_bar(
    fixture: str, metric: str, at_least: float, request: pytest.FixtureRequest
) -> None:
    run_dir = Path(request.getfixturevalue(fixture))
    # The training run's metrics.json has no model of its own (docs/artifacts.md).
    trained = json.loads((run_dir / "metrics.json").read_text())["test"]
    assert trained[metric] >= at_least
    if metric == "map":  # thresholds tuned on the validation split, one per label
        assert len(RunRecord.read(run_dir).thresholds or []) == 6
    result = runner.invoke(app, ["eval", str(run_dir.resolve()), "--json", "-q"])
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    assert printed["split"] == "test"
    assert printed["metrics"][metric] == pytest.approx(trained[metric], abs=1e-6)
    eval_dir = run_dir / "eval"
    # --json prints metrics.json as it is on disk: compared as JSON on purpose.
    assert json.loads((eval_dir / "metrics.json").read_text()) == printed
    pngs = _embedded_pngs(eval_dir / "report.html")
    assert pngs
    assert pngs == [(eval_dir / name).read_bytes() for name in printed["plots"]]
