"""`visionops quickstart` runs every stage in an empty folder, and proves there is no skew."""

from pathlib import Path

import pytest
from typer.testing import CliRunner

from visionops.artifacts import RunRecord
from visionops.cli.app import app
from visionops.inference.bundle import load_bundle


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
    assert RunRecord.read(run).status == "completed"
    assert (run / "eval" / "report.html").is_file()
    parity = load_bundle(run / "bundle").parity
    assert parity is not None and parity.passed
    assert any((run / "predictions").iterdir())


def test_quickstart_rejects_unknown_task(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["quickstart", "--task", "segmentation"])
    assert result.exit_code == 2
    assert "error: invalid value for --task/-t: " in result.output
    assert "'anomaly'" in result.output  # the choices are listed
    assert not Path("data").exists()
