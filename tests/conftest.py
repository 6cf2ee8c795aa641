"""Shared session fixtures: tiny generated data, built once and reused across tests.

Every expensive fixture is built through :func:`built_once`: once per test session, also
under pytest-xdist, where the workers share one cache folder next to their own temporary
folders and the first worker that needs a fixture builds it while the others wait on a file
lock. Tests never modify these fixtures (copy them first), so any number of tests and workers
can use the same trained run.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

# pytest-xdist starts its workers with COLUMNS=80, and rich fixes a console's width from COLUMNS
# when it is built (at import): the CLI's consoles would then ignore the width a test asks for.
os.environ.pop("COLUMNS", None)
os.environ.pop("LINES", None)

from visionops.artifacts import (
    DatasetRef,
    ModelSpec,
    Monitor,
    Normalization,
    PreparedManifest,
    RunRecord,
    SourceRecord,
)

if os.environ.get("PYTEST_XDIST_WORKER"):
    # One compute thread per pytest-xdist worker (and for the CLIs they start): two workers
    # with two threads each would oversubscribe the cores and make every test slower.
    os.environ.setdefault("OMP_NUM_THREADS", "1")


def _shared_root(factory: pytest.TempPathFactory) -> Path:
    base = factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent  # this session's folder, above every worker's own
    root = base / "built-once"
    root.mkdir(exist_ok=True)
    return root


def built_once(factory: pytest.TempPathFactory, key: str, build: Callable[[Path], Path]) -> Path:
    """Build an expensive fixture once per test session, across pytest-xdist workers too.

    Args:
        factory: pytest's ``tmp_path_factory``.
        key: The fixture's name (one folder per key).
        build: Makes the fixture inside the empty folder it is given; returns its path.

    Returns:
        What ``build`` returned, the first time; the same path for every later caller.
    """
    root = _shared_root(factory)
    folder, done = root / key, root / f"{key}.json"
    with (root / f"{key}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # blocks while another worker builds it
        if done.is_file():
            relative = str(json.loads(done.read_text(encoding="utf-8"))["result"])
            return folder / relative
        shutil.rmtree(folder, ignore_errors=True)  # a build that failed part-way
        folder.mkdir()
        result = build(folder)
        relative = result.relative_to(folder)
        done.write_text(json.dumps({"result": str(relative)}), encoding="utf-8")
        return result


# --------------------------------------------------------------------------------------
# Hand-made runs (no training): prepared datasets written with numpy and runs whose
# checkpoints are built with `build_model` and set by hand, exactly in the formats of
# docs/artifacts.md. Their predictions are known in advance, so evaluation tests can check
# exact metric values.

HANDMADE_COLOURS = np.array([[220, 30, 30], [30, 200, 30], [30, 30, 220], [220, 220, 40]])
"""Classification: one solid colour (plus noise) per class."""
HANDMADE_CLASSES = ["red", "green", "blue", "yellow"]
HANDMADE_LABELS = ["cat", "dog", "tree", *(f"tag{i:02d}" for i in range(3, 12))]
HANDMADE_LABEL_PROBABILITIES = [0.8, 0.3, 0.6] + [0.1] * 9
"""Multilabel: the hand-made model gives these sigmoid outputs to every image..."""
HANDMADE_THRESHOLDS = [0.5, 0.5, 0.7] + [0.5] * 9
"""...and run.json tunes these thresholds, so it predicts label 0 only."""
HANDMADE_TARGET_MEAN = [200.0, 50.0]
HANDMADE_TARGET_STD = [40.0, 10.0]
HANDMADE_RAW_OUTPUT = [0.5, -1.0]
"""Regression: the hand-made model's constant raw output, i.e. [220 kcal, 40 g] once
de-standardised."""


def _fingerprint(*arrays: np.ndarray) -> str:
    digest = hashlib.sha256()
    for array in arrays:
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def write_prepared(
    folder: Path,
    *,
    task: str,
    images: np.ndarray,
    targets: np.ndarray,
    splits: np.ndarray,
    class_names: Sequence[str] | None = None,
    target_names: Sequence[str] | None = None,
    target_units: Sequence[str] | None = None,
    target_mean: Sequence[float] | None = None,
    target_std: Sequence[float] | None = None,
) -> dict[str, Any]:
    """Write a prepared dataset (docs/artifacts.md) and return its manifest."""
    folder.mkdir(parents=True)
    np.save(folder / "images.npy", images)
    np.save(folder / "targets.npy", targets)
    np.save(folder / "splits.npy", splits)
    names = ["train", "val", "test"]
    with (folder / "items.csv").open("w", encoding="utf-8") as handle:
        handle.write("index,path,split,target,sha256\n")
        for index in range(len(images)):
            handle.write(f"{index},img/{index}.png,{names[splits[index]]},x,0\n")
    (folder / "rejected.csv").write_text("path,reason\n", encoding="utf-8")
    train = images[splits == 0].astype(np.float64) / 255
    manifest = PreparedManifest(
        name=folder.name,
        task=task,
        class_names=list(class_names) if class_names is not None else None,
        target_names=list(target_names) if target_names is not None else None,
        target_units=list(target_units) if target_units is not None else None,
        target_mean=list(target_mean) if target_mean is not None else None,
        target_std=list(target_std) if target_std is not None else None,
        image_size=int(images.shape[1]),
        channels=int(images.shape[3]),
        resize="crop",
        mean=train.mean(axis=(0, 1, 2)).tolist(),
        std=train.std(axis=(0, 1, 2)).tolist(),
        counts={
            "train": int((splits == 0).sum()),
            "val": int((splits == 1).sum()),
            "test": int((splits == 2).sum()),
            "rejected": 0,
            "duplicates_across_splits": 0,
        },
        class_counts={"train": {}, "val": {}, "test": {}},
        splits_from_source=False,
        source=SourceRecord(
            name=folder.name, source="hand-made", file_count=0, bytes=0, fingerprint="0"
        ),
        params={"image_size": int(images.shape[1]), "channels": int(images.shape[3])},
        fingerprint=_fingerprint(images, targets, splits),
        created_at="2026-01-01T00:00:00+00:00",
        visionops_version="0.1.0",
    )
    manifest.write(folder)
    return manifest.to_json()


def write_run(
    runs_root: Path,
    name: str,
    *,
    model: Any,
    model_name: str,
    dataset_path: str,
    prepared: dict[str, Any],
    thresholds: Sequence[float] | None = None,
    monitor: str = "accuracy",
) -> Path:
    """Write a completed run folder (run.json + best/last checkpoints) for ``model``."""
    import torch

    run_dir = runs_root / name
    (run_dir / "checkpoints").mkdir(parents=True)
    record = RunRecord(
        name=name,
        status="completed",
        task=prepared["task"],
        dataset=DatasetRef(
            path=dataset_path, name=prepared["name"], fingerprint=prepared["fingerprint"]
        ),
        model=ModelSpec(
            name=model_name,
            num_outputs=int(model.head.out_features),
            channels=prepared["channels"],
            image_size=prepared["image_size"],
            feature_dim=int(model.feature_dim),
            dropout=0.0,
        ),
        normalization=Normalization(mean=prepared["mean"], std=prepared["std"]),
        resize="crop",
        class_names=prepared["class_names"],
        target_names=prepared["target_names"],
        target_units=prepared["target_units"],
        target_mean=prepared["target_mean"],
        target_std=prepared["target_std"],
        thresholds=list(thresholds) if thresholds is not None else None,
        monitor=Monitor(metric=monitor, mode="max"),
        best_epoch=2,
        best_metric=0.5,
        epochs_completed=3,
        config_hash="0" * 64,
        created_at="2026-01-01T00:00:00+00:00",
        finished_at="2026-01-01T00:01:00+00:00",
        versions={"visionops": "0.1.0", "torch": str(torch.__version__)},
    )
    record.write(run_dir)
    manifest = record.to_json()
    for which, epoch in (("best", 2), ("last", 3)):
        checkpoint = {
            "format": "visionops.checkpoint",
            "schema_version": 1,
            "epoch": epoch,
            "model": model.state_dict(),
            "optimizer": {},
            "scheduler": {},
            "scaler": None,
            "ema": None,
            "rng": {},
            "best_metric": 0.5,
            "run": manifest,
        }
        torch.save(checkpoint, run_dir / "checkpoints" / f"{which}.pt")
    return run_dir


def _normalised(images: np.ndarray, prepared: dict[str, Any]) -> Any:
    import torch

    pixels = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    mean = torch.tensor(prepared["mean"], dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(prepared["std"], dtype=torch.float32).view(1, -1, 1, 1)
    return (pixels - mean) / std


def _colour_classifier(images: np.ndarray, labels: np.ndarray, prepared: dict[str, Any]) -> Any:
    """A resnet18 whose head is the nearest-class-centroid rule on its embeddings.

    BatchNorm statistics are set from the train images, so random convolutions give
    embeddings that separate solid colours; the linear head ``w_c = mu_c``,
    ``b_c = -|mu_c|^2 / 2`` then classifies every image of the generated data correctly.
    """
    import torch

    from visionops.models import build_model

    torch.manual_seed(0)
    model = build_model("resnet18", num_outputs=len(HANDMADE_CLASSES))
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.momentum = None  # cumulative average over the one calibration pass
            module.reset_running_stats()
    is_train = prepared["_splits"] == 0
    model.train()
    with torch.no_grad():
        model(_normalised(images[is_train], prepared))
    model.eval()
    with torch.no_grad():
        _, embedding = model(_normalised(images[is_train], prepared))
    centroids = torch.stack(
        [embedding[torch.from_numpy(labels[is_train] == c)].mean(0) for c in range(4)]
    )
    with torch.no_grad():
        model.head.weight.copy_(centroids)
        model.head.bias.copy_(-0.5 * (centroids**2).sum(1))
    return model


def _constant_model(name: str, raw_output: Sequence[float]) -> Any:
    """A network whose head ignores the image: weight 0, bias ``raw_output``."""
    import torch

    from visionops.models import build_model

    torch.manual_seed(0)
    model = build_model(name, num_outputs=len(raw_output)).eval()
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.copy_(torch.tensor(raw_output, dtype=torch.float32))
    return model


@pytest.fixture(scope="session")
def handmade_runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return built_once(tmp_path_factory, "handmade", _build_handmade)


def _build_handmade(root: Path) -> Path:
    """A project folder with three completed runs whose predictions are known.

    ``data/prepared/{colours,tags,dishes}`` and ``runs/{colours-run,tags-run,dishes-run}``,
    ``runs/latest`` pointing at ``colours-run``; dataset paths in run.json are relative to
    the project folder, as ``visionops train`` writes them.

    - colours (classification, 4 classes, 12 images each: 6 train, 2 val, 4 test): the
      model is right on every image.
    - tags (multilabel, 12 labels, 40 images): every image gets probabilities
      ``HANDMADE_LABEL_PROBABILITIES``, thresholds ``HANDMADE_THRESHOLDS``.
    - dishes (regression, energy kcal + mass g, 40 images): every image gets 220 kcal, 40 g.
    """
    import torch

    from visionops.runs import update_latest

    prepared_root = root / "data" / "prepared"
    runs_root = root / "runs"
    rng = np.random.default_rng(0)

    labels = np.repeat(np.arange(4), 12).astype(np.int64)
    noise = rng.normal(0, 8, (len(labels), 32, 32, 3))
    images = np.clip(HANDMADE_COLOURS[labels][:, None, None, :] + noise, 0, 255).astype(np.uint8)
    position = np.tile(np.arange(12), 4)
    splits = np.where(position < 6, 0, np.where(position < 8, 1, 2)).astype(np.uint8)
    colours = write_prepared(
        prepared_root / "colours",
        task="classification",
        images=images,
        targets=labels,
        splits=splits,
        class_names=HANDMADE_CLASSES,
    )
    model = _colour_classifier(images, labels, {**colours, "_splits": splits})
    colours_run = write_run(
        runs_root,
        "colours-run",
        model=model,
        model_name="resnet18",
        dataset_path="data/prepared/colours",
        prepared=colours,
    )

    small = rng.integers(0, 256, (40, 32, 32, 3), dtype=np.uint8)
    small_splits = np.array([0] * 20 + [1] * 8 + [2] * 12, dtype=np.uint8)
    tags = write_prepared(
        prepared_root / "tags",
        task="multilabel",
        images=small,
        targets=(rng.random((40, len(HANDMADE_LABELS))) < 0.5).astype(np.float32),
        splits=small_splits,
        class_names=HANDMADE_LABELS,
    )
    logits = torch.logit(torch.tensor(HANDMADE_LABEL_PROBABILITIES)).tolist()
    write_run(
        runs_root,
        "tags-run",
        model=_constant_model("shufflenet_v2_x0_5", logits),
        model_name="shufflenet_v2_x0_5",
        dataset_path="data/prepared/tags",
        prepared=tags,
        thresholds=HANDMADE_THRESHOLDS,
        monitor="map",
    )

    values = np.stack([rng.normal(200, 40, 40), rng.normal(50, 10, 40)], axis=1)
    values[30, 1] = 0.0  # a test item of zero mass: MAPE must leave it out
    dishes = write_prepared(
        prepared_root / "dishes",
        task="regression",
        images=small,
        targets=values.astype(np.float32),
        splits=small_splits,
        target_names=["energy", "mass"],
        target_units=["kcal", "g"],
        target_mean=HANDMADE_TARGET_MEAN,
        target_std=HANDMADE_TARGET_STD,
    )
    write_run(
        runs_root,
        "dishes-run",
        model=_constant_model("shufflenet_v2_x0_5", HANDMADE_RAW_OUTPUT),
        model_name="shufflenet_v2_x0_5",
        dataset_path="data/prepared/dishes",
        prepared=dishes,
        monitor="r2",
    )
    update_latest(runs_root, colours_run)
    return root


# --------------------------------------------------------------------------------------
# Raw demo datasets (owner: data fetch / synthetic demos). Each is generated once per
# session with `visionops.data.fetch.fetch_dataset` (so it carries a real source.json) into
# its own tmp folder; the fixture returns the raw dataset folder. Sizes are small but
# enough for a learnability check at 64 px.

RAW_DEMO_SIZES = {
    "shapes": {"images_per_class": 80, "image_size": 64},  # 640 images, 8 classes
    "multilabel": {"images_per_class": 40, "image_size": 64},  # 240 images, 6 labels
    "regression": {"images_per_class": 80, "image_size": 64},  # 400 dishes x 8 frames
    "anomaly": {"images_per_class": 40, "image_size": 64},  # 40 train good, 58 held out
}
"""``data.demo`` settings of the raw demo fixtures, by demo name.

Big enough for the learnability checks: with the trained-run settings below (resnet18, random
init, CPU, 64 px) shapes reach test accuracy 1.0, multilabel mAP 0.96, regression mean R² 0.83+
(measured 2026-12-01; shapes at 40/class only reached 0.77).
"""


def _fetch_raw_demo(tmp_path_factory: pytest.TempPathFactory, demo: str) -> Path:
    return built_once(tmp_path_factory, f"raw-{demo}", lambda root: _build_raw_demo(root, demo))


def _build_raw_demo(root: Path, demo: str) -> Path:
    from visionops.config import load_settings
    from visionops.data.fetch import fetch_dataset

    sizes = RAW_DEMO_SIZES[demo]
    settings = load_settings(
        overrides=[
            f"data.raw_root={root}",
            f"data.demo.images_per_class={sizes['images_per_class']}",
            f"data.demo.image_size={sizes['image_size']}",
        ],
        cwd=root,
    )
    return fetch_dataset(f"demo:{demo}", settings).path


@pytest.fixture(scope="session")
def raw_shapes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``demo:shapes`` raw folder: ``train|validation|test/<class>/*.jpg``, 40 per class."""
    return _fetch_raw_demo(tmp_path_factory, "shapes")


@pytest.fixture(scope="session")
def raw_multilabel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``demo:multilabel`` raw folder: ``Multi_Label_dataset/{train.csv,Images/}``, 240 images."""
    return _fetch_raw_demo(tmp_path_factory, "multilabel")


@pytest.fixture(scope="session")
def raw_regression(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``demo:regression`` raw folder: 200 ``dish_<id>/`` folders + ``metadata/*.csv``."""
    return _fetch_raw_demo(tmp_path_factory, "regression")


@pytest.fixture(scope="session")
def raw_anomaly(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``demo:anomaly`` raw folder: MVTec-style ``carpet/`` tree with masks."""
    return _fetch_raw_demo(tmp_path_factory, "anomaly")


# End of the raw demo datasets block.
# --------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------
# Prepared demo datasets (owner: data preprocess). Each raw demo fixture above is prepared
# once per session with `visionops.data.preprocess.prepare_dataset` into
# `<tmp>/data/prepared/<name>`; the fixture returns that folder (open it with
# `visionops.data.prepared.PreparedDataset.open`). Seeded splits, so the same every run.

PREPARED_IMAGE_SIZE = 64
"""Side of the prepared demo fixtures' images (the demo recipes' ``data.image_size``)."""


def _prepare_demo(tmp_path_factory: pytest.TempPathFactory, raw: Path, name: str) -> Path:
    return built_once(
        tmp_path_factory, f"prepared-{name}", lambda root: _build_prepared_demo(root, raw)
    )


def _build_prepared_demo(root: Path, raw: Path) -> Path:
    from visionops.config import load_settings
    from visionops.data.preprocess import prepare_dataset

    settings = load_settings(
        overrides=[
            f"data.prepared_root={root / 'data' / 'prepared'}",
            f"data.image_size={PREPARED_IMAGE_SIZE}",
            "data.workers=1",  # tiny data: a process pool would cost more than it saves
        ],
        cwd=root,
    )
    return prepare_dataset(raw, settings).path


@pytest.fixture(scope="session")
def prepared_shapes(tmp_path_factory: pytest.TempPathFactory, raw_shapes: Path) -> Path:
    """Prepared ``demo:shapes``: classification, 8 classes, 64 px RGB, source splits."""
    return _prepare_demo(tmp_path_factory, raw_shapes, "shapes")


@pytest.fixture(scope="session")
def prepared_multilabel(tmp_path_factory: pytest.TempPathFactory, raw_multilabel: Path) -> Path:
    """Prepared ``demo:multilabel``: multilabel, 6 labels, 64 px RGB, seeded splits."""
    return _prepare_demo(tmp_path_factory, raw_multilabel, "multilabel")


@pytest.fixture(scope="session")
def prepared_regression(tmp_path_factory: pytest.TempPathFactory, raw_regression: Path) -> Path:
    """Prepared ``demo:regression``: 5 nutrition targets (kcal, g), 64 px RGB, camera A."""
    return _prepare_demo(tmp_path_factory, raw_regression, "regression")


@pytest.fixture(scope="session")
def prepared_anomaly(tmp_path_factory: pytest.TempPathFactory, raw_anomaly: Path) -> Path:
    """Prepared ``demo:anomaly``: train = good only; val/test good + defects; masks.npy."""
    return _prepare_demo(tmp_path_factory, raw_anomaly, "anomaly")


# End of the prepared demo datasets block.
# --------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------
# Trained runs (owner: train). Each prepared demo fixture above is copied into its own
# project folder `<tmp>/trained-<name>/data/prepared/<name>` and trained ONCE per session
# with `visionops.train.train` (random initialisation, CPU, resnet18, 64 px) from that
# folder, exactly as `visionops train data/prepared/<name> ...` would: the fixture returns
# the run folder `<project>/runs/run-001` (`runs/latest` points at it; run.json's dataset
# path is relative to the project folder, `run_dir.parent.parent`). Do not modify these
# runs in tests: copy them (shutil.copytree) if a test writes into a run folder.

TRAINED_DEMO_OVERRIDES = {
    "shapes": [
        "train.epochs=12",  # test accuracy 1.0 (0.96 at 8 epochs)
        "train.augment.rotate_degrees=180",  # shapes look the same at any angle
        "train.augment.vflip=0.5",
    ],
    "multilabel": [
        "train.epochs=16",  # test mAP 0.955 (0.85 at 12, 0.99 at 20)
        "train.augment.crop_scale=1.0",  # a crop can cut a shape out and change the labels
        "train.augment.vflip=0.5",
    ],
    "regression": [
        "train.epochs=20",  # test mean R² 0.83 at 12 and 16 epochs: 20 keeps a margin
        "train.lr=0.003",
        "train.augment.crop_scale=1.0",  # a crop would cut food away and change the totals
        "train.augment.rotate_degrees=180",
        "train.augment.vflip=0.5",
    ],
    "anomaly": ["recipe=demo-anomaly"],  # one pass: memory bank, no epochs
}
"""Settings of the trained demo fixtures (besides resnet18, batch 32, CPU), by demo name."""


def _train_demo(tmp_path_factory: pytest.TempPathFactory, prepared: Path, name: str) -> Path:
    return built_once(
        tmp_path_factory,
        f"trained-{name}",
        lambda project: _build_trained_demo(project, prepared, name),
    )


def _build_trained_demo(project: Path, prepared: Path, name: str) -> Path:
    import shutil

    from visionops.config import load_settings
    from visionops.train import train

    dataset = project / "data" / "prepared" / name
    shutil.copytree(prepared, dataset)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(project)
        settings = load_settings(
            overrides=[
                "model.name=resnet18",
                "train.batch_size=32",
                "device=cpu",
                *TRAINED_DEMO_OVERRIDES[name],
            ],
            cwd=project,
        )
        result = train(settings, Path("data/prepared") / name)
    return project / result.run_dir


@pytest.fixture(scope="session")
def trained_shapes_run(tmp_path_factory: pytest.TempPathFactory, prepared_shapes: Path) -> Path:
    """A completed classification run on ``prepared_shapes`` (test accuracy >= 0.95)."""
    return _train_demo(tmp_path_factory, prepared_shapes, "shapes")


@pytest.fixture(scope="session")
def trained_multilabel_run(
    tmp_path_factory: pytest.TempPathFactory, prepared_multilabel: Path
) -> Path:
    """A completed multilabel run on ``prepared_multilabel`` (test mAP >= 0.90, thresholds)."""
    return _train_demo(tmp_path_factory, prepared_multilabel, "multilabel")


@pytest.fixture(scope="session")
def trained_anomaly_run(tmp_path_factory: pytest.TempPathFactory, prepared_anomaly: Path) -> Path:
    """A completed anomaly run on ``prepared_anomaly`` (memory bank; test image AUROC >= 0.95)."""
    return _train_demo(tmp_path_factory, prepared_anomaly, "anomaly")


@pytest.fixture(scope="session")
def trained_regression_run(
    tmp_path_factory: pytest.TempPathFactory, prepared_regression: Path
) -> Path:
    """A completed regression run on ``prepared_regression`` (test mean R² >= 0.80)."""
    return _train_demo(tmp_path_factory, prepared_regression, "regression")


# End of the trained runs block.
# --------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------
# Exported bundles (owner: export). Each hand-made run is exported ONCE per session with
# `visionops.export.stage.export_run` (default settings: fp32, NCHW, reference = val split)
# in its own copy of the hand-made project; the fixture returns the bundle folder
# `<project>/runs/<run>/bundle`. The serve, drift and export tests share them. Do not write
# into a bundle or its run folder (a server logs there unless given a log folder): copy the
# project (`bundle_dir.parents[2]`, symlinks=True) first.


def _export_handmade(
    tmp_path_factory: pytest.TempPathFactory, handmade_runs: Path, run: str
) -> Path:
    return built_once(
        tmp_path_factory,
        f"bundle-{run}",
        lambda project: _build_handmade_bundle(project, handmade_runs, run),
    )


def _build_handmade_bundle(project: Path, handmade_runs: Path, run: str) -> Path:
    from visionops.config import load_settings
    from visionops.export.stage import export_run

    shutil.copytree(handmade_runs / "data", project / "data")
    shutil.copytree(handmade_runs / "runs", project / "runs", symlinks=True)
    settings = load_settings(overrides=[f"runs_root={project / 'runs'}"], cwd=project)
    return export_run(settings, project / "runs" / run).bundle_dir


@pytest.fixture(scope="session")
def classification_bundle(tmp_path_factory: pytest.TempPathFactory, handmade_runs: Path) -> Path:
    """colours-run exported: names the colour of a solid image (red, green, blue, yellow)."""
    return _export_handmade(tmp_path_factory, handmade_runs, "colours-run")


@pytest.fixture(scope="session")
def multilabel_bundle(tmp_path_factory: pytest.TempPathFactory, handmade_runs: Path) -> Path:
    """tags-run exported: probabilities 0.8/0.3/0.6/0.1... against thresholds 0.5/0.5/0.7."""
    return _export_handmade(tmp_path_factory, handmade_runs, "tags-run")


@pytest.fixture(scope="session")
def regression_bundle(tmp_path_factory: pytest.TempPathFactory, handmade_runs: Path) -> Path:
    """dishes-run exported: 220 kcal, 40 g for every image."""
    return _export_handmade(tmp_path_factory, handmade_runs, "dishes-run")


def _build_shapes_bundle(project: Path, trained_run: Path) -> Path:
    from visionops.config import load_settings
    from visionops.export.stage import export_run

    shutil.copytree(trained_run.parent.parent, project / "p", symlinks=True)
    root = project / "p"
    settings = load_settings(overrides=[f"runs_root={root / 'runs'}"], cwd=root)
    return export_run(settings, root / "runs" / trained_run.name).bundle_dir


@pytest.fixture(scope="session")
def shapes_bundle(tmp_path_factory: pytest.TempPathFactory, trained_shapes_run: Path) -> Path:
    """trained_shapes_run exported (resnet18 at 64 px: a 2x2 class activation map)."""
    return built_once(
        tmp_path_factory,
        "bundle-shapes",
        lambda project: _build_shapes_bundle(project, trained_shapes_run),
    )


# End of the exported bundles block.
# --------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------
# Real images and ImageNet weights (scripts/real-data).


@pytest.fixture(scope="session")
def real_data() -> Path:
    """The cache ``scripts/real-data`` fills (``$VISIONOPS_REAL_DATA``).

    Absent, the real-data tests skip, except where ``VISIONOPS_REQUIRE_REAL_DATA=1`` (CI):
    there they fail, so a broken fetch cannot turn them into silent skips.
    """
    root = Path(
        os.environ.get("VISIONOPS_REAL_DATA") or Path.home() / ".cache" / "visionops" / "real-data"
    )
    if not (root / "huggingface" / ".visionops-real-data").is_file():
        message = f"no real-data cache in {root}: run scripts/real-data"
        if os.environ.get("VISIONOPS_REQUIRE_REAL_DATA") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return root


@pytest.fixture
def real_weights(real_data: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """torch and timm pointed at the real-data cache's ImageNet weights, offline."""
    monkeypatch.setenv("TORCH_HOME", str(real_data / "torch"))
    monkeypatch.setenv("HF_HOME", str(real_data / "huggingface"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return real_data
