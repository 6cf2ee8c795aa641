"""Anomaly quality: visionops vs anomalib's PatchCore on the same faint-defect folder.

``python benchmarks/anomaly.py --vs-anomalib`` lands here. One ``demo:anomaly`` folder with
``data.demo.defects=faint`` (thin, faint threads; ``--defects coarse`` for the holes,
scratches and stains) is generated once; then, for each ``--seeds`` seed, both tools fit on
its ``train/good`` images and score every image of its ``test/`` split:

- **visionops**: the CLI, as a user runs it: ``data preprocess`` (``--size`` px) once, then
  per seed ``train`` (``train.seed``) and ``eval --split val`` + ``eval --split test``
  (visionops divides the MVTec test split into val and test; together they are the whole
  split). Fit time = ``train``'s own wall time (``seconds`` of its ``--json`` answer:
  features, BatchNorm calibration, coreset, threshold, checkpoint, run folder); the
  command's wall time with interpreter start-up and imports is printed beside it.
- **anomalib**: ``benchmarks/anomalib_patchcore.py`` under ``--anomalib-python`` (anomalib
  2.7, ``Engine.fit`` then ``Engine.test``; fit time = ``Engine.fit``, imports excluded).

Same choices on both sides: resnet18 with random initialisation (nothing downloaded), layers
layer2 + layer3, ``--coreset-ratio``, ``--size`` px, CPU. Both sides' raw scores and maps are
scored here by ONE implementation (``visionops.anomaly.metrics``: image AUROC, pixel AUROC,
AUPRO with 8-connected regions up to FPR 0.3) against ONE ground truth (the source masks,
any non-zero pixel a defect, resized nearest to ``--size``), because the tools' own AUPRO
code labels regions differently. A table per seed, then mean ± standard deviation and the
fit-time ratio.

Without anomalib (``--anomalib-python`` missing or unable to import it) the visionops side
still runs and the script prints how to install the baseline.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_ANOMALIB_PYTHON = "/work/anomalib-venv/bin/python"
RUNNER = Path(__file__).with_name("anomalib_patchcore.py")
METRICS = ("image_auroc", "pixel_auroc", "aupro")
INSTALL = """anomalib is not available, so only visionops ran. To add the baseline (a benchmark-only
dependency, never installed into visionops' environment):

    python3.11 -m venv /work/anomalib-venv
    echo "$(python -c 'import site; print(site.getsitepackages()[0])')" \\
        > /work/anomalib-venv/lib/python3.11/site-packages/_visionops_torch.pth
    printf 'torch==2.15.0\\ntorchvision==0.29.2\\n' > constraints.txt
    /work/anomalib-venv/bin/pip install -c constraints.txt anomalib==2.7.0

then rerun with --anomalib-python /work/anomalib-venv/bin/python."""


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="benchmarks/anomaly.py --vs-anomalib", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--anomalib-python", default=DEFAULT_ANOMALIB_PYTHON)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--defects", choices=("faint", "coarse"), default="faint")
    parser.add_argument("--train-images", type=int, default=40, help="good training images")
    parser.add_argument("--source-size", type=int, default=256, help="generated image side")
    parser.add_argument("--size", type=int, default=224, help="image side both tools use")
    parser.add_argument("--coreset-ratio", type=float, default=0.1)
    parser.add_argument("--threads", type=int, default=1, help="torch threads, each side")
    parser.add_argument("--keep", type=Path, default=None, help="work here, keep the files")
    return parser.parse_args(argv)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def ground_truth(category: Path, size: int) -> dict[str, tuple[int, np.ndarray]]:
    """``test/<kind>/<file>`` → (label, mask at ``size``) for every test image."""
    from PIL import Image

    from visionops.data.decoding import resize_mask

    truth: dict[str, tuple[int, np.ndarray]] = {}
    for image in sorted((category / "test").glob("*/*.png")):
        kind = image.parent.name
        key = f"test/{kind}/{image.name}"
        if kind == "good":
            truth[key] = (0, np.zeros((size, size), dtype=bool))
            continue
        mask = Image.open(category / "ground_truth" / kind / f"{image.stem}_mask.png").convert("L")
        truth[key] = (1, resize_mask(mask, size) > 0)
    return truth


def score(
    truth: dict[str, tuple[int, np.ndarray]], outputs: dict[str, tuple[float, np.ndarray]]
) -> dict[str, float]:
    """The three metrics of one tool's outputs, on every ground-truth image."""
    from visionops.anomaly.metrics import aupro, image_auroc, pixel_auroc

    missing = sorted(set(truth) - set(outputs))
    if missing:
        raise SystemExit(f"no output for {len(missing)} test images, e.g. {missing[0]}")
    keys = sorted(truth)
    labels = np.array([truth[key][0] for key in keys])
    masks = np.stack([truth[key][1] for key in keys])
    scores = np.array([outputs[key][0] for key in keys], dtype=np.float64)
    maps = np.stack([np.asarray(outputs[key][1], dtype=np.float32) for key in keys])
    return {
        "image_auroc": image_auroc(scores, labels),
        "pixel_auroc": pixel_auroc(maps, masks),
        "aupro": aupro(maps, masks),
    }


def visionops(*args: str, cwd: Path, threads: int) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "WANDB_MODE": "disabled"}
    done = subprocess.run(
        [sys.executable, "-m", "visionops", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"visionops {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout


def run_visionops(
    project: Path, prepared: Path, seed: int, args: argparse.Namespace
) -> tuple[float, float, dict[str, tuple[float, np.ndarray]]]:
    """Fit seconds, command seconds and ``test/<kind>/<file>`` → (score, heatmap) of a seed."""
    from visionops.data.prepared import PreparedDataset

    started = time.perf_counter()
    out = visionops(
        "train",
        str(prepared),
        "--json",
        "--device",
        "cpu",
        "--model",
        "resnet18",
        f"train.seed={seed}",
        "anomaly.layers=[layer2,layer3]",
        f"anomaly.coreset_ratio={args.coreset_ratio}",
        cwd=project,
        threads=args.threads,
    )
    command_seconds = time.perf_counter() - started
    answer = json.loads(out)
    run_dir = project / answer["run_dir"]
    items = PreparedDataset.open(prepared).read_items()
    outputs: dict[str, tuple[float, np.ndarray]] = {}
    for split in ("val", "test"):
        visionops("eval", str(run_dir), "--split", split, cwd=project, threads=args.threads)
        with np.load(run_dir / "eval" / "predictions.npz") as saved:
            for index, value, heatmap in zip(
                saved["indices"],
                saved["outputs"].reshape(len(saved["indices"]), -1)[:, 0],
                saved["heatmaps"],
                strict=True,
            ):
                path = Path(items[int(index)].path)
                key = "/".join(path.parts[-3:])
                outputs[key] = (float(value), np.asarray(heatmap, dtype=np.float32))
    return float(answer["seconds"]), command_seconds, outputs


def anomalib_available(python: str) -> bool:
    if not Path(python).exists():
        return False
    probe = subprocess.run(
        [python, "-c", "import anomalib"], capture_output=True, text=True, check=False
    )
    return probe.returncode == 0


def run_anomalib(
    root: Path, scratch: Path, seed: int, args: argparse.Namespace
) -> tuple[float, dict[str, tuple[float, np.ndarray]], dict[str, Any]]:
    """Fit seconds, ``test/<kind>/<file>`` → (score, map), and the runner's JSON line."""
    save = scratch / f"anomalib-{seed}.npz"
    # anomalib's coreset loop fragments glibc's heap without a fixed mmap threshold (20 GB).
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "1048576"}
    done = subprocess.run(
        [
            args.anomalib_python,
            str(RUNNER),
            str(root),
            "--category",
            "carpet",
            "--image-size",
            str(args.size),
            "--backbone",
            "resnet18",
            "--layers",
            "layer2",
            "layer3",
            "--coreset-ratio",
            str(args.coreset_ratio),
            "--seed",
            str(seed),
            "--threads",
            str(args.threads),
            "--save",
            str(save),
        ],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"anomalib run failed (seed {seed}):\n{done.stderr[-4000:]}")
    record = json.loads(done.stdout.strip().splitlines()[-1])
    with np.load(save) as saved:
        outputs = {
            str(path): (float(value), np.asarray(amap, dtype=np.float32))
            for path, value, amap in zip(
                saved["paths"], saved["scores"], saved["maps"], strict=True
            )
        }
    return float(record["fit_seconds"]), outputs, record


def spread(values: list[float]) -> str:
    mean = statistics.fmean(values)
    deviation = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{mean:.3f} ± {deviation:.3f}"


def main(argv: list[str]) -> None:
    args = parse(argv)
    import torch

    from visionops.config import DemoSettings
    from visionops.data.synthetic import generate_demo

    with_anomalib = anomalib_available(args.anomalib_python)
    print(
        f"# {cpu_model()}, {os.cpu_count()} cores, {args.threads} thread(s) per side, load"
        f" {' '.join(f'{v:.1f}' for v in os.getloadavg())}, torch {torch.__version__},"
        f" python {sys.version.split()[0]}"
    )
    with tempfile.TemporaryDirectory(prefix="visionops-bench-quality-") as temporary:
        scratch = args.keep or Path(temporary)
        scratch.mkdir(parents=True, exist_ok=True)
        root = scratch / "raw"
        generate_demo(
            "demo:anomaly",
            root,
            DemoSettings(
                images_per_class=args.train_images,
                image_size=args.source_size,
                defects=args.defects,
            ),
        )
        category = root / "carpet"
        truth = ground_truth(category, args.size)
        n_defect = sum(label for label, _ in truth.values())
        print(
            f"# demo:anomaly defects={args.defects}: {args.train_images} train good,"
            f" {len(truth) - n_defect} test good + {n_defect} defect images at"
            f" {args.source_size} px -> {args.size} px; resnet18 random init, layer2+layer3,"
            f" coreset {args.coreset_ratio}"
        )
        project = scratch / "project"
        project.mkdir(exist_ok=True)
        visionops(
            "data",
            "preprocess",
            str(root),
            "--size",
            str(args.size),
            "--task",
            "anomaly",
            cwd=project,
            threads=args.threads,
        )
        prepared = next((project / "data" / "prepared").iterdir())
        rows: dict[str, list[dict[str, float]]] = {"visionops": [], "anomalib": []}
        print(
            f"{'seed':>4} {'tool':>10} {'image AUROC':>12} {'pixel AUROC':>12} {'AUPRO':>7}"
            f" {'fit s':>8}  (visionops: train command s)"
        )
        for seed in args.seeds:
            fit, command, outputs = run_visionops(project, prepared, seed, args)
            rows["visionops"].append({**score(truth, outputs), "fit": fit, "command": command})
            if with_anomalib:
                fit, outputs, _ = run_anomalib(root, scratch, seed, args)
                rows["anomalib"].append({**score(truth, outputs), "fit": fit})
            for tool in rows:
                if rows[tool]:
                    row = rows[tool][-1]
                    print(
                        f"{seed:>4} {tool:>10} {row['image_auroc']:>12.3f}"
                        f" {row['pixel_auroc']:>12.3f} {row['aupro']:>7.3f} {row['fit']:>8.1f}"
                        + (f"  ({row['command']:.1f})" if "command" in row else ""),
                        flush=True,
                    )
        print(f"\n## mean ± sd over seeds {args.seeds} ({len(truth)} test images)")
        for tool, results in rows.items():
            if results:
                cells = " | ".join(
                    f"{name} {spread([r[name] for r in results])}" for name in (*METRICS, "fit")
                )
                print(f"{tool:>10}: {cells}")
        if rows["anomalib"]:
            ratio = statistics.fmean(r["fit"] for r in rows["anomalib"]) / statistics.fmean(
                r["fit"] for r in rows["visionops"]
            )
            gaps = {
                name: statistics.fmean(r[name] for r in rows["visionops"])
                - statistics.fmean(r[name] for r in rows["anomalib"])
                for name in METRICS
            }
            command = statistics.fmean(r["fit"] for r in rows["anomalib"]) / statistics.fmean(
                r["command"] for r in rows["visionops"]
            )
            print(
                f"visionops fit is {ratio:.1f}x faster ({command:.1f}x counting the whole train"
                " command); visionops - anomalib: "
                + ", ".join(f"{name} {gap:+.3f}" for name, gap in gaps.items())
            )
        else:
            print("\n" + INSTALL)
