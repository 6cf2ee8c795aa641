"""Quality on real data, anomaly row: visionops vs anomalib's PatchCore on texture photographs.

The sets are ``textures/<set>/`` of the ``scripts/real-data`` cache: MVTec-layout crops of
real texture photographs (train/good 60 crops, test/good 20, test/{scratch,stain,patch} 10
each with masks, 256 px; train and test crops from disjoint halves of each photograph).
For each set both tools fit on ``train/good`` and score every test image (seed 3):

- **visionops**: the CLI, as a user runs it: ``data preprocess --size N --task anomaly``,
  ``train --model timm:mobilenetv2_100 model.pretrained=true`` (``anomaly.layers`` layer2 +
  layer3: timm's stages at stride 8 and 16), then ``eval --split val`` and ``eval --split
  test`` (visionops divides the MVTec test split into val and test; together they are the
  whole split). Fit = ``train``'s own ``seconds`` (features, coreset, threshold on the val
  images, checkpoint, run folder); the whole command's wall time is kept beside it.
- **anomalib** 2.7 in its own interpreter (``anomalib_patchcore.py``): ``Patchcore(backbone=
  "mobilenetv2_100", layers=["blocks.2", "blocks.4"], pre_trained=True)``: the names of the
  same two stages in timm's ``feature_info``, which anomalib's ``TimmFeatureExtractor`` looks
  up. Fit = ``Engine.fit`` (features, coreset and the validation pass anomalib makes over the
  test split for its post-processor); ``bank`` = features + coreset only.

Same on both sides: the ImageNet weights of timm's ``mobilenetv2_100.ra_in1k`` read from the
cache's Hugging Face hub folder (``HF_HOME``, ``HF_HUB_OFFLINE=1``), N x N resize with
ImageNet normalisation, coreset ratio, CPU with ``threads`` intra-op threads each. Both
sides' raw scores and maps are scored by ONE implementation (``visionops.anomaly.metrics``:
image AUROC, pixel AUROC, AUPRO to FPR 0.3) against ONE ground truth (the set's masks,
resized nearest to N).

Without anomalib (``--anomalib-python`` missing or unable to import it) the visionops side
still runs. ``benchmarks/quality.py`` calls :func:`run` and :func:`table`.

Run: python benchmarks/quality_anomaly.py                   (all six sets, 224 px)
     python benchmarks/quality_anomaly.py --sets wood --size 128 --out wood.json
     python benchmarks/quality_anomaly.py --table wood.json stone.json   (one table of both)
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
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from anomaly_vs_anomalib import (
    INSTALL,
    anomalib_available,
    cpu_model,
    ground_truth,
    score,
)

SETS = ("wood", "leaf", "meadow", "raindrops", "burlap", "stone")
SEED = 3
DEFAULT_ANOMALIB_PYTHON = "/work/anomalib-venv/bin/python"
DEFAULT_CACHE = Path.home() / ".cache" / "visionops" / "real-data"
RUNNER = Path(__file__).with_name("anomalib_patchcore.py")
METRICS = ("image_auroc", "pixel_auroc", "aupro")
VISIONOPS_MODEL = "timm:mobilenetv2_100"
VISIONOPS_LAYERS = "[layer2,layer3]"
ANOMALIB_BACKBONE = "mobilenetv2_100"
# timm's feature_info modules of mobilenetv2_100 at stride 8 and 16 (what visionops calls
# layer2 and layer3): blocks.2 (32 channels) and blocks.4 (96 channels).
ANOMALIB_LAYERS = ("blocks.2", "blocks.4")


def weights_env(real_data: Path, threads: int) -> dict[str, str]:
    """The environment both sides run in: the cache's weights, offline, ``threads`` threads."""
    return {
        **os.environ,
        "HF_HOME": str(real_data / "huggingface"),
        "TORCH_HOME": str(real_data / "torch"),
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": str(threads),
        "WANDB_MODE": "disabled",
    }


def texture_sets(real_data: Path, sets: list[str] | None) -> list[str]:
    """The sets to run (all six by default); refuses a cache without them."""
    chosen = list(sets) if sets else list(SETS)
    missing = [s for s in chosen if not (real_data / "textures" / s / "train" / "good").is_dir()]
    if missing:
        raise SystemExit(
            f"error: no texture set {', '.join(missing)} in {real_data / 'textures'} — run"
            " scripts/real-data first (sets: " + ", ".join(SETS) + ")"
        )
    return chosen


def subset(category: Path, out: Path, limit: int) -> Path:
    """A copy of ``category`` with at most ``limit`` images a folder (and their masks)."""
    import shutil

    target = out / category.name
    shutil.rmtree(target, ignore_errors=True)
    for folder in sorted(category.glob("t*/*")):  # train/good, test/<kind>
        if not folder.is_dir():
            continue
        copy = target / folder.relative_to(category)
        copy.mkdir(parents=True)
        for image in sorted(folder.glob("*.png"))[:limit]:
            shutil.copyfile(image, copy / image.name)
            mask = category / "ground_truth" / folder.name / f"{image.stem}_mask.png"
            if folder.parent.name == "test" and mask.is_file():
                (target / "ground_truth" / folder.name).mkdir(parents=True, exist_ok=True)
                shutil.copyfile(mask, target / "ground_truth" / folder.name / mask.name)
    return target


def by_defect(
    truth: dict[str, tuple[int, np.ndarray]], outputs: dict[str, tuple[float, np.ndarray]]
) -> dict[str, float]:
    """Image AUROC of each defect kind against the good test images: where a tool loses."""
    from visionops.anomaly.metrics import image_auroc

    kinds = sorted({key.split("/")[1] for key, (label, _) in truth.items() if label})
    result: dict[str, float] = {}
    for kind in kinds:
        keys = [k for k in truth if k.split("/")[1] in (kind, "good")]
        result[kind] = round(
            image_auroc(
                np.array([outputs[k][0] for k in keys], dtype=np.float64),
                np.array([truth[k][0] for k in keys]),
            ),
            4,
        )
    return result


def visionops(*args: str, cwd: Path, env: dict[str, str]) -> str:
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
    category: Path, size: int, coreset_ratio: float, project: Path, env: dict[str, str]
) -> tuple[float, float, dict[str, tuple[float, np.ndarray]]]:
    """Fit seconds, ``train`` command seconds, ``test/<kind>/<file>`` → (score, heatmap)."""
    from visionops.data.prepared import PreparedDataset

    project.mkdir(parents=True, exist_ok=True)
    visionops(
        "data",
        "preprocess",
        str(category),
        "--size",
        str(size),
        "--task",
        "anomaly",
        "--json",
        cwd=project,
        env=env,
    )
    prepared = project / "data" / "prepared" / category.name
    started = time.perf_counter()
    out = visionops(
        "train",
        str(prepared),
        "--json",
        "--device",
        "cpu",
        "--model",
        VISIONOPS_MODEL,
        "model.pretrained=true",
        f"train.seed={SEED}",
        f"anomaly.layers={VISIONOPS_LAYERS}",
        f"anomaly.coreset_ratio={coreset_ratio}",
        cwd=project,
        env=env,
    )
    command_seconds = time.perf_counter() - started
    answer = json.loads(out)
    run_dir = project / answer["run_dir"]
    items = PreparedDataset.open(prepared).read_items()
    outputs: dict[str, tuple[float, np.ndarray]] = {}
    for split in ("val", "test"):
        visionops("eval", str(run_dir), "--split", split, cwd=project, env=env)
        with np.load(run_dir / "eval" / "predictions.npz") as saved:
            for index, value, heatmap in zip(
                saved["indices"],
                saved["outputs"].reshape(len(saved["indices"]), -1)[:, 0],
                saved["heatmaps"],
                strict=True,
            ):
                key = "/".join(Path(items[int(index)].path).parts[-3:])
                outputs[key] = (float(value), np.asarray(heatmap, dtype=np.float32))
    return float(answer["seconds"]), command_seconds, outputs


def run_anomalib(
    textures: Path,
    name: str,
    size: int,
    coreset_ratio: float,
    python: str,
    workdir: Path,
    env: dict[str, str],
    threads: int,
) -> tuple[dict[str, Any], dict[str, tuple[float, np.ndarray]]]:
    """The runner's JSON record and ``test/<kind>/<file>`` → (score, map)."""
    save = workdir / f"anomalib-{name}.npz"
    done = subprocess.run(
        [
            python,
            str(RUNNER),
            str(textures),
            "--category",
            name,
            "--image-size",
            str(size),
            "--backbone",
            ANOMALIB_BACKBONE,
            "--layers",
            *ANOMALIB_LAYERS,
            "--pre-trained",
            "--coreset-ratio",
            str(coreset_ratio),
            "--seed",
            str(SEED),
            "--threads",
            str(threads),
            "--save",
            str(save),
        ],
        # anomalib's coreset loop fragments glibc's heap without a fixed mmap threshold.
        env={**env, "MALLOC_MMAP_THRESHOLD_": "1048576"},
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"anomalib run failed ({name}):\n{done.stderr[-4000:]}")
    record = json.loads(done.stdout.strip().splitlines()[-1])
    if record.get("network_attempts"):
        raise SystemExit(f"anomalib tried the network ({name}): {record.get('network_attempted')}")
    with np.load(save) as saved:
        outputs = {
            str(path): (float(value), np.asarray(amap, dtype=np.float32))
            for path, value, amap in zip(
                saved["paths"], saved["scores"], saved["maps"], strict=True
            )
        }
    return record, outputs


def run(
    real_data: Path,
    sets: list[str] | None,
    size: int,
    coreset_ratio: float,
    anomalib_python: str,
    workdir: Path,
    *,
    threads: int = 1,
    limit: int | None = None,
    log: bool = True,
) -> list[dict[str, Any]]:
    """Both tools on each texture set; one dict per set.

    Args:
        real_data: The ``scripts/real-data`` cache (holds ``textures/`` and ``huggingface/``).
        sets: Texture sets (None or empty: all six).
        size: Image side both tools use.
        coreset_ratio: Share of training patches kept, both sides.
        anomalib_python: The anomalib interpreter; missing or without anomalib, only visionops
            runs (the dicts then have no ``anomalib`` entry).
        workdir: Scratch folder (visionops project, anomalib outputs).
        threads: Intra-op threads each side.
        limit: Use at most this many images a folder (a copy in ``workdir``; tests).
        log: Print one line per set and side as it finishes.

    Returns:
        Per set: ``set``, ``size``, ``test_images``, ``visionops`` (``image_auroc``,
        ``pixel_auroc``, ``aupro``, ``image_auroc_by_defect``, ``fit_seconds``,
        ``command_seconds``) and, with anomalib, ``anomalib`` (the metrics,
        ``image_auroc_by_defect``, ``fit_seconds``, ``bank_seconds``, ``memory_bank``).
    """
    chosen = texture_sets(real_data, sets)
    env = weights_env(real_data, threads)
    workdir.mkdir(parents=True, exist_ok=True)
    with_anomalib = anomalib_available(anomalib_python)
    rows: list[dict[str, Any]] = []
    textures = real_data / "textures"
    if limit is not None:
        textures = workdir / "textures"
        for name in chosen:
            subset(real_data / "textures" / name, textures, limit)
    for name in chosen:
        category = textures / name
        truth = ground_truth(category, size)
        fit, command, outputs = run_visionops(
            category, size, coreset_ratio, workdir / "project", env
        )
        row: dict[str, Any] = {
            "set": name,
            "size": size,
            "coreset_ratio": coreset_ratio,
            "seed": SEED,
            "test_images": len(truth),
            "visionops": {
                **score(truth, outputs),
                "image_auroc_by_defect": by_defect(truth, outputs),
                "fit_seconds": round(fit, 2),
                "command_seconds": round(command, 2),
            },
        }
        if log:
            print(line(name, "visionops", row["visionops"]), flush=True)
        if with_anomalib:
            record, outputs = run_anomalib(
                textures,
                name,
                size,
                coreset_ratio,
                anomalib_python,
                workdir,
                env,
                threads,
            )
            row["anomalib"] = {
                **score(truth, outputs),
                "image_auroc_by_defect": by_defect(truth, outputs),
                "fit_seconds": record["fit_seconds"],
                "bank_seconds": record["bank_seconds"],
                "memory_bank": record["memory_bank"],
            }
            if log:
                print(line(name, "anomalib", row["anomalib"]), flush=True)
        rows.append(row)
    return rows


def line(name: str, tool: str, result: dict[str, Any]) -> str:
    return (
        f"{name:>10} {tool:>10} {result['image_auroc']:>12.3f} {result['pixel_auroc']:>12.3f}"
        f" {result['aupro']:>7.3f} {result['fit_seconds']:>8.1f}"
    )


def table(rows: list[dict[str, Any]]) -> str:
    """Per set and tool, then the means, the gaps and the fit-time ratio (markdown)."""
    if not rows:
        return "anomaly: no set ran"
    both = all("anomalib" in row for row in rows)
    lines = [
        f"Anomaly on real surfaces (seed {SEED}, {rows[0]['size']} px, coreset"
        f" {rows[0]['coreset_ratio']}, timm mobilenetv2_100 ImageNet weights both sides)",
        "",
        "| set | tool | image AUROC | pixel AUROC | AUPRO | fit s |",
        "|---|---|---:|---:|---:|---:|",
    ]
    tools = ("visionops", "anomalib") if both else ("visionops",)
    for row in rows:
        for tool in tools:
            r = row[tool]
            lines.append(
                f"| {row['set']} | {tool} | {r['image_auroc']:.3f} | {r['pixel_auroc']:.3f} |"
                f" {r['aupro']:.3f} | {r['fit_seconds']:.1f} |"
            )
    means = {
        tool: {
            name: statistics.fmean(row[tool][name] for row in rows)
            for name in (*METRICS, "fit_seconds")
        }
        for tool in tools
    }
    for tool in tools:
        m = means[tool]
        lines.append(
            f"| **mean** | {tool} | **{m['image_auroc']:.3f}** | **{m['pixel_auroc']:.3f}** |"
            f" **{m['aupro']:.3f}** | **{m['fit_seconds']:.1f}** |"
        )
    if both:
        gaps = ", ".join(
            f"{name} {means['visionops'][name] - means['anomalib'][name]:+.3f}" for name in METRICS
        )
        ratio = sum(row["anomalib"]["fit_seconds"] for row in rows) / sum(
            row["visionops"]["fit_seconds"] for row in rows
        )
        banks = [row["anomalib"].get("bank_seconds") for row in rows]
        bank = (
            f" ({sum(banks) / sum(row['visionops']['fit_seconds'] for row in rows):.1f}x"
            " against anomalib's features + coreset alone)"
            if None not in banks
            else ""
        )
        losses = [
            f"{row['set']} ({name} {row['visionops'][name] - row['anomalib'][name]:+.3f})"
            for row in rows
            for name in ("image_auroc", "pixel_auroc")
            if row["visionops"][name] < row["anomalib"][name]
        ]
        lines += [
            "",
            f"visionops - anomalib (means): {gaps}; visionops fit {ratio:.1f}x faster{bank}",
            "visionops behind on: " + (", ".join(losses) if losses else "no set"),
        ]
        for row in rows:
            kinds = [row[tool].get("image_auroc_by_defect") for tool in tools]
            if row["visionops"]["image_auroc"] < row["anomalib"]["image_auroc"] and all(kinds):
                lines.append(
                    f"  {row['set']}, image AUROC of each defect vs good (visionops / anomalib): "
                    + ", ".join(
                        f"{kind} {kinds[0][kind]:.3f} / {kinds[1][kind]:.3f}" for kind in kinds[0]
                    )
                )
    else:
        lines += ["", INSTALL]
    return "\n".join(lines)


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--real-data",
        type=Path,
        default=Path(os.environ.get("VISIONOPS_REAL_DATA") or DEFAULT_CACHE),
        help="the scripts/real-data cache",
    )
    parser.add_argument("--sets", nargs="+", default=list(SETS))
    parser.add_argument("--size", type=int, default=224, help="image side both tools use")
    parser.add_argument("--coreset-ratio", type=float, default=0.1)
    parser.add_argument("--anomalib-python", default=DEFAULT_ANOMALIB_PYTHON)
    parser.add_argument("--threads", type=int, default=1, help="torch threads, each side")
    parser.add_argument("--limit", type=int, default=None, help="images a folder (default: all)")
    parser.add_argument("--keep", type=Path, default=None, help="work here, keep the files")
    parser.add_argument("--out", type=Path, default=None, help="write the rows as JSON")
    parser.add_argument(
        "--table",
        type=Path,
        nargs="+",
        default=None,
        help="print the table of rows saved with --out (several runs' files: one table)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.table:
        saved = [row for path in args.table for row in json.loads(path.read_text())]
        print(table(saved))
        return 0
    import torch

    print(
        f"# {date.today()} · {cpu_model()}, {os.cpu_count()} cores, {args.threads} thread(s)"
        f" per side, load {' '.join(f'{v:.1f}' for v in os.getloadavg())}, torch"
        f" {torch.__version__}, python {sys.version.split()[0]}"
    )
    print(
        f"{'set':>10} {'tool':>10} {'image AUROC':>12} {'pixel AUROC':>12} {'AUPRO':>7}"
        f" {'fit s':>8}"
    )
    started = time.perf_counter()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="visionops-quality-anomaly-") as temporary:
        workdir = args.keep or Path(temporary)
        for name in texture_sets(args.real_data, args.sets):
            rows += run(
                args.real_data,
                [name],
                args.size,
                args.coreset_ratio,
                args.anomalib_python,
                workdir,
                threads=args.threads,
                limit=args.limit,
            )
            if args.out:  # after every set: a long run stopped early keeps what it measured
                args.out.write_text(json.dumps(rows, indent=2) + "\n")
    print(f"\n{time.perf_counter() - started:.0f} s in all\n")
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
