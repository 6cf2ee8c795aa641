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
    # 10 images a class leave too few test images for the drift tests: a skip, not a tick.
    assert "- drift (" in result.output and "skipped: " in result.output, result.output
    assert "✓ drift" not in result.output
    run = Path("runs/latest").resolve()
    assert RunRecord.read(run).status == "completed"
    assert (run / "eval" / "report.html").is_file()
    parity = load_bundle(run / "bundle").parity
    assert parity is not None and parity.passed
    assert any((run / "predictions").iterdir())


@pytest.mark.slow
def test_the_anomaly_quickstart_reaches_a_drift_verdict(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(
        app,
        [
            "quickstart",
            "--task",
            "anomaly",
            "--device",
            "cpu",
            "anomaly.coreset_ratio=0.01",  # the demo's images; a smaller bank, built faster
        ],
    )
    assert result.exit_code == 0, result.output
    drift_line = next(line for line in result.output.splitlines() if " drift (" in line)
    assert drift_line.startswith("✓ drift"), result.output
    # Good test images against the good held-out reference, then the same images brightened.
    assert "test images: no drift" in drift_line, drift_line
    assert "brightness=1.3: DRIFT" in drift_line, drift_line


def test_quickstart_rejects_unknown_task(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["quickstart", "--task", "segmentation"])
    assert result.exit_code == 2
    assert "error: invalid value for --task/-t: " in result.output
    assert "'anomaly'" in result.output  # the choices are listed
    assert not Path("data").exists()
