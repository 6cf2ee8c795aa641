"""Batch prediction: ``visionops predict`` versus the bundle's in-process limit, in one run.

1. The bundle: serve.py's ResNet-18 at 224 px (``data fetch demo:shapes`` → ``preprocess`` →
   ``train --epochs 1`` → ``export --quantize int8``), or ``--project DIR`` holding one.
2. The images: ``--images`` photo-like JPEGs (preprocess.py's generator) on disk, and a folder
   of ``--big`` hard links to them (the same files, many names: a large job without a large
   disk).
3. The limit: serve.py's in-process pipeline (``load_image`` + ONNX Runtime, no I/O of
   results; batch 1 sequential and batch 8 with decoding threaded ahead) on the model
   ``predict`` runs by default, with ONNX Runtime's default threads and with 1 thread.
4. ``visionops predict`` (the real CLI, its own process, ``--out *.parquet``) on the images,
   with its default threads and with ``--threads 1``, each against the limit with the same
   threads: images/s as the command reports it (interpreter start excluded) and the
   process's peak RSS (``wait4``); then on the ``--big`` folder for the peak RSS at scale.
5. ``--engine ray`` (a local Ray on this machine) on the same images: images/s once Ray is up
   (the command reports it), and the wall time with Ray's start.

Run: python benchmarks/predict.py --images 2000 --big 20000
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from preprocess import photo
from serve import in_process, make_bundle


def write_images(folder: Path, count: int, width: int, height: int) -> list[bytes]:
    """``count`` photo-like JPEGs (quality 90) in ``folder``; their bytes."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    images = []
    for index in range(count):
        buffer = io.BytesIO()
        photo(rng, width, height).save(buffer, format="JPEG", quality=90)
        (folder / f"{index:06d}.jpg").write_bytes(buffer.getvalue())
        images.append(buffer.getvalue())
    return images


def link_images(source: Path, folder: Path, count: int) -> None:
    """``count`` hard links in ``folder``, cycling over the files of ``source``."""
    files = sorted(source.iterdir())
    folder.mkdir(parents=True)
    for index in range(count):
        os.link(files[index % len(files)], folder / f"{index:07d}.jpg")


def run_measured(bundle: Path, images: Path, out: Path, *extra: str) -> dict[str, Any]:
    """One ``visionops predict`` process: its JSON summary, wall time and peak RSS (MB).

    The RSS is the child's own (``wait4``), not the largest of every child so far, which is
    what ``RUSAGE_CHILDREN`` would give.
    """
    command = [sys.executable, "-m", "visionops", "predict", str(bundle), str(images),
               "--out", str(out), "--json", "-q", *extra]  # fmt: skip
    with tempfile.TemporaryFile() as stdout, tempfile.TemporaryFile() as stderr:
        started = time.perf_counter()
        process = subprocess.Popen(command, stdout=stdout, stderr=stderr)
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - started
        stdout.seek(0)
        stderr.seek(0)
        if process.returncode != 0:
            raise SystemExit(f"predict failed:\n{stderr.read().decode()[-3000:]}")
        text = stdout.read().decode()
        try:
            result: dict[str, Any] = json.loads(text)
        except json.JSONDecodeError:
            raise SystemExit(f"predict printed no JSON result:\n{text[:2000]}") from None
    result["wall_s"] = wall
    result["peak_rss_mb"] = usage.ru_maxrss / 1024  # kilobytes on Linux
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", type=Path, help="Folder with (or for) the bundle's run.")
    parser.add_argument("--size", type=int, default=224, help="The bundle's input side (px).")
    parser.add_argument("--images", type=int, default=2000, help="Distinct JPEGs.")
    parser.add_argument("--big", type=int, default=20000, help="Images of the RSS-at-scale run.")
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--in-process-seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=2, help="Interleaved rounds.")
    parser.add_argument("--skip-ray", action="store_true", help="Leave out --engine ray.")
    args = parser.parse_args()

    print(
        f"machine: {os.cpu_count()} cores, {platform.processor() or platform.machine()},"
        f" Python {platform.python_version()}, load average {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    scratch = Path(tempfile.mkdtemp(prefix="visionops-predict-bench-"))
    try:
        project = args.project or scratch / "project"
        print(f"bundle: ResNet-18 {args.size} px in {project}", flush=True)
        bundle = make_bundle(project, args.size, reference_per_class=10)
        from visionops.inference.bundle import load_bundle

        meta = load_bundle(bundle).meta
        model = meta.int8_file or "model.onnx"  # what predict runs by default (auto)
        images = write_images(scratch / "images", args.images, args.width, args.height)
        link_images(scratch / "images", scratch / "big", args.big)
        print(f"images: {args.images} JPEGs {args.width}x{args.height} (+ {args.big} links)")

        # Rounds interleave the limit and the command: on a shared machine the load moves
        # between minutes, and each ratio compares figures taken minutes apart at most.
        ratios: dict[str, list[float]] = {"default threads": [], "--threads 1": []}
        local: dict[str, Any] = {}
        for round_number in range(1, args.rounds + 1):
            print(f"round {round_number}: limit", flush=True)
            limits = in_process(bundle, model, images[:64], args.in_process_seconds)
            same = {  # the pipelines with predict's ONNX Runtime threads: default, and 1
                "default threads": max(
                    v for k, v in limits.items() if k.endswith("default_threads")
                ),
                "--threads 1": max(v for k, v in limits.items() if k.endswith("1_thread")),
            }
            runs = {
                "default threads": run_measured(
                    bundle, scratch / "images", scratch / f"local{round_number}.parquet"
                ),
                "--threads 1": run_measured(
                    bundle,
                    scratch / "images",
                    scratch / f"one{round_number}.parquet",
                    "--threads",
                    "1",
                ),
            }
            local = runs["default threads"]
            for label, run in runs.items():
                ratio = run["images_per_s"] / same[label]
                ratios[label].append(ratio)
                print(
                    f"  {label:<16} limit {same[label]:7.1f} images/s, visionops predict"
                    f" {run['images_per_s']:7.1f} images/s ({run['wall_s']:.1f} s wall with"
                    f" start-up): ratio {ratio:.2f}x",
                    flush=True,
                )
        ray: dict[str, Any] | None = None
        if not args.skip_ray:  # right after the last round's local run, on the same files
            ray = run_measured(
                bundle, scratch / "images", scratch / "ray.parquet", "--engine", "ray"
            )
        big = run_measured(bundle, scratch / "big", scratch / "big.parquet")
        print(f"\n## predict, {args.images} images ({local['precision']}, {model})")
        for label, values in ratios.items():
            shown = " / ".join(f"{v:.2f}" for v in values)
            print(
                f"  ratio predict / in-process limit, {label}: {shown}"
                f" (mean {np.mean(values):.2f}x, goal >= 0.9x)"
            )
        print(
            f"  peak RSS: {local['peak_rss_mb']:.0f} MB at {args.images} images,"
            f" {big['peak_rss_mb']:.0f} MB at {args.big}"
            f" ({big['images_per_s']:.1f} images/s):"
            f" +{big['peak_rss_mb'] - local['peak_rss_mb']:.0f} MB (goal <= +100 MB)"
        )
        if ray is not None:
            print(
                f"  --engine ray: {ray['images_per_s']:.1f} images/s once Ray is up"
                f" ({ray['wall_s']:.1f} s wall with Ray's start); --engine local (last round):"
                f" {local['images_per_s']:.1f} images/s"
            )
            print(
                f"  ratio ray / local: {ray['images_per_s'] / local['images_per_s']:.2f}x"
                " (goal >= 0.7x)"
            )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
