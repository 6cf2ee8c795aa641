"""A camera change through the CLI: export reads the raw files, `drift report` names the change.

A shapes model (one epoch of the smallest backbone: drift does not need a good model) is
exported in a project whose raw folder is `data/raw/shapes`, so `reference.npz` holds the
noise, detail, blockiness and JPEG quality of the val images' files. The unseen test files
are the unchanged camera; `drift simulate` makes a noisier sensor and a harder encoder.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from cli_helpers import run_main as _main
from visionops.image_quality import SOURCE_STATISTICS


@pytest.fixture(scope="module")
def project(
    prepared_shapes: Path, raw_shapes: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    from visionops.config import load_settings
    from visionops.export.stage import export_run
    from visionops.train import train

    root = tmp_path_factory.mktemp("drift-camera")
    shutil.copytree(prepared_shapes, root / "data" / "prepared" / "shapes")
    (root / "data" / "raw").mkdir()
    (root / "data" / "raw" / "shapes").symlink_to(raw_shapes, target_is_directory=True)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        settings = load_settings(
            overrides=[
                "model.name=shufflenet_v2_x0_5",
                "train.epochs=1",
                "train.batch_size=32",
                "device=cpu",
                "export.quantize=none",
            ],
            cwd=root,
        )
        run = train(settings, Path("data/prepared/shapes")).run_dir
        export_run(settings, run)
    return root


@pytest.mark.slow
def test_export_keeps_the_camera_statistics_of_the_raw_files(project: Path) -> None:
    with np.load(project / "runs" / "run-001" / "bundle" / "reference.npz") as reference:
        names = reference["stat_names"].tolist()
        stats = reference["stats"]
    for name in SOURCE_STATISTICS:
        assert np.isfinite(stats[:, names.index(name)]).all(), name
    assert set(stats[:, names.index("jpeg_quality")].tolist()) == {92.0}


@pytest.mark.slow
def test_a_noisier_sensor_and_a_harder_encoder_are_named(
    project: Path,
    raw_shapes: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(project)
    monkeypatch.setenv("COLUMNS", "200")
    unseen = raw_shapes / "test"
    code, out, err = _main(
        monkeypatch, capsys, "drift", "report", "drift.alpha=0.01", "--current", str(unseen),
        "--out-dir", str(tmp_path / "same"),
    )  # fmt: skip
    assert code == 0, out + err
    report = json.loads((tmp_path / "same" / "report.json").read_text())
    images = next(f for f in report["families"] if f["name"] == "images")
    # Unseen photos from the same camera: the image family (camera statistics included) holds.
    # The other families judge a 1-epoch model's outputs, which this test is not about.
    assert not images["drifted"], images
    tested = {row["key"] for row in images["tests"]}
    assert {"noise", "detail", "blockiness", "jpeg_quality", "colourfulness", "hue"} <= tested

    for shift, said in (
        ("noise=3", "images are noisier: noise level up"),
        ("jpeg=30", "files are compressed harder (lower JPEG quality): JPEG quality down"),
    ):
        shifted = tmp_path / shift.replace("=", "-")
        code, out, err = _main(
            monkeypatch, capsys, "drift", "simulate", str(unseen), "--shift", shift,
            "--out-dir", str(shifted),
        )  # fmt: skip
        assert code == 0, err
        code, out, err = _main(
            monkeypatch, capsys, "drift", "report", "--current", str(shifted),
            "--out-dir", str(tmp_path / "report"), "--fail-on-drift",
        )  # fmt: skip
        assert code == 1, out + err
        verdict = json.loads((tmp_path / "report" / "report.json").read_text())["verdict"]
        assert any(line.startswith(said) for line in verdict["what_drifted"]), verdict
        page = (tmp_path / "report" / "report.html").read_text()
        assert "What these statistics measure" in page and said.split(":")[0] in page
