"""The hard demo (``data.demo.defects=faint``): thin, faint threads, and the quality floor."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from visionops.anomaly.metrics import image_auroc, pixel_auroc
from visionops.artifacts import RunRecord
from visionops.config import DemoSettings, load_settings
from visionops.data.fetch import fetch_dataset
from visionops.data.prepared import PreparedDataset
from visionops.data.preprocess import prepare_dataset
from visionops.data.synthetic import (
    ANOMALY_CATEGORY,
    ANOMALY_FAINT_DEFECTS,
    demo_version,
    generate_demo,
)
from visionops.tasks import task_for
from visionops.train import train
from visionops.train.predict import predict_split


def test_faint_threads_are_thin_and_faint(tmp_path: Path) -> None:
    generate_demo(
        "anomaly", tmp_path, DemoSettings(images_per_class=12, image_size=96, defects="faint")
    )
    root = tmp_path / ANOMALY_CATEGORY
    (defect,) = ANOMALY_FAINT_DEFECTS
    images = sorted((root / "test" / defect).glob("*.png"))
    assert len(images) == 6 and not (root / "test" / "hole").exists()
    for image_path in images:
        mask = np.asarray(
            Image.open(root / "ground_truth" / defect / f"{image_path.stem}_mask.png")
        )
        assert set(np.unique(mask)) == {0, 255}
        # A thread 1-2 px wide and 24-48 px long: a few dozen pixels, not a blob.
        assert 15 <= int((mask > 0).sum()) <= 150
        pixels = np.asarray(Image.open(image_path).convert("RGB"), dtype=np.float32)
        rows, cols = np.nonzero(mask)
        change = np.abs(pixels[rows, cols].mean(axis=0) - pixels[mask == 0].mean(axis=0))
        assert change.max() < 30  # fainter than the weave's own swing
    assert demo_version(DemoSettings(defects="faint")).endswith(",defects=faint")
    assert "defects" not in demo_version(DemoSettings())


def test_faint_demo_quality_floor(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The recipe's settings (64 px, layer1 + layer2, random resnet18) on faint threads, seed 0.

    Scored on every image of the source test split (val + test halves together: 58 images),
    since 14 images swing AUROC by ±0.1. Measured 2026-12-02: image 0.856, pixel 0.905 (the
    coarse demo: 0.95+ / 0.90+). anomalib's PatchCore reached 0.71 / 0.84 on the faint demo
    at 224 px (benchmarks/README.md).
    """
    monkeypatch.chdir(tmp_path)
    settings = load_settings(
        overrides=[
            "recipe=demo-anomaly",
            "model.name=resnet18",
            "device=cpu",
            "data.workers=1",
            "data.demo.defects=faint",
            "data.demo.images_per_class=40",
            "data.demo.image_size=64",
        ],
        cwd=tmp_path,
    )
    raw = fetch_dataset("demo:anomaly", settings).path
    prepared = prepare_dataset(raw, settings).path
    run_dir = tmp_path / train(settings, prepared).run_dir
    task = task_for(RunRecord.read(run_dir))
    model, run = task.load_model(run_dir)
    dataset = PreparedDataset.open(prepared)
    assert dataset.masks is not None
    scores, heatmaps, labels, masks = [], [], [], []
    for split in ("val", "test"):
        outputs = predict_split(
            task,
            model,
            dataset,
            split,
            run.normalization.mean,
            run.normalization.std,
            batch_size=32,
            device=torch.device("cpu"),
        )
        indices = dataset.indices(split)
        scores.append(np.asarray(outputs.main).reshape(-1))
        heatmaps.append(outputs.extra["heatmap"])
        labels.append(dataset.targets[indices])
        masks.append(dataset.masks[indices])
    assert sum(len(part) for part in labels) == 58
    image = image_auroc(np.concatenate(scores), np.concatenate(labels))
    pixel = pixel_auroc(np.concatenate(heatmaps), np.concatenate(masks))
    # 2026-12-08, with demo:anomaly's good test images doubled (58 images): image 0.782; the
    # 0.856 of 2026-12-02 was on 28 images, where one image moves AUROC by several points.
    assert image >= 0.75
    assert pixel >= 0.85
