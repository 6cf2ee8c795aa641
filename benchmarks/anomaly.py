"""Anomaly detection speed: memory bank + coreset, coreset vs a naive loop, ONNX vs eager.

Part 1 — bank + coreset: ``--images`` (200) good carpet images of the embedded
``demo:anomaly`` generator at ``--size`` (224) px go through visionops' own path
(``PatchFeatureExtractor`` with random resnet18 weights, BatchNorm calibration, then
``build_memory_bank``: features into one preallocated block and greedy k-centre selection
of ``anomaly.coreset_ratio`` of the patches). Timed end to end, images already in memory.

Part 2 — coreset selection vs the naive loop on the same features (the first
``--naive-patches`` rows, ``--naive-count`` centres): ``coreset_indices`` folds the
distance to the newest centre into a running minimum (one pass per step);
``naive_coreset_indices`` recomputes every patch's distance to every chosen centre at
each step (what a direct transcription of the definition does). Both must pick the same
patches; the ratio of their times is printed.

Part 3 — latency at batch 1 of the model with the bank of part 1: PyTorch eager (uint8 in,
normalisation, trunk, chunked nearest-neighbour, heatmap) vs the ONNX graph visionops
exports (``ExportWrapper`` with the anomaly task + ``export_onnx``) in ONNX Runtime, same threads,
sampled in round-robin with ``visionops.export.timing.time_interleaved``.

Quality against anomalib's PatchCore on faint, thin defects (a different benchmark, in
``anomaly_vs_anomalib.py``): ``python benchmarks/anomaly.py --vs-anomalib
[--anomalib-python /work/anomalib-venv/bin/python] [--seeds 0 1 2]``.

Run: python benchmarks/anomaly.py
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def good_images(count: int, size: int, folder: Path) -> np.ndarray:
    """``count`` good demo carpet images of ``size`` px as ``(N, H, W, 3)`` uint8."""
    from PIL import Image

    from visionops.config import DemoSettings
    from visionops.data.synthetic import generate_demo

    generate_demo("demo:anomaly", folder, DemoSettings(images_per_class=count, image_size=size))
    files = sorted((folder / "carpet" / "train" / "good").glob("*.png"))[:count]
    return np.stack([np.asarray(Image.open(path).convert("RGB")) for path in files])


def main() -> None:
    if "--vs-anomalib" in sys.argv[1:]:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from anomaly_vs_anomalib import main as vs_anomalib

        vs_anomalib([arg for arg in sys.argv[1:] if arg != "--vs-anomalib"])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--vs-anomalib",
        action="store_true",
        help="measure quality against anomalib's PatchCore instead (--vs-anomalib --help)",
    )
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--naive-patches", type=int, default=20_000)
    parser.add_argument("--naive-count", type=int, default=400)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()

    import torch

    from visionops.anomaly.bank import build_memory_bank, plan_bank
    from visionops.anomaly.coreset import coreset_indices, naive_coreset_indices
    from visionops.anomaly.features import (
        PatchFeatureExtractor,
        calibrate_batchnorm,
        normalised_batches,
    )
    from visionops.anomaly.scoring import PatchCoreModel, sigma_for_size
    from visionops.config import load_settings
    from visionops.export.graph import ExportWrapper, export_onnx, graph_output_names
    from visionops.export.timing import time_interleaved
    from visionops.inference.runtime import ort_session
    from visionops.tasks import AnomalyTask

    torch.set_num_threads(args.threads)
    settings = load_settings(overrides=[f"model.name={args.model}"]).anomaly
    print(
        f"# {cpu_model()}, {os.cpu_count()} cores, {args.threads} threads, load"
        f" {' '.join(f'{v:.1f}' for v in os.getloadavg())}, torch {torch.__version__},"
        f" python {sys.version.split()[0]}"
    )
    with tempfile.TemporaryDirectory(prefix="visionops-bench-anomaly-") as scratch:
        images = good_images(args.images, args.size, Path(scratch))
    mean = (images / 255.0).mean(axis=(0, 1, 2)).tolist()
    std = (images / 255.0).std(axis=(0, 1, 2)).tolist()

    # ---- part 1: bank + coreset
    started = time.perf_counter()
    extractor = PatchFeatureExtractor.build(args.model, channels=3, layers=settings.layers)
    plan = plan_bank(
        extractor, images=len(images), image_size=args.size, channels=3, settings=settings
    )
    calibrate_batchnorm(extractor, list(normalised_batches(images[:64], mean, std, 32)))
    features_started = time.perf_counter()
    bank = build_memory_bank(
        extractor, normalised_batches(images, mean, std, 32), plan, settings=settings, seed=0
    )
    total = time.perf_counter() - started
    print(f"\n## bank + coreset ({plan.describe()})")
    print(
        f"total {total:.1f} s (calibration {features_started - started:.1f} s, features +"
        f" coreset {total - (features_started - started):.1f} s)"
    )

    # ---- part 2: coreset vs naive
    with torch.no_grad():
        sample = torch.cat(
            [
                extractor(batch).permute(0, 2, 3, 1).reshape(-1, plan.dim)
                for batch in normalised_batches(images[:32], mean, std, 16)
            ]
        )[: args.naive_patches]
    timings = {}
    picks = {}
    for name, function in (("visionops", coreset_indices), ("naive", naive_coreset_indices)):
        began = time.perf_counter()
        picks[name] = function(sample, args.naive_count, seed=0)
        timings[name] = time.perf_counter() - began
    same = picks["visionops"].tolist() == picks["naive"].tolist()
    print(f"\n## coreset selection: {args.naive_count} of {len(sample)} patches x {plan.dim}")
    print(
        f"naive {timings['naive']:.2f} s | visionops {timings['visionops']:.2f} s | ratio"
        f" {timings['naive'] / timings['visionops']:.1f}x | same picks: {same}"
    )

    # ---- part 3: ONNX vs eager at batch 1
    model = PatchCoreModel(
        extractor, bank, image_size=args.size, sigma=sigma_for_size(settings.sigma, args.size)
    )
    task = AnomalyTask()
    wrapper = ExportWrapper(model, task=task, mean=mean, std=std, layout="NCHW").eval()
    pixels = np.ascontiguousarray(images[:1].transpose(0, 3, 1, 2))
    with tempfile.TemporaryDirectory(prefix="visionops-bench-anomaly-") as scratch:
        path = Path(scratch) / "model.onnx"
        export_onnx(
            wrapper,
            path,
            image_size=args.size,
            channels=3,
            output_names=graph_output_names(task),
        )
        session = ort_session(path, threads=args.threads)
        tensor = torch.from_numpy(pixels)

        def eager() -> object:
            with torch.inference_mode():
                return wrapper(tensor)

        latency = time_interleaved(
            {"pytorch eager": eager, "onnxruntime": lambda: session.run(None, {"pixels": pixels})},
            min_seconds=3.0,
        )
    print(f"\n## latency at batch 1 ({args.size} px, bank {len(bank)} x {plan.dim})")
    for name, timing in latency.items():
        print(f"{name:>14}: p50 {timing.p50:.1f} ms, p95 {timing.p95:.1f} ms")
    ratio = latency["pytorch eager"].p50 / latency["onnxruntime"].p50
    print(f"onnxruntime is {ratio:.2f}x the speed of eager")


if __name__ == "__main__":
    main()
