"""Drift detection: calibration, power, MMD speed, the held-out reference, camera shifts, sampling.

Six measurements:

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
4. **camera** — what a camera or encoder change does: the unseen pool's *files* are shifted
   as ``drift simulate`` writes them (``noise=…`` as PNG, ``jpeg=…`` as the encoder's own
   bytes) and go through serve's decode (``ModelSession.decode``: the statistics of the
   upload before the resize, of its bytes, and of the model-sized pixels) and the graph.
   For each strength: the detection rate at --camera-size images, overall and per new
   statistic, beside the same tests without the new statistics (the baseline); the PSNR
   of the shifted images says how visible the change is. "none" (the pool's own files) is
   the false-alarm row, at --camera-size and --camera-fa-size images.
5. **cost** — per-upload time of the new statistics at 224 px and 640x480 (JPEG and PNG)
   beside the existing ``image_statistics`` and the decode itself, then ``/predict`` through
   the ASGI app with online drift off and on (interleaved rounds).
6. **sampling** — what serve's statistics budget (``drift.statistics_cpu_share``: under load
   only a random share of uploads gets image statistics) costs the image tests: the rate at
   which the image family fires on a window of --sampling-window images against a reference
   of --sampling-reference, with every image measured and with a random --sampling-share of
   them, for brightness shifts in reference standard deviations (statistics drawn from
   normal distributions shaped like the demo's: brightness, contrast, sharpness).

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
    root: Path,
    images_per_class: int,
    epochs: int,
    model: str,
    size: int,
    pool_per_class: int,
    demo_size: int = 64,
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
        f"data.demo.image_size={demo_size}",
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
    return root / run / "bundle", build_pool(root, pool_per_class, size, demo_size)


def build_pool(root: Path, images_per_class: int, size: int, demo_size: int = 64) -> Path:
    """Unseen same-distribution images: the shapes demo generated with another seed."""
    from visionops.config import load_settings
    from visionops.data.fetch import fetch_dataset
    from visionops.data.preprocess import prepare_dataset

    pool_settings = load_settings(
        overrides=[
            f"data.demo.images_per_class={images_per_class}",
            f"data.demo.image_size={demo_size}",
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


# ------------------------------------------------------------------------------ camera

CAMERA_SHIFTS = [
    "none",
    "noise=0.5",
    "noise=1",
    "noise=1.5",
    "noise=2",
    "noise=3",
    "noise=5",
    "jpeg=92",
    "jpeg=85",
    "jpeg=75",
    "jpeg=60",
    "jpeg=40",
    "jpeg=20",
]
NEW_STATISTICS = ("noise", "detail", "blockiness", "jpeg_quality", "colourfulness", "hue")


def _pool_files(pool_dir: Path) -> list[Path]:
    """The unseen pool's raw files (``<pool>/raw/shapes``), in a fixed order."""
    from visionops.inference.predict import find_images

    return sorted(find_images([pool_dir.parent.parent / "raw" / pool_dir.name]))


def _psnr(before: np.ndarray, after: np.ndarray) -> float:
    error = float(np.mean((before.astype(np.float64) - after.astype(np.float64)) ** 2))
    return float("inf") if error == 0 else 10 * np.log10(255.0**2 / error)


def _camera_sample(session: Any, bundle: Any, files: list[Path], spec: str) -> tuple[Any, float]:
    """The files shifted as ``drift simulate`` writes them, through serve's decode and graph."""
    from visionops.drift.features import image_features
    from visionops.drift.samples import Sample
    from visionops.drift.simulate import parse_shifts, shifted_file
    from visionops.imaging import decode_image
    from visionops.tasks import task_for

    rng = np.random.default_rng(1)
    decoded, psnrs = [], []
    for path in files:
        data = path.read_bytes()
        if spec != "none":
            original = np.asarray(decode_image(data))
            data, _ = shifted_file(original, parse_shifts(spec), rng)
            psnrs.append(_psnr(original, np.asarray(decode_image(data))))
        decoded.append(session.decode(data))
    pixels = np.stack([image.pixels for image in decoded])
    outputs, embeddings = _run_graph(session, pixels)
    outputs = outputs.reshape(len(outputs), -1).astype(np.float64)
    sample = Sample(
        source=spec,
        count=len(decoded),
        embeddings=embeddings.astype(np.float32),
        outputs=outputs,
        classes=task_for(bundle.meta).predicted_classes(outputs),
        features=image_features([image.info for image in decoded]),
    )
    finite = [p for p in psnrs if np.isfinite(p)]
    return sample, float(np.mean(finite)) if finite else float("inf")


def _without_new(sample: Any) -> Any:
    from dataclasses import replace

    kept = {k: v for k, v in sample.features.items() if k not in NEW_STATISTICS}
    return replace(sample, features=kept)


def camera(
    bundle_dir: Path, pool_dir: Path, trials: int, size: int, fa_size: int, permutations: int
) -> None:
    from visionops.config import DriftSettings
    from visionops.drift.detect import compare
    from visionops.drift.samples import reference_sample, subset
    from visionops.inference.bundle import load_bundle
    from visionops.inference.session import ModelSession
    from visionops.tasks import task_for

    bundle = load_bundle(bundle_dir)
    task = task_for(bundle.meta)
    reference = reference_sample(bundle)
    baseline_reference = _without_new(reference)
    missing = [name for name in NEW_STATISTICS if name not in reference.features]
    session = ModelSession(bundle, precision="fp32")
    files = _pool_files(pool_dir)
    settings = DriftSettings(permutations=permutations)
    print(
        f"\n## Camera shifts through serve's decode: reference {reference.count} val images"
        f" ({bundle.meta.input.size} px model), pool {len(files)} unseen files, {trials}"
        f" trials, α = {settings.alpha}, B = {permutations}"
        + (f" (not in the reference: {', '.join(missing)})" if missing else "")
    )
    print(
        "| shift | PSNR dB | N | overall | before (no new statistics) | images | "
        + " | ".join(NEW_STATISTICS)
        + " |"
    )
    print("|---|---:|---:|---:|---:|---:|" + "---:|" * len(NEW_STATISTICS))
    rng = np.random.default_rng(0)
    for spec in CAMERA_SHIFTS:
        sizes = [size, fa_size] if spec == "none" else [size]
        sizes = [n for n in sizes if n <= len(files)]
        if not sizes:
            continue
        current, psnr = _camera_sample(session, bundle, files, spec)
        baseline_current = _without_new(current)
        for n in sizes:
            hits = dict.fromkeys(["overall", "before", "images", *NEW_STATISTICS], 0)
            for _ in range(trials):
                rows = np.sort(rng.choice(current.count, size=n, replace=False))
                result = compare(
                    reference, subset(current, rows, "trial"), task=task, settings=settings
                )
                before = compare(
                    baseline_reference,
                    subset(baseline_current, rows, "trial"),
                    task=task,
                    settings=settings,
                )
                hits["overall"] += result.drifted
                hits["before"] += before.drifted
                images = result.family("images")
                if images is not None:
                    hits["images"] += images.drifted
                    for row in images.tests:
                        key = getattr(row, "key", "")
                        if key in NEW_STATISTICS and row.drifted:
                            hits[key] += 1
            cells = " | ".join(f"{hits[k] / trials:.2f}" for k in hits)
            shown = "—" if not np.isfinite(psnr) else f"{psnr:.1f}"
            print(f"| {spec} | {shown} | {n} | {cells} |", flush=True)


def _photo(width: int, height: int, pool_dir: Path) -> np.ndarray:
    """A photo-like test image: a pool image scaled up, with a camera's noise."""
    from PIL import Image

    from visionops.imaging import decode_image

    source = decode_image(_pool_files(pool_dir)[0])
    scaled = np.asarray(source.resize((width, height), Image.Resampling.BICUBIC), np.float32)
    noise = np.random.default_rng(0).normal(0, 3, scaled.shape)
    return np.asarray(np.clip(scaled + noise, 0, 255).round(), np.uint8)


def _per_call_ms(call: Any, repeats: int) -> float:
    """Median of ``repeats`` timings of one call, in milliseconds (robust to a busy machine)."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return 1000 * float(np.median(times))


def _cost_row(width: int, height: int, fmt: str, pool_dir: Path, repeats: int) -> str:
    import io

    from PIL import Image

    from visionops.image_quality import quality_statistics
    from visionops.imaging import image_statistics, load_image_and_source

    buffer = io.BytesIO()
    options = {"quality": 90} if fmt == "JPEG" else {}
    Image.fromarray(_photo(width, height, pool_dir)).save(buffer, format=fmt, **options)
    data = buffer.getvalue()
    image, pixels = load_image_and_source(data, size=224)
    new = _per_call_ms(lambda: quality_statistics(image, pixels, data, width), repeats)
    old = _per_call_ms(lambda: image_statistics(pixels), repeats)
    decode = _per_call_ms(lambda: load_image_and_source(data, size=224), repeats)
    return (
        f"| {width}x{height} {fmt} | {image.width}x{image.height} | {new:.3f} |"
        f" {old:.3f} | {decode:.3f} | {new / decode:.2f} |"
    )


def cost(bundle_dir: Path, pool_dir: Path, repeats: int, requests: int, rounds: int) -> None:
    print(f"\n## Per-upload cost of the statistics, 224 px model (median of {repeats} calls)")
    print(
        "| upload | decoded (draft) | new statistics ms | image_statistics ms |"
        " decode + resize ms | new / decode |"
    )
    print("|---|---|---:|---:|---:|---:|")
    for width, height in ((224, 224), (640, 480)):
        for fmt in ("JPEG", "PNG"):
            print(_cost_row(width, height, fmt, pool_dir, repeats), flush=True)
    _decode_cost(bundle_dir, pool_dir, repeats)
    _predict_overhead(bundle_dir, pool_dir, requests, rounds)


def _decode_cost(bundle_dir: Path, pool_dir: Path, repeats: int) -> None:
    """``ModelSession.decode`` of a 640x480 JPEG: what serve's decode pool pays per upload."""
    import io

    from PIL import Image

    from visionops.inference.bundle import load_bundle
    from visionops.inference.session import ModelSession

    buffer = io.BytesIO()
    Image.fromarray(_photo(640, 480, pool_dir)).save(buffer, format="JPEG", quality=90)
    data = buffer.getvalue()
    session = ModelSession(load_bundle(bundle_dir), threads=1)
    decode = _per_call_ms(lambda: session.decode(data), repeats)
    print(
        f"\n`ModelSession.decode` of a 640x480 JPEG ({session.size} px model, statistics"
        f" included): **{decode:.3f} ms** (median of {repeats} calls)",
        flush=True,
    )


def _predict_overhead(bundle_dir: Path, pool_dir: Path, requests: int, rounds: int) -> None:
    """``/predict`` of a 640x480 JPEG through the ASGI app, online drift off vs on."""
    import io
    import shutil

    from fastapi.testclient import TestClient
    from PIL import Image

    from visionops.config import DriftSettings, ServeSettings
    from visionops.inference.bundle import load_bundle
    from visionops.serve.app import create_app

    buffer = io.BytesIO()
    Image.fromarray(_photo(640, 480, pool_dir)).save(buffer, format="JPEG", quality=90)
    files = {"file": ("photo.jpg", buffer.getvalue(), "image/jpeg")}
    bundle = load_bundle(bundle_dir)
    means: dict[str, list[float]] = {"off": [], "on": []}
    # Online drift tests every 50 predictions on a window of 200, so the measured requests
    # include its background runs (the default is every 100 on 1,000).
    drift_on = DriftSettings(every=50, window=200, permutations=200)
    for round_index in range(rounds):
        for mode in ("off", "on"):
            drift = DriftSettings(online=False) if mode == "off" else drift_on
            log_dir = Path(tempfile.mkdtemp(prefix="drift-cost-"))
            app = create_app(bundle, ServeSettings(), log_dir, drift=drift)
            with TestClient(app) as client:
                deadline = time.monotonic() + 120
                while client.get("/ready").status_code != 200 and time.monotonic() < deadline:
                    time.sleep(0.05)
                for _ in range(20):  # warm-up
                    client.post("/predict", files=files)
                started = time.perf_counter()
                for _ in range(requests):
                    response = client.post("/predict", files=files)
                    response.raise_for_status()
                means[mode].append(1000 * (time.perf_counter() - started) / requests)
                runs = client.get("/drift").json().get("runs", 0) if mode == "on" else 0
            shutil.rmtree(log_dir, ignore_errors=True)
            print(
                f"(round {round_index + 1}, drift {mode}: {means[mode][-1]:.2f} ms per /predict"
                + (f", {runs} online tests ran)" if mode == "on" else ")"),
                flush=True,
            )
    off, on = float(np.mean(means["off"])), float(np.mean(means["on"]))
    print(f"\n## /predict of a 640x480 JPEG, one client, {requests} requests x {rounds} rounds")
    print("| online drift | ms per request (mean of rounds) | ratio |")
    print("|---|---:|---:|")
    print(f"| off | {off:.2f} | 1.00 |")
    print(f"| on (tests every 50 predictions) | {on:.2f} | **{on / off:.3f}** |")


# ---------------------------------------------------------------------------- sampling


def _statistics(rng: np.random.Generator, count: int, shift_sd: float) -> Any:
    from visionops.drift.samples import Sample

    return Sample(
        source="synthetic statistics",
        count=count,
        embeddings=None,
        outputs=None,
        classes=None,
        features={
            "mean": rng.normal(0.5 + 0.05 * shift_sd, 0.05, count),
            "std": rng.normal(0.2, 0.03, count),
            "sharpness": rng.gamma(2.0, 0.01, count),
        },
    )


def sampling(trials: int, reference_n: int, window: int, share: float) -> None:
    from visionops.config import DriftSettings
    from visionops.drift.detect import compare
    from visionops.errors import DriftError
    from visionops.tasks import ClassificationTask

    settings = DriftSettings()
    task = ClassificationTask(["a", "b"])
    print(
        f"\n## Image tests with a random share of uploads measured: reference {reference_n},"
        f" window {window}, {trials} trials, α = {settings.alpha}"
    )
    print(f"| brightness shift | every upload measured | a random {share:.0%} measured |")
    print("|---|---:|---:|")
    for shift_sd in (0.0, 0.2, 0.3, 0.4):
        fired = {1.0: 0, share: 0}
        for trial in range(trials):
            rng = np.random.default_rng(trial)
            reference = _statistics(rng, reference_n, 0.0)
            current = _statistics(rng, window, shift_sd)
            measured = rng.random(window) < share
            for fraction in fired:
                if fraction < 1.0:  # what serve logs under load: NaN where not measured
                    for column in current.features.values():
                        column[~measured] = np.nan
                try:
                    result = compare(reference, current, task=task, settings=settings)
                except DriftError:  # too few images measured to test: the family did not fire
                    continue
                family = result.family("images")
                fired[fraction] += bool(family is not None and family.drifted)
        label = "none (false alarms)" if shift_sd == 0 else f"{shift_sd:g} sd"
        print(f"| {label} | {fired[1.0] / trials:.2f} | {fired[share] / trials:.2f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--parts",
        default="speed,power,reference,camera,cost,sampling",
        help="Comma-separated: speed, power, reference, camera, cost, sampling",
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
    parser.add_argument("--camera-size", type=int, default=100, help="Images per camera trial.")
    parser.add_argument(
        "--camera-fa-size", type=int, default=1000, help="Images per false-alarm camera trial."
    )
    parser.add_argument("--cost-repeats", type=int, default=500, help="Timed calls per cell.")
    parser.add_argument("--requests", type=int, default=200, help="/predict calls per round.")
    parser.add_argument("--rounds", type=int, default=3, help="Interleaved off/on rounds.")
    parser.add_argument(
        "--demo-size", type=int, default=64, help="Side of the generated demo images (files)."
    )
    parser.add_argument("--sampling-reference", type=int, default=300)
    parser.add_argument("--sampling-window", type=int, default=1000)
    parser.add_argument(
        "--sampling-share", type=float, default=0.2, help="Share of uploads measured under load."
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
    if parts & {"power", "reference", "camera", "cost"}:
        with tempfile.TemporaryDirectory(prefix="drift-bench-") as tmp:
            started = time.perf_counter()
            if args.bundle is not None:
                bundle_dir = args.bundle.resolve()
                pool_dir = build_pool(
                    Path(tmp), args.pool_per_class, args.image_size, args.demo_size
                )
            else:
                bundle_dir, pool_dir = build_demo(
                    Path(tmp), args.images_per_class, args.epochs, args.model, args.image_size,
                    args.pool_per_class, args.demo_size,
                )  # fmt: skip
            print(
                f"\n(demo: {args.model}, {args.images_per_class} images per class,"
                f" {args.demo_size} px files, {args.image_size} px model, {args.epochs} epochs"
                " without augmentation; trained and"
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
            if "camera" in parts:
                camera(
                    bundle_dir, pool_dir, args.trials, args.camera_size, args.camera_fa_size,
                    args.permutations,
                )  # fmt: skip
            if "cost" in parts:
                cost(bundle_dir, pool_dir, args.cost_repeats, args.requests, args.rounds)
    if "sampling" in parts:
        sampling(args.trials, args.sampling_reference, args.sampling_window, args.sampling_share)


if __name__ == "__main__":
    main()
