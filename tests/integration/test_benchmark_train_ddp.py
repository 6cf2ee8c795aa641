"""``benchmarks/train.py --ddp`` runs at a tiny size (so it cannot rot); no timing asserted."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_ddp_benchmark_prints_the_ratio_and_the_allreduce_time() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "train.py",
            "--ddp",
            *("--count", "60", "--width", "128", "--height", "96", "--size", "32"),
            *("--batch", "16", "--epochs", "1", "--models", "mobilenet_v3_small"),
        ],
        cwd=ROOT / "benchmarks",
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src"), "NO_COLOR": "1"},
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    row = re.search(
        r"mobilenet_v3_small\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)x\s+([\d.]+) ms/step", result.stdout
    )
    assert row is not None, result.stdout[-2000:]
    single, double, ratio, _ = (float(value) for value in row.groups())
    assert single > 0 and double > 0
    # The times are printed to 3 decimals and the ratio to 2: allow exactly that rounding.
    rounding = 0.005 + (double / single) * (0.0005 / single + 0.0005 / double)
    assert ratio == pytest.approx(double / single, abs=rounding)
