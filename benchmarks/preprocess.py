"""Preprocess throughput: ``visionops data preprocess`` versus a naive single-process loop.

Both read the same generated JPEGs (a class-folder dataset with train/validation/test
folders, like the fruits-and-vegetables set). The naive loop is what the hand-built systems
did: PIL open → convert("RGB") → resize → ``np.save`` one file per image, in one process.
visionops runs the real preprocess (``prepare_dataset``, the function behind the CLI, or the
CLI itself with ``--cli``): content fingerprint, layout detection, JPEG draft decoding,
resize, a process pool writing into one memory-mapped array, splits, manifest.

Run: python benchmarks/preprocess.py --count 2000 --width 640 --height 480 --size 64
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

CLASSES = ("apple", "banana", "carrot", "grape", "kiwi", "lemon", "onion", "pear")
SPLITS = (("train", 0.7), ("validation", 0.15), ("test", 0.15))


def photo(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """One photo-like image: smooth colour fields and six blurred discs."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    a, b, c = rng.uniform(0, 255, 3)
    base = np.stack(
        [
            a + 60 * np.sin(xx / rng.uniform(40, 160)),
            b + 60 * np.cos(yy / rng.uniform(40, 160)),
            c + 40 * np.sin((xx + yy) / rng.uniform(60, 200)),
        ],
        axis=-1,
    )
    image = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(6):
        x0, y0 = rng.uniform(0, width), rng.uniform(0, height)
        r = rng.uniform(20, min(width, height) / 3)
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        draw.ellipse((x0 - r, y0 - r, x0 + r, y0 + r), fill=colour)
    return image.filter(ImageFilter.GaussianBlur(1.5))


def generate_images(root: Path, count: int, width: int, height: int, seed: int = 0) -> Path:
    """Write ``count`` photo-like JPEGs into ``root/<split>/<class>/``; return ``root``."""
    rng = np.random.default_rng(seed)
    for index in range(count):
        name = CLASSES[index % len(CLASSES)]
        position = (index // len(CLASSES)) / max(1, count // len(CLASSES))
        split = next(
            s
            for s, edge in zip(("train", "validation", "test"), (0.7, 0.85, 1.01), strict=True)
            if position < edge
        )
        folder = root / split / name
        folder.mkdir(parents=True, exist_ok=True)
        photo(rng, width, height).save(folder / f"{name}_{index:05d}.jpg", quality=90)
    return root


def image_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.jpg"))


def naive(files: list[Path], out: Path, size: int) -> float:
    """The hand-built way: one process, full decode, resize, one .npy per image."""
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    for index, path in enumerate(files):
        with Image.open(path) as image:
            pixels = np.asarray(image.convert("RGB").resize((size, size), Image.BILINEAR))
        np.save(out / f"{index}.npy", pixels)
    return time.perf_counter() - started


def visionops_api(raw: Path, prepared_root: Path, size: int, workers: int) -> float:
    from visionops.config import Settings
    from visionops.data.preprocess import prepare_dataset

    settings = Settings.model_validate(
        {"data": {"prepared_root": str(prepared_root), "image_size": size, "workers": workers}}
    )
    started = time.perf_counter()
    result = prepare_dataset(raw, settings, force=True)
    seconds = time.perf_counter() - started
    assert result.manifest.counts["rejected"] == 0, result.manifest.counts
    return seconds


def visionops_cli(raw: Path, prepared_root: Path, size: int, workers: int) -> float:
    command = [
        sys.executable, "-m", "visionops", "data", "preprocess", str(raw), "--size", str(size),
        "--workers", str(workers), "--force", "-q", f"data.prepared_root={prepared_root}",
    ]  # fmt: skip
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=2000, help="images to generate")
    parser.add_argument("--width", type=int, default=640, help="generated image width")
    parser.add_argument("--height", type=int, default=480, help="generated image height")
    parser.add_argument("--size", type=int, default=64, help="prepared image side")
    parser.add_argument("--workers", type=int, default=0, help="visionops processes; 0 = cores")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each; the best counts")
    parser.add_argument("--cli", action="store_true", help="time the real CLI (subprocess)")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="visionops-bench-"))
    try:
        print(f"generating {args.count} {args.width}x{args.height} JPEGs in {workdir} ...")
        raw = generate_images(workdir / "raw" / "bench", args.count, args.width, args.height)
        files = image_files(raw)
        megabytes = sum(p.stat().st_size for p in files) / 1e6
        for path in files:  # both methods start from a warm page cache
            path.read_bytes()
        run = visionops_cli if args.cli else visionops_api
        naive_s = min(naive(files, workdir / f"naive-{i}", args.size) for i in range(args.repeat))
        ours_s = min(
            run(raw, workdir / "prepared", args.size, args.workers) for i in range(args.repeat)
        )
        naive_rate, ours_rate = len(files) / naive_s, len(files) / ours_s
        cores = os.cpu_count()
        label = "visionops data preprocess (CLI)" if args.cli else "visionops prepare_dataset"
        print(
            f"\n{len(files)} JPEGs, {megabytes:.0f} MB, {args.width}x{args.height} → {args.size} px"
        )
        print(f"machine: {cores} cores, {cpu_model()}, python {platform.python_version()}")
        print(f"{'method':<40}{'seconds':>10}{'images/s':>12}")
        print(f"{'naive loop (PIL + np.save, 1 process)':<40}{naive_s:>10.2f}{naive_rate:>12.0f}")
        print(f"{label:<40}{ours_s:>10.2f}{ours_rate:>12.0f}")
        print(f"ratio: {ours_rate / naive_rate:.2f}x")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
