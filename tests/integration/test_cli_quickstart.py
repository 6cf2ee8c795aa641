"""`visionops quickstart` runs every stage in an empty folder, and proves there is no skew."""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from visionops.cli.app import app


@pytest.mark.slow
def test_quickstart_runs_every_stage_in_an_empty_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(
        app,
        [
            "quickstart",
            "--epochs",
            "1",
            "--device",
            "cpu",
            "data.demo.images_per_class=10",
            "data.image_size=32",
            "train.batch_size=16",
        ],
    )
    assert result.exit_code == 0, result.output
    for stage in ("fetch", "preprocess", "train", "eval", "export", "serve check", "drift"):
        assert stage in result.stdout
    assert "(no skew)" in result.output
    run = Path("runs/latest").resolve()
    assert json.loads((run / "run.json").read_text())["status"] == "completed"
    assert (run / "eval" / "report.html").is_file()
    assert json.loads((run / "bundle" / "parity.json").read_text())["passed"] is True
    assert any((run / "predictions").iterdir())


def test_quickstart_rejects_unknown_task(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["quickstart", "--task", "segmentation"])
    assert result.exit_code != 0
    assert "choose one of classification, multilabel, regression" in str(result.exception)
    assert not Path("data").exists()
