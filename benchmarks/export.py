"""Export speed: PyTorch eager vs ONNX Runtime fp32 vs ONNX Runtime int8 on the CPU.

Part 1 — ``--model`` (ResNet-18 by default; ``timm:vit_tiny_patch16_224`` for a ViT-Tiny, whose
int8 graph quantises its MatMuls as well as its Conv) at 224 px with random weights (nothing is
downloaded), 1000 classes,
exported with visionops' own path (``ExportWrapper`` + ``export_onnx``: uint8 input,
normalisation and softmax inside the graph) and quantised with ``quantize_int8`` (static
QDQ, calibrated on synthetic photo-like images). All three engines run the same
computation (uint8 pixels → probabilities + embedding) with the same number of threads.
Latency at batch 1 is sampled in round-robin (``visionops.export.timing.time_interleaved``:
each round times every engine once), so load from other processes hits every engine alike;
throughput at batch 1 is 1000 / median latency.

Part 2 — the int8 accuracy cost on the demo task: a real ``visionops train`` run on the
embedded ``demo:shapes`` data (CPU, a few epochs), then ``visionops export --quantize int8``
(its test-split accuracy for fp32 and int8, the refusal rule and the speed-up at the
trained size), with the same ``--model``. ``--run PATH`` uses an existing run instead;
``--skip-demo`` skips it.

Run: python benchmarks/export.py --threads 1 2
     python benchmarks/export.py --model timm:vit_tiny_patch16_224
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def load_average() -> str:
    try:
        return " ".join(f"{v:.1f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def photo_like(count: int, size: int, seed: int = 0) -> np.ndarray:
    """Smooth gradients with blobs: activation ranges closer to photos than uniform noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    images = np.empty((count, size, size, 3), dtype=np.uint8)
    for index in range(count):
        base = np.stack(
            [
                rng.uniform(40, 200) + 50 * np.sin(xx / rng.uniform(10, 60)),
                rng.uniform(40, 200) + 50 * np.cos(yy / rng.uniform(10, 60)),
                rng.uniform(40, 200) + 40 * np.sin((xx + yy) / rng.uniform(20, 80)),
            ],
            axis=-1,
        )
        for _ in range(4):
            cy, cx = rng.uniform(0, size, 2)
            r = rng.uniform(size / 12, size / 4)
            inside = (yy - cy) ** 2 + (xx - cx) ** 2 < r**2
            base[inside] = rng.uniform(0, 255, 3)
        images[index] = np.clip(base + rng.normal(0, 6, base.shape), 0, 255).astype(np.uint8)
    return images


def model_part(
    name: str, size: int, threads: list[int], seconds: float, min_calls: int
) -> dict[str, Any]:
    import onnxruntime as ort
    import torch

    from visionops.export.graph import ExportWrapper, export_onnx
    from visionops.export.quantize import ATTENTION_INT8_OPS, quantize_int8
    from visionops.export.timing import time_interleaved
    from visionops.models import IMAGENET_MEAN, IMAGENET_STD, build_model, is_vit
    from visionops.tasks import ClassificationTask

    torch.manual_seed(0)
    model = build_model(name, num_outputs=1000, image_size=size).eval()
    task = ClassificationTask([f"class{i}" for i in range(1000)])
    wrapper = ExportWrapper(model, task=task, mean=IMAGENET_MEAN, std=IMAGENET_STD).eval()
    results: dict[str, Any] = {"model": name, "size": size, "threads": {}}
    with tempfile.TemporaryDirectory(prefix="visionops-bench-export-") as scratch:
        fp32_path, int8_path = Path(scratch) / "model.onnx", Path(scratch) / "model.int8.onnx"
        started = time.perf_counter()
        export_onnx(wrapper, fp32_path, image_size=size, channels=3)
        results["export_seconds"] = round(time.perf_counter() - started, 1)
        calibration = photo_like(64, size)
        started = time.perf_counter()
        # What `visionops export --quantize int8` picks for a classifier (export.quantize).
        op_types = ATTENTION_INT8_OPS if is_vit(model.backbone) else None
        quantize_int8(fp32_path, int8_path, calibration, layout="NCHW", op_types=op_types)
        results["int8_ops"] = list(op_types) if op_types else "all"
        results["quantize_seconds"] = round(time.perf_counter() - started, 1)
        results["size_mb"] = {
            "fp32": round(fp32_path.stat().st_size / 2**20, 1),
            "int8": round(int8_path.stat().st_size / 2**20, 1),
        }
        sample = np.ascontiguousarray(photo_like(1, size, seed=1).transpose(0, 3, 1, 2))
        tensor = torch.from_numpy(sample)
        feed = {"pixels": sample}
        for count in threads:
            torch.set_num_threads(count)
            options = ort.SessionOptions()
            options.intra_op_num_threads = count
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            fp32 = ort.InferenceSession(str(fp32_path), options, providers=["CPUExecutionProvider"])
            int8 = ort.InferenceSession(str(int8_path), options, providers=["CPUExecutionProvider"])

            def eager(tensor: torch.Tensor = tensor) -> object:
                with torch.inference_mode():
                    return wrapper(tensor)

            load_before = load_average()
            timings = time_interleaved(
                {
                    "pytorch eager": eager,
                    "onnxruntime fp32": lambda fp32=fp32: fp32.run(None, feed),
                    "onnxruntime int8": lambda int8=int8: int8.run(None, feed),
                },
                warmup=5,
                min_calls=min_calls,
                min_seconds=seconds,
            )
            p50 = {name: timing.p50 for name, timing in timings.items()}
            p95 = {name: timing.p95 for name, timing in timings.items()}
            results["threads"][count] = {
                "load_average": f"{load_before} → {load_average()}",
                "calls": len(timings["pytorch eager"].samples_ms),
                "p50_ms": p50,
                "p95_ms": p95,
                "images_per_s": {name: 1000.0 / value for name, value in p50.items()},
                "ort_fp32_vs_eager": p50["pytorch eager"] / p50["onnxruntime fp32"],
                "int8_vs_ort_fp32": p50["onnxruntime fp32"] / p50["onnxruntime int8"],
            }
    return results


def demo_part(run: str | None, epochs: int, keep: Path | None, model: str) -> dict[str, Any]:
    from visionops.config import load_settings
    from visionops.export.stage import export_run
    from visionops.train import train

    workdir = Path(tempfile.mkdtemp(prefix="visionops-bench-demo-")) if keep is None else keep
    try:
        overrides = [
            f"runs_root={workdir / 'runs'}",
            f"data.raw_root={workdir / 'data' / 'raw'}",
            f"data.prepared_root={workdir / 'data' / 'prepared'}",
            "device=cpu",
            f"model.name={model}",
            f"train.epochs={epochs}",
            "tracking.mode=disabled",
        ]
        settings = load_settings(overrides=overrides, cwd=workdir)
        started = time.perf_counter()
        if run is None:
            trained = train(settings, "demo:shapes", name="demo-shapes")
            run_dir = trained.run_dir
            train_seconds = round(time.perf_counter() - started, 1)
        else:
            run_dir = Path(run)
            train_seconds = None
        result = export_run(settings, run_dir, quantize="int8", force=True)
        quantized = result.quantized
        if quantized is None:
            raise SystemExit("export kept no int8 record — this benchmark needs --quantize int8")
        return {
            "run": str(run_dir),
            "train_seconds": train_seconds,
            "epochs": epochs if run is None else None,
            "image_size": result.meta.input.size,
            "metric": quantized.metric,
            "split": quantized.split,
            "images": quantized.images,
            "fp32": quantized.fp32,
            "int8": quantized.int8,
            "drop_pp": None if quantized.drop is None else 100 * quantized.drop,
            "accepted": quantized.accepted,
            "reason": quantized.reason,
            "speedup_batch1": quantized.speedup,
            "latency_ms_batch1": quantized.latency_ms_batch1,
            "parity_max_abs_diff": result.parity.max_abs_diff,
        }
    finally:
        if keep is None:
            shutil.rmtree(workdir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet18", help="model.name of both parts.")
    parser.add_argument("--size", type=int, default=224, help="Part 1 input side (px).")
    parser.add_argument(
        "--threads",
        type=int,
        nargs="+",
        default=[os.cpu_count() or 1],
        help="Thread counts to measure (every engine uses the same). Default: all cores.",
    )
    parser.add_argument(
        "--seconds", type=float, default=10.0, help="Least time per engine and thread count."
    )
    parser.add_argument("--min-calls", type=int, default=30, help="Fewest timed calls each.")
    parser.add_argument("--epochs", type=int, default=8, help="Demo training epochs.")
    parser.add_argument("--run", help="Use this trained run for part 2 instead of training.")
    parser.add_argument("--skip-demo", action="store_true", help="Only part 1.")
    parser.add_argument("--keep", type=Path, help="Keep the demo project in this folder.")
    parser.add_argument("--json", action="store_true", help="Print the results as JSON.")
    args = parser.parse_args()

    import onnxruntime
    import torch
    from loguru import logger

    logger.remove()
    logger.add(sys.stderr, level="INFO")
    machine = (
        f"{os.cpu_count()} cores, {cpu_model()}, python {platform.python_version()},"
        f" torch {torch.__version__}, onnxruntime {onnxruntime.__version__}"
    )
    print(f"machine: {machine}; load average {load_average()}", file=sys.stderr)
    report: dict[str, Any] = {"machine": machine}
    report["model"] = model_part(args.model, args.size, args.threads, args.seconds, args.min_calls)
    if not args.skip_demo:
        report["demo"] = demo_part(args.run, args.epochs, args.keep, args.model)
    if args.json:
        print(json.dumps(report, indent=2, default=str))
        return

    part = report["model"]
    print(
        f"\n{part['model']} {part['size']}px, random weights, batch 1 (export"
        f" {part['export_seconds']}s, quantise {part['quantize_seconds']}s; fp32"
        f" {part['size_mb']['fp32']} MB, int8 {part['size_mb']['int8']} MB, int8 ops"
        f" {part['int8_ops']})"
    )
    print(f"{'threads':>7} {'engine':<18}{'p50 ms':>9}{'p95 ms':>9}{'img/s':>9}")
    for count, row in part["threads"].items():
        for engine in row["p50_ms"]:
            print(
                f"{count:>7} {engine:<18}{row['p50_ms'][engine]:>9.2f}"
                f"{row['p95_ms'][engine]:>9.2f}{row['images_per_s'][engine]:>9.1f}"
            )
        print(
            f"{'':>7} ORT fp32 / eager: {row['ort_fp32_vs_eager']:.2f}x   int8 / ORT fp32:"
            f" {row['int8_vs_ort_fp32']:.2f}x   (load {row['load_average']})"
        )
    if "demo" in report:
        demo = report["demo"]
        print(
            f"\ndemo:shapes, {args.model} ({demo['image_size']}px, {demo['epochs']} epochs,"
            f" trained in {demo['train_seconds']}s): {demo['metric']} on {demo['images']}"
            f" {demo['split']} images fp32 {demo['fp32']:.4f} → int8 {demo['int8']:.4f}"
            f" (drop {demo['drop_pp']:.2f} pp),"
            f" int8 {'accepted' if demo['accepted'] else 'refused'},"
            f" {demo['speedup_batch1']}x faster at batch 1"
        )
        if demo["reason"]:
            print(f"reason: {demo['reason']}")


if __name__ == "__main__":
    main()
