"""Drift detection: calibration, power, MMD speed and the held-out reference.

Three measurements:

1. **speed** — MMD² permutation test on 10,000 reference x 2,000 current embeddings
   (D = 512), 1,000 permutations: visionops (kernel matrix once, permutations as
   ``K @ indicators``) versus the textbook loop that recomputes the kernel for every
   permutation (timed on a few permutations and scaled to 1,000; running it in full would
   take tens of minutes).
2. **power** — a shapes demo model is trained and exported (reference = its val split);
   a fresh demo generated with another seed is the pool of *unseen* same-distribution images.
   Each trial draws N pool images, shifts them (`drift simulate`'s shifts, on the model-sized
   images), and runs `compare`; the table is the share of trials flagged, overall and per
   family (each family alone at α), for N in --sizes. "none" is the false-alarm row.
3. **reference** — false alarms on unseen unshifted images with a reference drawn from the
   training split versus the val split, on the same (over-fitted: no augmentation) model.

Run: python benchmarks/drift.py --trials 100 --sizes 50,200,1000
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np

SHIFTS = [
    "none",
    "brightness=1.15",
    "contrast=0.8",
    "blur=1",
    "noise=8",
    "rotation=15",
    "jpeg=20",
    "occlusion=0.1",
    "cast=0.05",
]


# ------------------------------------------------------------------------------- speed


def naive_mmd_test(x: np.ndarray, y: np.ndarray, permutations: int, sigma: float) -> float:
    """The baseline: relabel, then recompute the kernel blocks for every permutation."""
    from visionops.drift.stats import gaussian_kernel

    def mmd2(a: np.ndarray, b: np.ndarray) -> float:
        m, n = len(a), len(b)
        kaa = gaussian_kernel(a, sigma)
        kbb = gaussian_kernel(b, sigma)
        pooled = gaussian_kernel(np.concatenate([a, b]), sigma)
        kab = pooled[:m, m:]
        return float(
            (kaa.sum() - m) / (m * (m - 1)) + (kbb.sum() - n) / (n * (n - 1)) - 2 * kab.mean()
        )

    rng = np.random.default_rng(0)
    pooled = np.concatenate([x, y])
    observed = mmd2(x, y)
    exceed = 0
    for _ in range(permutations):
        order = rng.permutation(len(pooled))
        exceed += mmd2(pooled[order[: len(x)]], pooled[order[len(x) :]]) >= observed
    return (1 + exceed) / (1 + permutations)


def speed(reference_n: int, current_n: int, dim: int, permutations: int, naive_perms: int) -> None:
    from visionops.drift.stats import median_bandwidth, mmd_permutation_test

    rng = np.random.default_rng(0)
    x = rng.normal(size=(reference_n, dim)).astype(np.float32)
    y = rng.normal(size=(current_n, dim)).astype(np.float32)
    started = time.perf_counter()
    result = mmd_permutation_test(x, y, permutations=permutations, rng=rng)
    ours = time.perf_counter() - started
    sigma = median_bandwidth(np.concatenate([x, y]))
    started = time.perf_counter()
    naive_mmd_test(x, y, naive_perms, sigma)
    naive_per_perm = (time.perf_counter() - started) / (naive_perms + 1)
    naive = naive_per_perm * (permutations + 1)
    print(f"\n## MMD² permutation test, {reference_n} x {current_n}, D = {dim}, B = {permutations}")
    print("| implementation | seconds | ratio |")
    print("|---|---:|---:|")
    print(
        f"| recompute kernel per permutation (timed on {naive_perms}, scaled) | {naive:.1f} | 1.0 |"
    )
    print(f"| visionops (kernel once, K @ indicators) | {ours:.1f} | **{naive / ours:.0f}x** |")
    print(f"(p = {result.p_value:.3f} on two samples of the same distribution)")


# ------------------------------------------------------------------------------- power


def build_demo(
    root: Path, images_per_class: int, epochs: int, model: str, size: int, pool_per_class: int
) -> tuple[Path, Path]:
    """Train and export a shapes model; prepare an unseen pool from another demo seed."""
    from visionops.config import load_settings
    from visionops.data.fetch import fetch_dataset
    from visionops.data.preprocess import prepare_dataset
    from visionops.export.stage import export_run
    from visionops.train import train

    os.chdir(root)
    common = [
        f"data.demo.images_per_class={images_per_class}",
        "data.demo.image_size=64",
        f"data.image_size={size}",
        "data.workers=1",
    ]
    settings = load_settings(
        overrides=[
            *common,
            f"model.name={model}",
            f"train.epochs={epochs}",
            "train.batch_size=32",
            "train.augment.enabled=false",  # over-fits on purpose: the reference comparison
            "device=cpu",
        ],
        cwd=root,
    )
    raw = fetch_dataset("demo:shapes", settings).path
    prepared = prepare_dataset(raw, settings).path
    run = train(settings, prepared).run_dir
    export_run(settings, run)
    return root / run / "bundle", build_pool(root, pool_per_class, size)


def build_pool(root: Path, images_per_class: int, size: int) -> Path:
    """Unseen same-distribution images: the shapes demo generated with another seed."""
    from visionops.config import load_settings
    from visionops.data.fetch import fetch_dataset
    from visionops.data.preprocess import prepare_dataset

    pool_settings = load_settings(
        overrides=[
            f"data.demo.images_per_class={images_per_class}",
            "data.demo.image_size=64",
            f"data.image_size={size}",
            "data.workers=1",
            "data.demo.seed=1",
            f"data.raw_root={root / 'pool' / 'raw'}",
            f"data.prepared_root={root / 'pool' / 'prepared'}",
        ],
        cwd=root,
    )
    pool_raw = fetch_dataset("demo:shapes", pool_settings).path
    return prepare_dataset(pool_raw, pool_settings).path


def _sample_from_arrays(
    task: str,
    labels: list[str],
    outputs: np.ndarray,
    embeddings: np.ndarray,
    images: np.ndarray,
    split: str | None = None,
) -> Any:
    from visionops.artifacts import LoggedImage
    from visionops.drift.features import image_features
    from visionops.drift.samples import Sample
    from visionops.imaging import image_statistics

    features = image_features(
        [LoggedImage.model_validate(image_statistics(image)) for image in images]
    )
    return Sample(
        source="benchmark",
        count=len(images),
        embeddings=embeddings.astype(np.float32),
        outputs=outputs.astype(np.float64),
        classes=outputs.argmax(1) if task == "classification" else None,
        features=features,
        split=split,
    )


def _run_graph(session: Any, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mains, embeddings = [], []
    for start in range(0, len(images), 64):
        result = session.run(images[start : start + 64])
        mains.append(result.main)
        embeddings.append(result.embedding)
    return np.concatenate(mains), np.concatenate(embeddings)


def power(
    bundle_dir: Path, pool_dir: Path, trials: int, sizes: list[int], permutations: int
) -> None:
    from visionops.config import DriftSettings
    from visionops.data.prepared import PreparedDataset
    from visionops.drift.detect import compare
    from visionops.drift.samples import reference_sample, subset
    from visionops.drift.simulate import apply_shifts, parse_shifts
    from visionops.inference.bundle import load_bundle
    from visionops.inference.session import ModelSession
    from visionops.tasks import task_for

    bundle = load_bundle(bundle_dir)
    reference = reference_sample(bundle)
    session = ModelSession(bundle, precision="fp32")
    pool = np.asarray(PreparedDataset.open(pool_dir).images)
    settings = DriftSettings(permutations=permutations)
    print(
        f"\n## Power and false alarms: reference {reference.count} val images, pool"
        f" {len(pool)} unseen images, {trials} trials, α = {settings.alpha}, B = {permutations}"
    )
    print("| shift | N | overall | embeddings | outputs | images |")
    print("|---|---:|---:|---:|---:|---:|")
    rng = np.random.default_rng(0)
    for spec in SHIFTS:
        shift_rng = np.random.default_rng(1)
        shifted = (
            pool
            if spec == "none"
            else np.stack([apply_shifts(image, parse_shifts(spec), shift_rng) for image in pool])
        )
        outputs, embeddings = _run_graph(session, shifted)
        current = _sample_from_arrays(bundle.task, bundle.labels, outputs, embeddings, shifted)
        for size in sizes:
            if size > len(pool):
                continue
            counts = {"overall": 0, "embeddings": 0, "outputs": 0, "images": 0}
            for _ in range(trials):
                rows = np.sort(rng.choice(len(pool), size=size, replace=False))
                result = compare(
                    reference, subset(current, rows, "trial"), task=task_for(bundle.meta),
                    settings=settings,
                )  # fmt: skip
                counts["overall"] += result.drifted
                for family in result.families:
                    counts[family.name] += family.p_value < settings.alpha
            cells = " | ".join(f"{counts[k] / trials:.2f}" for k in counts)
            print(f"| {spec} | {size} | {cells} |", flush=True)


def reference_choice(
    bundle_dir: Path, pool_dir: Path, trials: int, size: int, permutations: int
) -> None:
    """False alarms on unseen images: training-split reference vs val-split reference."""
    from visionops.config import DriftSettings
    from visionops.data.prepared import PreparedDataset
    from visionops.drift.detect import compare
    from visionops.drift.samples import subset
    from visionops.inference.bundle import load_bundle
    from visionops.inference.session import ModelSession
    from visionops.tasks import task_for

    bundle = load_bundle(bundle_dir)
    session = ModelSession(bundle, precision="fp32")
    dataset = PreparedDataset.open(bundle_dir.parent.parent.parent / "data" / "prepared" / "shapes")
    splits = np.asarray(dataset.splits)
    pool = np.asarray(PreparedDataset.open(pool_dir).images)
    pool_out, pool_emb = _run_graph(session, pool)
    current = _sample_from_arrays(bundle.task, bundle.labels, pool_out, pool_emb, pool)
    settings = DriftSettings(permutations=permutations)
    val_count = int((splits == 1).sum())
    print(f"\n## Reference split, unseen unshifted images, N = {size}, {trials} trials")
    print("| reference | images | mean top probability | false alarms (overall) | outputs family |")
    print("|---|---:|---:|---:|---:|")
    print(f"| (unseen pool) | {len(pool)} | {pool_out.max(1).mean():.3f} | | |")
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        codes = {"train": 0, "val": 1}
        indices = np.flatnonzero(splits == codes[split])
        # Same size for both, so only where the images come from differs.
        indices = np.sort(np.random.default_rng(0).permutation(indices)[:val_count])
        images = np.asarray(dataset.images[indices])
        outputs, embeddings = _run_graph(session, images)
        reference = _sample_from_arrays(
            bundle.task, bundle.labels, outputs, embeddings, images, split
        )
        overall = family_hits = 0
        for _ in range(trials):
            rows = np.sort(rng.choice(len(pool), size=size, replace=False))
            result = compare(
                reference, subset(current, rows, "trial"), task=task_for(bundle.meta),
                settings=settings,
            )  # fmt: skip
            overall += result.drifted
            family = result.family("outputs")
            family_hits += family is not None and family.p_value < settings.alpha
        print(
            f"| {split} split | {len(indices)} | {outputs.max(1).mean():.3f} |"
            f" {overall / trials:.2f} | {family_hits / trials:.2f} |",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--parts", default="speed,power,reference", help="Comma-separated: speed, power, reference"
    )
    parser.add_argument("--model", default="resnet18", help="Backbone of the demo model.")
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--sizes", default="50,200,1000")
    parser.add_argument("--permutations", type=int, default=1000)
    parser.add_argument("--images-per-class", type=int, default=150)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--pool-per-class", type=int, default=150, help="Unseen images per class.")
    parser.add_argument("--naive-perms", type=int, default=3)
    parser.add_argument(
        "--reference-size", type=int, default=200, help="Unseen images per reference trial."
    )
    parser.add_argument("--speed-reference", type=int, default=10_000)
    parser.add_argument("--speed-current", type=int, default=2_000)
    parser.add_argument(
        "--bundle",
        type=Path,
        help="Use this exported shapes bundle instead of training one (its run's prepared"
        " dataset must be at <project>/data/prepared/shapes)",
    )
    args = parser.parse_args()
    print(
        f"# drift benchmark — {date.today()} — {platform.processor() or platform.machine()},"
        f" {os.cpu_count()} cores, load avg {os.getloadavg()[0]:.1f}"
    )
    parts = set(args.parts.split(","))
    if "speed" in parts:
        speed(args.speed_reference, args.speed_current, 512, args.permutations, args.naive_perms)
    if parts & {"power", "reference"}:
        with tempfile.TemporaryDirectory(prefix="drift-bench-") as tmp:
            started = time.perf_counter()
            if args.bundle is not None:
                bundle_dir = args.bundle.resolve()
                pool_dir = build_pool(Path(tmp), args.pool_per_class, args.image_size)
            else:
                bundle_dir, pool_dir = build_demo(
                    Path(tmp), args.images_per_class, args.epochs, args.model, args.image_size,
                    args.pool_per_class,
                )  # fmt: skip
            print(
                f"\n(demo: {args.model}, {args.images_per_class} images per class,"
                f" {args.image_size} px, {args.epochs} epochs without augmentation; trained and"
                " exported in"
                f" {time.perf_counter() - started:.0f} s)"
            )
            sizes = [int(s) for s in args.sizes.split(",")]
            if "power" in parts:
                power(bundle_dir, pool_dir, args.trials, sizes, args.permutations)
            if "reference" in parts:
                reference_choice(
                    bundle_dir, pool_dir, args.trials, args.reference_size, args.permutations
                )


if __name__ == "__main__":
    main()
