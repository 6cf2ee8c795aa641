"""`visionops train` on an anomaly dataset: quality, run folder, refusals."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from visionops.anomaly.metrics import image_auroc, pixel_auroc
from visionops.artifacts import AnomalyModelRecord, PreparedManifest, RunRecord
from visionops.config import load_settings
from visionops.data.prepared import PreparedDataset
from visionops.errors import DataError, TrainingError
from visionops.tasks import task_for
from visionops.train import train
from visionops.train.predict import predict_split


def test_demo_reaches_the_acceptance_quality(trained_anomaly_run: Path) -> None:
    """Random-init resnet18 on demo:anomaly: image AUROC >= 0.95, pixel AUROC >= 0.90."""
    metrics = json.loads((trained_anomaly_run / "metrics.json").read_text())
    assert metrics["test"]["image_auroc"] >= 0.95
    assert metrics["test"]["pixel_auroc"] >= 0.90
    # Recomputed from the saved checkpoint, not only what the trainer wrote down.
    task = task_for(RunRecord.read(trained_anomaly_run))
    model, run = task.load_model(trained_anomaly_run)
    project = trained_anomaly_run.parent.parent
    dataset = PreparedDataset.open(project / run.dataset.path)
    test = dataset.indices("test")
    mean, std = run.normalization.mean, run.normalization.std
    outputs = predict_split(
        task, model, dataset, "test", mean, std, batch_size=32, device=torch.device("cpu")
    )
    assert dataset.masks is not None
    assert image_auroc(outputs.main, dataset.targets[test]) == pytest.approx(
        metrics["test"]["image_auroc"]
    )
    assert pixel_auroc(outputs.extra["heatmap"], dataset.masks[test]) >= 0.90


def test_run_folder_is_complete(trained_anomaly_run: Path) -> None:
    record = RunRecord.read(trained_anomaly_run)
    assert record.status == "completed" and record.task == "anomaly"
    assert record.epochs_completed == 1 and record.thresholds is not None
    for name in ("config.yaml", "history.jsonl", "train.log", "checkpoints/best.pt"):
        assert (trained_anomaly_run / name).is_file(), name
    latest = trained_anomaly_run.parent / "latest"
    assert latest.resolve() == trained_anomaly_run.resolve()
    assert record.anomaly is not None and record.anomaly.threshold.value == record.thresholds[0]
    # The training metrics.json has no model of its own; its ``anomaly`` record has one.
    extra = AnomalyModelRecord.model_validate(
        json.loads((trained_anomaly_run / "metrics.json").read_text())["anomaly"]
    )
    dataset = PreparedDataset.open(trained_anomaly_run.parent.parent / record.dataset.path)
    good_train = len(dataset.indices("train"))
    assert extra.patches_per_image == 16 * 16  # layer1's grid at 64 px
    assert extra.bank_size == round(0.1 * 16 * 16 * good_train)
    assert extra.bytes_per_image == extra.patches_per_image * extra.feature_dim * 4


def test_resume_of_a_completed_run_is_refused(trained_anomaly_run: Path, tmp_path: Path) -> None:
    project = tmp_path / "project"
    shutil.copytree(trained_anomaly_run.parent.parent, project, symlinks=True)
    settings = load_settings(
        overrides=["recipe=demo-anomaly", "device=cpu", f"runs_root={project / 'runs'}"],
        cwd=project,
    )
    dataset = project / "data" / "prepared" / "anomaly"
    with pytest.raises(TrainingError, match="one pass"):
        train(settings, dataset, resume=project / "runs" / trained_anomaly_run.name)


def test_resume_rebuilds_a_run_left_behind(trained_anomaly_run: Path, tmp_path: Path) -> None:
    project = tmp_path / "project"
    shutil.copytree(trained_anomaly_run.parent.parent, project, symlinks=True)
    run_dir = project / "runs" / trained_anomaly_run.name
    before = RunRecord.read(run_dir)
    before.model_copy(update={"status": "failed"}).write(run_dir)
    settings = load_settings(
        overrides=["recipe=demo-anomaly", "device=cpu", f"runs_root={project / 'runs'}"],
        cwd=project,
    )
    result = train(settings, project / "data" / "prepared" / "anomaly", resume=run_dir)
    after = RunRecord.read(run_dir)
    assert result.status == after.status == "completed" and result.run_dir == run_dir
    assert after.created_at == before.created_at
    assert after.thresholds == pytest.approx(before.thresholds)
    assert after.anomaly is not None and before.anomaly is not None
    assert after.anomaly.bank_size == before.anomaly.bank_size


def _copy_with(
    prepared: Path,
    folder: Path,
    splits: np.ndarray | None = None,
    targets: np.ndarray | None = None,
) -> Path:
    shutil.copytree(prepared, folder)
    if splits is not None:
        np.save(folder / "splits.npy", splits)
    if targets is not None:
        np.save(folder / "targets.npy", targets)
    manifest = PreparedManifest.read(folder)
    final = np.load(folder / "splits.npy")
    manifest.counts.update(
        {s: int((final == c).sum()) for s, c in (("train", 0), ("val", 1), ("test", 2))}
    )
    manifest.write(folder)
    return folder


def test_refusals_leave_no_run_folder(prepared_anomaly: Path, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    settings = load_settings(
        overrides=["recipe=demo-anomaly", "device=cpu", f"runs_root={runs}"], cwd=tmp_path
    )
    original = PreparedDataset.open(prepared_anomaly)
    splits = np.asarray(original.splits).copy()
    targets = np.asarray(original.targets)

    defect_only_val = splits.copy()
    defect_only_val[(splits == 1) & (targets == 0)] = 2
    folder = _copy_with(prepared_anomaly, tmp_path / "defect-val", splits=defect_only_val)
    with pytest.raises(DataError, match="no threshold possible"):
        train(settings, folder)

    too_big = load_settings(
        overrides=[
            "recipe=demo-anomaly",
            "device=cpu",
            f"runs_root={runs}",
            "anomaly.max_bank_mb=1",
        ],
        cwd=tmp_path,
    )
    with pytest.raises(TrainingError, match=r"needs \d+ MB .* anomaly.max_bank_mb=1"):
        train(too_big, prepared_anomaly)
    assert not runs.exists() or not any(runs.iterdir())
