"""Drift on real photographs: false alarms and power of camera shifts at n = 100.

One row of ``benchmarks/quality.py`` (it also runs alone). Needs the cache of
``scripts/real-data`` (``$VISIONOPS_REAL_DATA``): its ``photos/`` (~45 real camera
photographs of various sizes) and torchvision's MobileNetV2 ImageNet file in ``TORCH_HOME``.

- **Crops.** One stream of random crops of the photographs at a camera-like 320x240 (a
  photograph drawn uniformly, a 4:3 box of 50-100 % of the largest that fits, placed uniformly,
  resized with Lanczos; saved as PNG so a file holds nothing but its pixels). Its first
  ``train`` crops are the training split, the next ``val`` the validation split, the next
  ``pool`` the unseen pool. The three are independent draws of one distribution (crops of one
  photograph may overlap in pixels, in every split alike), so the bundle's reference (drawn
  from val, as ``export`` does) and any window of the pool are exchangeable: an unchanged
  window that fires is a false alarm and nothing else.
- **Labels.** What the photograph shows: nature (plants, animals, landscapes), objects (things
  close up), places (buildings, streets, aerial views) or people (:data:`GROUPS`).
- **Bundle.** ``visionops data preprocess`` → ``train`` (MobileNetV2 from its ImageNet
  weights, a few epochs) → ``export`` through the CLI, as a user does; the export writes the
  reference from the val split, with the noise, detail and blockiness of its files.
- **Windows.** For each shift, ``drift simulate``'s core (:func:`simulate_folder`) writes the
  shifted pool as a camera would send it, and ``drift report --current``'s core
  (:func:`images_sample`: serve's decode, statistics and graph) summarises it. Each trial
  draws ``n`` pool rows (the same rows for every shift) and runs :func:`compare` against the
  reference; the flagged share over trials is the false-alarm rate for ``none`` and the
  power for a shift.

Run: python benchmarks/quality_drift.py --trials 100 --n 100
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_CACHE = Path.home() / ".cache" / "visionops" / "real-data"

GROUPS: dict[str, tuple[str, ...]] = {
    "nature": (
        "mate-*",
        "sklearn-flower.jpg",
        "opencv-aloeL.jpg",
        "opencv-baboon.jpg",
        "opencv-butterfly.jpg",
        "opencv-squirrel_cls.jpg",
    ),
    "objects": (
        "opencv-apple.jpg",
        "opencv-orange.jpg",
        "opencv-fruits.jpg",
        "opencv-smarties.png",
        "opencv-rubberwhale1.png",
        "opencv-stuff.jpg",
        "opencv-ela_original.jpg",
        "opencv-board.jpg",
        "opencv-box_in_scene.png",
        "opencv-text_defocus.jpg",
    ),
    "places": (
        "opencv-aero*",
        "opencv-building.jpg",
        "opencv-home.jpg",
        "opencv-leuven*",
        "opencv-graf1.png",
        "opencv-licenseplate_motion.jpg",
        "sklearn-china.jpg",
    ),
    "people": (
        "opencv-basketball1.png",
        "opencv-messi5.jpg",
        "matplotlib-grace_hopper.jpg",
        "opencv-left*",
        "opencv-right*",
    ),
}
"""Class → the photographs (glob patterns in ``photos/``) that show it."""

SHIFTS: tuple[str, ...] = (
    "none",
    "brightness=1.15",
    "blur=1",
    "noise=4",
    "jpeg=75",
    "resize=0.5",
    "resize=0.5,resize=2",
)
"""``drift simulate`` specs, each applied to the whole pool (``none``: the pool's own files):
an exposure 15 % up, a focus slightly off, more sensor noise, a harder encoder, a camera of
half the resolution, and one of half the resolution upscaled back to the same size."""

CAMERA = (320, 240)


@dataclass(frozen=True)
class Sizes:
    """How big the row is: crops per split, the model, the training, the tests."""

    train: int = 800
    val: int = 500
    pool: int = 600
    image_size: int = 96
    epochs: int = 3
    batch: int = 32
    permutations: int = 1000


def photo_classes(photos: Path) -> list[tuple[Path, str]]:
    """Every photograph of the pool with its class, in a fixed order.

    Raises:
        SystemExit: No photographs, or one that no group claims (a changed cache layout).
    """
    files = sorted(p for p in photos.glob("*") if p.suffix.lower() in {".jpg", ".png"})
    if not files:
        raise SystemExit(f"error: no photographs in {photos} — run scripts/real-data first")
    labelled = []
    for path in files:
        owners = [name for name, patterns in GROUPS.items() if any(path.match(p) for p in patterns)]
        if len(owners) != 1:
            raise SystemExit(
                f"error: {path.name} is in {len(owners)} photo groups — give it one in"
                " quality_drift.GROUPS"
            )
        labelled.append((path, owners[0]))
    return labelled


def write_crops(
    photos: Path, out: Path, counts: dict[str, int], seed: int = 0, jpeg: int | None = None
) -> Path:
    """One stream of random camera-sized crops, cut into ``counts`` (split → crops) in order.

    Writes ``out/dataset/{train,val}/<class>/*.png`` and ``out/pool/*.png`` (``.jpg`` at quality
    ``jpeg`` when given: a camera's own encoder); an existing
    ``out`` is reused (written through a temporary folder renamed when complete).
    """
    from PIL import Image

    if out.is_dir():
        return out
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    labelled = photo_classes(photos)
    images = [Image.open(path).convert("RGB") for path, _ in labelled]
    rng = np.random.default_rng(seed)
    aspect = CAMERA[0] / CAMERA[1]
    index = 0
    for split, count in counts.items():
        for _ in range(count):
            which = int(rng.integers(len(images)))
            image, label = images[which], labelled[which][1]
            width, height = image.size
            box_w = min(width, height * aspect) * rng.uniform(0.5, 1.0)
            box_h = box_w / aspect
            left = rng.uniform(0, width - box_w)
            top = rng.uniform(0, height - box_h)
            crop = image.resize(
                CAMERA, Image.Resampling.LANCZOS, box=(left, top, left + box_w, top + box_h)
            )
            folder = partial / "pool" if split == "pool" else partial / "dataset" / split / label
            folder.mkdir(parents=True, exist_ok=True)
            stem = folder / f"{index:05d}-{labelled[which][0].stem}"
            if jpeg is None:
                crop.save(stem.with_suffix(".png"))
            else:
                crop.save(stem.with_suffix(".jpg"), quality=jpeg)
            index += 1
    partial.rename(out)
    return out


def visionops(args: Sequence[str], cwd: Path, env: dict[str, str]) -> dict[str, Any]:
    """One ``visionops … --json`` command, as a user runs it; its JSON answer."""
    done = subprocess.run(
        [sys.executable, "-m", "visionops", *args, "--json"],
        cwd=cwd,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise RuntimeError(f"visionops {' '.join(args)} failed: {' | '.join(tail)}")
    answer: dict[str, Any] = json.loads(done.stdout)
    return answer


def train_bundle(dataset: Path, work: Path, sizes: Sizes, env: dict[str, str]) -> Path:
    """Preprocess, train (MobileNetV2 from ImageNet) and export through the CLI."""
    work.mkdir(parents=True, exist_ok=True)
    prepared = visionops(
        ["data", "preprocess", str(dataset), "--size", str(sizes.image_size)], work, env
    )
    visionops(
        [
            "train",
            prepared["path"],
            "--model",
            "mobilenet_v2",
            "--pretrained",
            "--epochs",
            str(sizes.epochs),
            "--batch-size",
            str(sizes.batch),
            "--device",
            "cpu",
            "--name",
            "photos",
            "--force",
        ],
        work,
        env,
    )
    visionops(["export", "runs/photos", "--force"], work, env)
    return work / "runs" / "photos" / "bundle"


def weights_env(real_data: Path) -> dict[str, str]:
    """The environment that points torch at the cache's ImageNet file, offline."""
    return {
        "TORCH_HOME": str(real_data / "torch"),
        "HF_HOME": str(real_data / "huggingface"),
        "HF_HUB_OFFLINE": "1",
    }


def run(
    real_data: Path,
    trials: int,
    n: int,
    workdir: Path,
    *,
    sizes: Sizes | None = None,
    shifts: Sequence[str] = SHIFTS,
    seed: int = 0,
    camera_jpeg: int | None = None,
) -> list[dict[str, Any]]:
    """The drift row: false alarms on the unchanged pool and the power of each shift.

    Args:
        real_data: The ``scripts/real-data`` cache.
        trials: Windows per shift.
        n: Images per window.
        workdir: Where the crops, the run and the shifted pools go (reused when present).
        sizes: Crops, model and training (default: the issue's size).
        shifts: ``drift simulate`` specs; ``none`` is the unchanged pool.
        seed: Seed of the crops and of the windows.
        camera_jpeg: Every crop a JPEG of this quality (a camera's encoder), and every shifted
            file written by the same encoder (``,jpeg=Q`` appended to a spec that does not end
            with its own ``jpeg``); None: PNG files throughout.

    Returns:
        One dict per shift: ``name``, ``strength``, ``flagged`` (share of trials),
        ``trials``, ``n``, the share each family fired, the shifted files' PSNR, and
        ``reference`` (images in the bundle's reference).
    """
    from visionops.config import DriftSettings
    from visionops.drift.detect import compare
    from visionops.drift.samples import images_sample, reference_sample, subset
    from visionops.drift.simulate import parse_shifts, simulate_folder
    from visionops.inference.bundle import load_bundle
    from visionops.tasks import task_for

    sizes = sizes or Sizes()
    if n > sizes.pool:
        raise SystemExit(f"error: windows of {n} images need a pool of at least {n} crops")
    workdir.mkdir(parents=True, exist_ok=True)
    crops = write_crops(
        real_data / "photos",
        workdir / "crops",
        {"train": sizes.train, "val": sizes.val, "pool": sizes.pool},
        seed,
        camera_jpeg,
    )
    bundle_dir = workdir / "project" / "runs" / "photos" / "bundle"
    if not (bundle_dir / "visionops.json").is_file():
        bundle_dir = train_bundle(
            crops / "dataset", workdir / "project", sizes, weights_env(real_data)
        )
    bundle = load_bundle(bundle_dir)
    task = task_for(bundle.meta)
    reference = reference_sample(bundle)
    settings = DriftSettings(permutations=sizes.permutations)
    rng = np.random.default_rng(seed)
    windows = [np.sort(rng.choice(sizes.pool, size=n, replace=False)) for _ in range(trials)]
    rows: list[dict[str, Any]] = []
    for spec in shifts:
        pool = crops / "pool"
        shifted = workdir / "shifted"
        written = spec
        if camera_jpeg is not None and spec != "none" and parse_shifts(spec)[-1].name != "jpeg":
            written = f"{spec},jpeg={camera_jpeg}"
        if spec != "none":
            shutil.rmtree(shifted, ignore_errors=True)
            simulate_folder(pool, parse_shifts(written), shifted, seed=seed)
        current = images_sample(bundle, [pool if spec == "none" else shifted])
        psnr = _psnr(pool, shifted) if spec != "none" else float("inf")
        shutil.rmtree(shifted, ignore_errors=True)
        hits = {"flagged": 0, "embeddings": 0, "outputs": 0, "images": 0}
        for rows_of_window in windows:
            result = compare(
                reference, subset(current, rows_of_window, spec), task=task, settings=settings
            )
            hits["flagged"] += result.drifted
            for family in result.families:
                hits[family.name] += family.drifted
        print(f"{spec}: {hits['flagged']}/{trials} flagged", file=sys.stderr, flush=True)
        parts = [] if spec == "none" else parse_shifts(spec)
        rows.append(
            {
                "name": "+".join(part.name for part in parts) or "none",
                "strength": ", ".join(f"{part.value:g}" for part in parts) or "—",
                "shift": spec,
                "written_as": written,
                "control": spec == "none" or written == f"jpeg={camera_jpeg}",
                "flagged": hits["flagged"] / trials,
                "trials": trials,
                "n": n,
                **{f"{k}_share": v / trials for k, v in hits.items() if k != "flagged"},
                "psnr_db": psnr,
                "reference": reference.count,
            }
        )
    return rows


def _psnr(pool: Path, shifted: Path) -> float:
    """Mean PSNR of the shifted files against the pool's (same size only: not after a resize)."""
    from PIL import Image

    values = []
    for before in sorted(pool.glob("*.*"))[:50]:
        after = shifted / before.with_suffix(".png").name
        if not after.is_file():
            after = after.with_suffix(".jpg")
        a = np.asarray(Image.open(before).convert("RGB"), np.float64)
        b = np.asarray(Image.open(after).convert("RGB"), np.float64)
        if a.shape != b.shape:
            return float("nan")
        error = float(np.mean((a - b) ** 2))
        values.append(float("inf") if error == 0 else 10 * np.log10(255.0**2 / error))
    finite = [v for v in values if np.isfinite(v)]
    return float(np.mean(finite)) if finite else float("inf")


def cpu_model() -> str:
    """The processor's name, for the table's heading."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def table(rows: Sequence[dict[str, Any]]) -> str:
    """The row as a Markdown table (one line per shift), with the verdict against the issue."""
    if not rows:
        return ""
    first = rows[0]
    lines = [
        f"Drift on real photographs: {first['trials']} windows of n = {first['n']} against a"
        f" reference of {first['reference']} val crops; α = 0.05",
        "",
        "| shift | PSNR dB | flagged | embeddings | outputs | images | goal |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for row in rows:
        none = bool(row.get("control", row["shift"] == "none"))
        ok = row["flagged"] <= 0.05 if none else row["flagged"] >= 0.8
        goal = ("≤ 0.05 " if none else "≥ 0.80 ") + ("met" if ok else "**missed**")
        psnr = row["psnr_db"]
        shown = "—" if not np.isfinite(psnr) else f"{psnr:.1f}"
        label = "none (false alarms)" if row["shift"] == "none" else f"`{row['shift']}`"
        if none and row["shift"] != "none":
            label += " (re-encoded by the camera's encoder: control)"
        lines.append(
            f"| {label} | {shown} | {row['flagged']:.2f} |"
            f" {row['embeddings_share']:.2f} | {row['outputs_share']:.2f} |"
            f" {row['images_share']:.2f} | {goal} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the row and print its table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--real-data", type=Path, default=None, help="default $VISIONOPS_REAL_DATA")
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--train", type=int, default=Sizes.train, help="training crops")
    parser.add_argument("--val", type=int, default=Sizes.val, help="val crops (the reference)")
    parser.add_argument("--pool", type=int, default=Sizes.pool, help="unseen pool crops")
    parser.add_argument("--epochs", type=int, default=Sizes.epochs)
    parser.add_argument("--image-size", type=int, default=Sizes.image_size)
    parser.add_argument("--permutations", type=int, default=Sizes.permutations)
    parser.add_argument(
        "--camera-jpeg",
        type=int,
        default=None,
        help="crops as JPEGs of this quality, shifted files through the same encoder",
    )
    parser.add_argument(
        "--shift",
        action="append",
        default=None,
        help="a drift simulate spec (repeat it; default: every one of SHIFTS; none = unchanged)",
    )
    parser.add_argument("--keep", type=Path, default=None, help="work here and keep the files")
    parser.add_argument("--out", type=Path, default=None, help="write every figure as JSON")
    args = parser.parse_args(argv)
    real_data = args.real_data or Path(os.environ.get("VISIONOPS_REAL_DATA") or DEFAULT_CACHE)
    if not (real_data / "photos").is_dir():
        raise SystemExit(f"error: no photo pool in {real_data} — run scripts/real-data first")
    sizes = Sizes(
        train=args.train,
        val=args.val,
        pool=args.pool,
        image_size=args.image_size,
        epochs=args.epochs,
        permutations=args.permutations,
    )
    work = args.keep or Path(tempfile.mkdtemp(prefix="visionops-quality-drift-"))
    started = time.perf_counter()
    try:
        rows = run(
            real_data,
            args.trials,
            args.n,
            work,
            sizes=sizes,
            shifts=args.shift or SHIFTS,
            camera_jpeg=args.camera_jpeg,
        )
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    command = "python benchmarks/quality_drift.py " + " ".join(
        argv if argv is not None else sys.argv[1:]
    )
    print(
        f"{date.today()} · {cpu_model()}, {os.cpu_count()} cores"
        f" · {time.perf_counter() - started:.0f} s\n{command.strip()}\n"
    )
    print(table(rows))
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
