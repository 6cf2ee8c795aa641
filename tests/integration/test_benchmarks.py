"""Every script in ``benchmarks/`` runs, at a tiny size, so none can rot unnoticed.

The figures they print are not checked here (timings do not belong in tests); what is
checked is that each script still runs against the current code end to end and prints its
comparison. A script added to ``benchmarks/`` without a row here fails
``test_every_benchmark_script_is_run``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
SMALL_PHOTOS = ["--width", "160", "--height", "120"]

# script -> (tiny arguments, a line the script prints when it has compared both sides)
RUNS: dict[str, tuple[list[str], str]] = {
    "bundle_load.py": (["--seconds", "0.05"], "ratio onnx.load / ours"),
    "loader.py": (
        ["--count", "16", *SMALL_PHOTOS, "--size", "32", "--batch", "8", "--epochs", "1",
         "--workers", "1"],
        "ratio:",
    ),
    "preprocess.py": (
        ["--count", "16", *SMALL_PHOTOS, "--size", "32", "--workers", "1"], "ratio:"
    ),
    "train.py": (
        ["--count", "16", *SMALL_PHOTOS, "--size", "32", "--batch", "8", "--epochs", "1",
         "--models", "mobilenet_v3_small", "--workers", "1", "--steps", "2", "--rounds", "1",
         "--demo-per-class", "6"],
        "visionops test acc",  # part 3, the last, ran to its end
    ),
    "anomaly.py": (
        ["--images", "8", "--size", "64", "--naive-patches", "400", "--naive-count", "10",
         "--threads", "1"],
        "the speed of eager",
    ),
    "export.py": (  # the ViT path: int8 of MatMul and Conv (ResNet-18 is the same code)
        ["--model", "timm:vit_tiny_patch16_224", "--size", "64", "--threads", "1",
         "--seconds", "0.1", "--min-calls", "2", "--epochs", "1"],
        "int8 / ORT fp32",
    ),
    "predict.py": (
        ["--size", "32", "--images", "16", "--big", "40", *SMALL_PHOTOS,
         "--in-process-seconds", "0.2", "--rounds", "1"],
        "ratio ray / local",
    ),
    "drift.py": (
        ["--model", "shufflenet_v2_x0_5", "--trials", "2", "--sizes", "30",
         "--permutations", "20", "--images-per-class", "50", "--epochs", "1",
         "--image-size", "32", "--pool-per-class", "12", "--naive-perms", "1",
         "--speed-reference", "100", "--speed-current", "30", "--reference-size", "30",
         "--camera-size", "30", "--camera-fa-size", "40", "--cost-repeats", "3",
         "--requests", "3", "--rounds", "1", "--sampling-reference", "40",
         "--sampling-window", "400"],
        "| 0.4 sd |",  # the last part (sampling) ran to its end
    ),
}  # fmt: skip
SERVE = [
    "--size", "64", "--reference-per-class", "10", "-c", "2", "-d", "1", "--ramp-up", "0.2",
    "--overload-concurrency", "4", "--overload-duration", "1", "--batch-sweep", "1",
    "--rounds", "1", "--threads-sweep", "1", "--naive-threads", "1", "--images", "4",
    *SMALL_PHOTOS, "--in-process-seconds", "0.3",
]  # fmt: skip
# serve.py and serve_profile.py: test_serve_then_its_profile (naive_server.py is the baseline
# serve.py starts); anomaly_vs_anomalib.py: test_benchmark_anomaly.py, without the baseline,
# since anomalib_patchcore.py runs under anomalib's own interpreter (a benchmark-only install);
# quality.py, quality_anomaly.py and quality_drift.py need the real-data cache:
# test_real_data.py, test_benchmark_quality_anomaly.py and test_quality_drift.py.
COVERED_ELSEWHERE = {
    "quality.py",
    "quality_anomaly.py",
    "quality_drift.py",
    "serve.py",
    "serve_profile.py",
    "naive_server.py",
    "anomaly_vs_anomalib.py",
    "anomalib_patchcore.py",
}


def _run(script: str, args: list[str], cwd: Path) -> str:
    env = {**os.environ, "MPLBACKEND": "Agg", "WANDB_MODE": "disabled"}
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert result.returncode == 0, (
        f"{script} failed:\n{result.stdout[-3000:]}{result.stderr[-3000:]}"
    )
    return result.stdout


def test_every_benchmark_script_is_run() -> None:
    scripts = {path.name for path in BENCHMARKS.glob("*.py")}
    assert scripts == set(RUNS) | COVERED_ELSEWHERE


@pytest.mark.slow
@pytest.mark.parametrize("script", sorted(RUNS))
def test_benchmark_runs_at_a_tiny_size(script: str, tmp_path: Path) -> None:
    args, comparison = RUNS[script]
    assert comparison in _run(script, args, tmp_path)


@pytest.mark.slow
def test_serve_then_its_profile(tmp_path: Path) -> None:
    out = _run("serve.py", ["--project", "p", *SERVE, "--upload-ab", "--isolation"], tmp_path)
    assert "best naive @ 2" in out  # the naive baseline server ran too
    assert "uploads on / off" in out  # and the local-log vs bucket-log comparison
    assert "while model a (same server) is saturated" in out  # and two models in one server
    profile = _run(
        "serve_profile.py", ["--project", "p", "-c", "2", "-d", "1", "--ramp-up", "0.2"], tmp_path
    )
    assert "functions on the event loop" in profile
