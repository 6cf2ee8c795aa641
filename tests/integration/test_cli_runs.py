"""``visionops runs list``, ``runs compare`` and ``runs history`` on two real tiny runs."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from visionops.cli.app import app
from visionops.errors import ArtifactError

TINY = [
    "data.demo.images_per_class=6",
    "data.demo.image_size=32",
    "data.image_size=32",
    "data.workers=1",
    "model.name=shufflenet_v2_x0_5",
    "train.batch_size=16",
    "device=cpu",
]


def visionops(*args: str) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, f"visionops {' '.join(args)} failed:\n{result.output}"
    return result.stdout


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two runs on demo:shapes: ``short`` (1 epoch) and ``long`` (2 epochs, another lr)."""
    root = tmp_path_factory.mktemp("runs-cli")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        visionops("train", "demo:shapes", *TINY, "--epochs", "1", "--name", "short")
        visionops("train", "demo:shapes", *TINY, "--epochs", "2", "--lr", "0.01", "--name", "long")
        visionops("export", "long")
    return root


@pytest.mark.slow
def test_list_shows_every_run_newest_last(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(project)
    rows = json.loads(visionops("runs", "list", "--json"))
    assert [row["name"] for row in rows] == ["short", "long"]
    short, long = rows
    assert (short["epochs"], long["epochs"]) == (1, 2)
    assert (short["bundle"], long["bundle"]) == ("-", "fp32")
    assert long["latest"] and not short["latest"]
    assert long["task"] == "classification" and long["dataset"] == "shapes"
    assert long["model"] == "shufflenet_v2_x0_5" and long["metric"] == "accuracy"
    table = CliRunner().invoke(app, ["runs", "list"], env={"COLUMNS": "200"}).stdout
    # The console's width is fixed when another test first built it: cells may wrap or be
    # shortened with an ellipsis, so only the start of each header is certain to show.
    for header in ("name", "task", "dataset", "model", "epochs", "best", "bundle"):
        assert header[:3] in table, header
    assert table.count("\n│ ") + table.count("\n┃ ") >= 3  # the header and one row per run


@pytest.mark.slow
def test_compare_shows_differences_metrics_and_curves(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(project)
    curves = project / "both.png"
    report = json.loads(
        visionops("runs", "compare", "short", "long", "--curves", str(curves), "--json")
    )
    differ = {row["key"]: (row["a"], row["b"]) for row in report["settings_differ"]}
    assert differ["train.epochs"] == (1, 2)
    assert differ["train.lr"] == (0.002, 0.01)
    assert "data.image_size" not in differ  # same in both
    metrics = {(row["source"], row["metric"]): row for row in report["metrics"]}
    accuracy = metrics[("val", "accuracy")]
    assert accuracy["delta"] == pytest.approx(accuracy["b"] - accuracy["a"])
    with Image.open(curves) as image:
        assert image.width > image.height  # one panel per curve, side by side
    table = CliRunner().invoke(app, ["runs", "compare", "short", "long"], env={"COLUMNS": "200"})
    assert "train.epochs" in table.stdout and "b - a" in table.stdout
    assert (project / "runs" / "compare-short-vs-long.png").is_file()


@pytest.mark.slow
def test_history_is_a_table_or_one_csv_row_per_epoch(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(project)
    table = CliRunner().invoke(app, ["runs", "history", "long"], env={"COLUMNS": "80"})
    assert table.exit_code == 0, table.output
    lines = table.stdout.splitlines()
    assert "long · 2 epochs" in lines[0]
    header = next(line for line in lines if "epoch" in line and "train_loss" in line)
    assert "val_loss" in header and "val_accuracy" in header  # the monitored metric stays
    assert max(len(line) for line in lines if "│" in line or "┃" in line) <= 80

    visionops("runs", "history", "long", "--out", "long.csv")
    with (project / "long.csv").open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["epoch"] for row in rows] == ["1", "2"]
    assert {"train_loss", "val_loss", "val_accuracy"} <= set(rows[0])
    again = CliRunner().invoke(app, ["runs", "history", "long", "--out", "long.csv"])
    assert isinstance(again.exception, ArtifactError) and "--force" in str(again.exception)
    old = CliRunner().invoke(app, ["runs", "history", "long", "--csv", "old.csv"])
    assert old.exit_code == 0 and "deprecated: --csv FILE is now --out FILE" in old.output
    assert (project / "old.csv").is_file()


@pytest.mark.slow
def test_compare_a_run_with_itself_is_refused(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(project)
    result = CliRunner().invoke(app, ["runs", "compare", "long", "latest"])
    assert result.exit_code != 0
    assert "same run" in str(result.exception)


def test_list_without_runs_says_how_to_get_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["runs", "list"])
    assert result.exit_code != 0
    assert "visionops train" in str(result.exception)
