"""``benchmarks/anomaly.py --vs-anomalib`` at a tiny size, without anomalib (it cannot rot)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_vs_anomalib_runs_the_visionops_side_and_says_how_to_add_the_baseline(
    tmp_path: Path,
) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "WANDB_MODE": "disabled"}
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "anomaly.py"),
            "--vs-anomalib",
            "--anomalib-python",
            str(tmp_path / "no-such-python"),
            "--train-images",
            "6",
            "--source-size",
            "64",
            "--size",
            "64",
            "--seeds",
            "0",
            "--keep",
            str(tmp_path / "work"),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    # One visionops row per seed, scored on every test image (2 good + 6 faint threads).
    row = re.search(
        r"^\s+0\s+visionops\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+\(([\d.]+)\)$",
        done.stdout,
        re.MULTILINE,
    )
    assert row is not None, done.stdout
    assert all(0.0 <= float(value) <= 1.0 for value in row.groups()[:3])
    # train's own time is part of the whole command's
    assert 0 < float(row.group(4)) <= float(row.group(5))
    assert re.search(r"\(\d+ test images\)", done.stdout), done.stdout
    assert "anomalib is not available" in done.stdout and "pip install" in done.stdout
