"""``visionops drift`` and ``visionops predict`` on the trained shapes demo, through the CLI.

The trained demo run (tests/conftest.py) is copied and exported once; its reference is the
val split. Unseen test images are the "same distribution" traffic; `drift simulate` makes the
shifted traffic. Failure tests run the installed entry point in-process, so they see the exit
code and the one-line message a user sees.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from visionops.cli.app import main

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def project(trained_shapes_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private copy of the trained shapes project, exported (reference = val split)."""
    from visionops.config import load_settings
    from visionops.export import export_run

    source = trained_shapes_run.parent.parent
    root = Path(shutil.copytree(source, tmp_path_factory.mktemp("drift-cli") / "p", symlinks=True))
    settings = load_settings(overrides=[f"runs_root={root / 'runs'}"], cwd=root)
    export_run(settings, root / "runs" / trained_shapes_run.name)
    return root


@pytest.fixture
def in_project(project: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(project)
    monkeypatch.setenv("COLUMNS", "200")
    return project


def _main(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str
) -> tuple[int, str, str]:
    """Run the installed entry point in-process; return (exit code, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", ["visionops", *args])
    code: object = 0
    try:
        main()
    except SystemExit as exit_info:
        code = exit_info.code
    captured = capsys.readouterr()
    return (code if isinstance(code, int) else 0), captured.out, captured.err


def test_unseen_images_do_not_drift_and_brighter_ones_do(
    in_project: Path,
    raw_shapes: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    unseen = raw_shapes / "test"
    code, out, err = _main(
        monkeypatch, capsys, "drift", "report", "--current", str(unseen), "--fail-on-drift"
    )
    assert code == 0, out + err
    assert out.lstrip().startswith("NO DRIFT")
    report = json.loads((in_project / "runs" / "run-001" / "drift" / "report.json").read_text())
    assert report["verdict"]["drifted"] is False
    assert report["reference"]["split"] == "val"
    assert {f["name"] for f in report["families"]} == {"embeddings", "outputs", "images"}

    code, out, err = _main(
        monkeypatch, capsys, "drift", "simulate", str(unseen), "--shift", "brightness=1.5",
        "--out", str(tmp_path / "bright"),
    )  # fmt: skip
    assert code == 0, err
    assert "shifted images written" in out
    code, out, err = _main(
        monkeypatch, capsys, "drift", "report", "--current", str(tmp_path / "bright"),
        "--out", str(tmp_path / "report"), "--fail-on-drift",
    )  # fmt: skip
    assert code == 1, out + err
    assert out.lstrip().startswith("DRIFT DETECTED")
    assert "brightness up" in out
    page = (tmp_path / "report" / "report.html").read_text()
    assert page.index("Drift detected") < page.index("Image statistics (KS)")
    assert page.count("data:image/png;base64,") >= 4
    assert "<script" not in page and "http" not in page.split("</style>")[1]


def test_predict_log_then_report_on_the_log(
    in_project: Path,
    raw_shapes: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    log_dir = tmp_path / "log"
    csv_file = tmp_path / "predictions.csv"
    code, out, err = _main(
        monkeypatch, capsys, "predict", str(raw_shapes / "test"), "--out", str(csv_file),
        "--log", "--log-dir", str(log_dir),
    )  # fmt: skip
    assert code == 0, err
    rows = csv_file.read_text().splitlines()
    assert rows[0] == "path,label,probability"
    right = sum(Path(row.split(",")[0]).parent.name == row.split(",")[1] for row in rows[1:])
    assert right / (len(rows) - 1) >= 0.9  # the demo model reads its own test images

    code, out, err = _main(
        monkeypatch, capsys, "drift", "report", "--current", str(log_dir), "--json",
        "--out", str(tmp_path / "report"),
    )  # fmt: skip
    assert code == 0, err
    payload = json.loads(out)
    assert payload["current"]["n"] == len(rows) - 1
    assert payload["verdict"]["drifted"] is False

    # Too few images: a one-line error naming the minimum, exit 2, nothing written.
    code, out, err = _main(
        monkeypatch, capsys, "drift", "report", "--current", str(log_dir), "--last", "10",
        "--out", str(tmp_path / "few"),
    )  # fmt: skip
    assert code == 2
    assert "at least 30" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "few").exists()


@pytest.mark.parametrize("problem", ["missing", "empty", "foreign"])
def test_bad_logs_exit_2_and_write_nothing(
    in_project: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    problem: str,
) -> None:
    log_dir = tmp_path / "log"
    if problem != "missing":
        log_dir.mkdir()
        line = {
            "time": "2026-12-01T00:00:00+00:00", "request_id": "r1", "task": "classification",
            "model_version": "someone-else@1", "prediction": {"label": "x"}, "image": {"mean": 0.5},
        }  # fmt: skip
        text = "" if problem == "empty" else json.dumps(line) + "\n"
        (log_dir / "predictions-20261201T000000Z-p1-0001.jsonl").write_text(text)
    code, _, err = _main(
        monkeypatch, capsys, "drift", "report", "--current", str(log_dir),
        "--out", str(tmp_path / "out"),
    )  # fmt: skip
    assert code == 2
    assert len(err.strip().splitlines()) == 1
    expected = {"missing": "does not exist", "empty": "no records", "foreign": "another bundle"}
    assert expected[problem] in err
    assert not (tmp_path / "out").exists()


def test_reference_rebuilt_from_test_split(
    project: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    copy = Path(shutil.copytree(project, tmp_path / "p", symlinks=True))
    monkeypatch.chdir(copy)
    code, out, err = _main(monkeypatch, capsys, "drift", "reference", "run-001", "--split", "test")
    assert code == 0, err
    assert "test images" in out
    import numpy as np

    from visionops.bundle import load_bundle

    bundle = load_bundle(copy / "runs" / "run-001" / "bundle")  # checksums still verify
    assert bundle.manifest["reference_split"] == "test"
    with np.load(bundle.path / "reference.npz", allow_pickle=False) as reference:
        assert str(reference["split"]) == "test"
        splits = np.load(copy / "data" / "prepared" / "shapes" / "splits.npy")
        assert (splits[reference["indices"]] == 2).all()
