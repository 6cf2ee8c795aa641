"""``benchmarks/quality_anomaly.py`` at a tiny size on one real texture set (it cannot rot)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ANOMALIB_PYTHON = Path(
    os.environ.get("VISIONOPS_ANOMALIB_PYTHON", "/work/anomalib-venv/bin/python")
)


@pytest.fixture
def textures(real_data: Path) -> Path:
    """The real-data cache holding the texture sets."""
    return real_data


def _run(real_data: Path, tmp_path: Path, anomalib_python: Path) -> tuple[str, list[dict]]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "WANDB_MODE": "disabled"}
    out = tmp_path / "rows.json"
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "quality_anomaly.py"),
            "--real-data",
            str(real_data),
            "--sets",
            "wood",
            "--size",
            "64",
            "--limit",
            "6",
            "--anomalib-python",
            str(anomalib_python),
            "--keep",
            str(tmp_path / "work"),
            "--out",
            str(out),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return done.stdout, json.loads(out.read_text())


def _check_side(result: dict) -> None:
    assert all(0.0 <= result[name] <= 1.0 for name in ("image_auroc", "pixel_auroc", "aupro"))
    assert result["fit_seconds"] > 0
    assert set(result["image_auroc_by_defect"]) == {"patch", "scratch", "stain"}


def test_visionops_side_runs_without_anomalib_and_says_how_to_add_it(
    textures: Path, tmp_path: Path
) -> None:
    stdout, rows = _run(textures, tmp_path, tmp_path / "no-such-python")
    [row] = rows
    # 6 good + 6 of each of the three painted defects, every one scored
    assert row["set"] == "wood" and row["test_images"] == 24
    _check_side(row["visionops"])
    assert row["visionops"]["fit_seconds"] <= row["visionops"]["command_seconds"]
    assert "anomalib" not in row
    assert "| wood | visionops |" in stdout
    assert "anomalib is not available" in stdout and "pip install" in stdout


@pytest.mark.skipif(not ANOMALIB_PYTHON.exists(), reason="anomalib's interpreter is absent")
def test_both_sides_score_the_same_images_with_the_same_pretrained_trunk(
    textures: Path, tmp_path: Path
) -> None:
    stdout, rows = _run(textures, tmp_path, ANOMALIB_PYTHON)
    [row] = rows
    _check_side(row["visionops"])
    _check_side(row["anomalib"])
    # mobilenetv2_100 at stride 8 + 16 (32 + 96 channels) on a 64 px input: an 8x8 grid
    assert row["anomalib"]["memory_bank"][1] == 128
    assert "visionops fit" in stdout and "x faster" in stdout
