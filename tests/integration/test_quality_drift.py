"""The drift row of the real-data quality benchmark runs end to end at a tiny size.

``benchmarks/quality_drift.py`` trains MobileNetV2 from its ImageNet file on crops of the
real photo pool (``scripts/real-data``), exports it and tests windows of the pool against the
bundle's reference. The figures at this size say little; what is checked is that the whole
path still runs and that shifts no detector could miss (half the resolution, 40 % brighter)
are flagged in every window.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "quality_drift.py"


@pytest.mark.slow
def test_drift_row_on_real_photos_at_a_tiny_size(real_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "rows.json"
    args = [
        "--real-data", str(real_data), "--trials", "3", "--n", "30", "--train", "40",
        "--val", "40", "--pool", "40", "--epochs", "1", "--image-size", "32",
        "--permutations", "50", "--shift", "none", "--shift", "resize=0.5",
        "--shift", "brightness=1.4", "--keep", str(tmp_path / "work"), "--out", str(out),
    ]  # fmt: skip
    result = subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        cwd=tmp_path,
        env={**os.environ, "MPLBACKEND": "Agg", "WANDB_MODE": "disabled"},
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "| none (false alarms) |" in result.stdout
    rows = {row["shift"]: row for row in json.loads(out.read_text())}
    assert list(rows) == ["none", "resize=0.5", "brightness=1.4"]
    assert all(row["trials"] == 3 and row["n"] == 30 for row in rows.values())
    assert rows["none"]["reference"] == 40  # the whole val split: the bundle's reference
    assert 0.0 <= rows["none"]["flagged"] <= 1.0
    assert rows["resize=0.5"]["flagged"] == 1.0
    assert rows["resize=0.5"]["images_share"] == 1.0  # the uploads' size is an image statistic
    assert rows["brightness=1.4"]["flagged"] == 1.0
    # The crops are one stream cut in order: train, val, then the pool.
    crops = tmp_path / "work" / "crops"
    assert len(list((crops / "pool").glob("*.png"))) == 40
    assert len(list((crops / "dataset" / "val").rglob("*.png"))) == 40
