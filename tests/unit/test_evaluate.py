"""``evaluate_run`` on hand-made runs (the metrics themselves are tested with each task)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from visionops.artifacts import EvalMetrics, PreparedManifest, RunRecord
from visionops.config import Settings
from visionops.errors import ArtifactError, ConfigError, DatasetNotFoundError
from visionops.evaluate.stage import evaluate_run

# ----------------------------------------------------------------------- evaluate_run


def _settings(project: Path) -> Settings:
    return Settings(runs_root=project / "runs", device="cpu")


def _head_bias(run_dir: Path) -> np.ndarray:
    """The hand-made model's constant raw output: its head bias (its head weights are 0)."""
    checkpoint = torch.load(run_dir / "checkpoints" / "best.pt", weights_only=True)
    assert not checkpoint["model"]["head.weight"].any()
    return checkpoint["model"]["head.bias"].numpy().astype(np.float64)


def _copy_run(source: Path, project: Path, run: str, dataset: str | None) -> Path:
    """Copy one hand-made run (and its dataset) into a fresh project folder."""
    shutil.copytree(
        source / "runs" / run, project / "runs" / run, ignore=shutil.ignore_patterns("eval")
    )
    if dataset is not None:
        shutil.copytree(
            source / "data" / "prepared" / dataset, project / "data" / "prepared" / dataset
        )
    return project / "runs" / run


def test_classification_run_end_to_end(handmade_runs: Path) -> None:
    result = evaluate_run(_settings(handmade_runs), None)  # runs/latest
    assert result.run_dir.name == "colours-run"
    assert (result.split, result.n, result.task) == ("test", 16, "classification")
    assert result.metrics["accuracy"] == 1.0
    assert result.metrics["top3_accuracy"] == 1.0
    assert result.warnings == []
    saved = EvalMetrics.read(result.eval_dir)
    assert saved.kind == "visionops.eval"
    assert (saved.split, saved.n) == ("test", 16)
    assert saved.metrics["accuracy"] == 1.0
    # The confusion matrix is one of the task's own fields, which the model keeps as extras.
    assert (saved.model_extra or {})["confusion_matrix"]["counts"] == np.diag([4] * 4).tolist()
    assert (saved.checkpoint.which, saved.checkpoint.epoch) == ("best", 2)
    assert saved.dataset.fingerprint_matches is True
    rows = saved.per_class or []
    assert [row.columns()["class"] for row in rows] == ["red", "green", "blue", "yellow"]
    for name in ("confusion_matrix.png", "reliability_diagram.png", "report.html"):
        assert (result.eval_dir / name).is_file()
    with np.load(result.eval_dir / "predictions.npz") as predictions:
        labels = np.load(handmade_runs / "data" / "prepared" / "colours" / "targets.npy")
        splits = np.load(handmade_runs / "data" / "prepared" / "colours" / "splits.npy")
        assert np.array_equal(predictions["indices"], np.flatnonzero(splits == 2))
        assert np.array_equal(predictions["targets"], labels[splits == 2])
        assert np.allclose(predictions["outputs"].sum(axis=1), 1.0, atol=1e-5)


def test_classification_matches_an_independent_forward_pass(handmade_runs: Path) -> None:
    """Normalisation, ordering and softmax agree with running the model by hand."""
    from visionops.runs import load_trained_model

    run_dir = handmade_runs / "runs" / "colours-run"
    result = evaluate_run(_settings(handmade_runs), run_dir, split="val", checkpoint="last")
    assert result.payload["checkpoint"]["epoch"] == 3
    model, manifest = load_trained_model(run_dir, "last")
    prepared = handmade_runs / "data" / "prepared" / "colours"
    splits = np.load(prepared / "splits.npy")
    images = np.load(prepared / "images.npy")[splits == 1]
    pixels = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    mean = torch.tensor(manifest.normalization.mean).view(1, -1, 1, 1)
    std = torch.tensor(manifest.normalization.std).view(1, -1, 1, 1)
    with torch.no_grad():
        expected = torch.softmax(model((pixels - mean) / std)[0], dim=1).numpy()
    with np.load(result.eval_dir / "predictions.npz") as predictions:
        assert np.allclose(predictions["outputs"], expected, atol=1e-5)


def test_multilabel_run_uses_the_tuned_thresholds(handmade_runs: Path) -> None:
    result = evaluate_run(_settings(handmade_runs), "tags-run")
    probabilities = 1 / (1 + np.exp(-_head_bias(result.run_dir)))
    thresholds = RunRecord.read(result.run_dir).thresholds
    predicted = probabilities >= thresholds
    assert predicted[0]
    assert not predicted[1:].any()
    targets = np.load(handmade_runs / "data" / "prepared" / "tags" / "targets.npy")
    splits = np.load(handmade_runs / "data" / "prepared" / "tags" / "splits.npy")
    truth = targets[splits == 2]
    prevalence = truth.mean(axis=0)
    rows = result.rows
    assert [row["threshold"] for row in rows] == thresholds
    assert rows[0]["recall"] == 1.0
    assert rows[0]["f1"] == pytest.approx(2 * prevalence[0] / (1 + prevalence[0]))
    assert all(row["f1"] == 0.0 for row in rows[1:])
    for row, share in zip(rows, prevalence, strict=True):
        assert row["ap"] == pytest.approx(share)  # constant scores: AP = prevalence
    positives = truth.sum(axis=0)
    tp, fp, fn = positives[0], len(truth) - positives[0], positives[1:].sum()
    assert result.metrics["f1_micro"] == pytest.approx(2 * tp / (2 * tp + fp + fn))
    with np.load(result.eval_dir / "predictions.npz") as predictions:
        assert np.allclose(predictions["outputs"], probabilities, atol=1e-6)
    assert (result.eval_dir / "per_label_scores.png").is_file()


def test_regression_run_is_scored_in_original_units(handmade_runs: Path) -> None:
    result = evaluate_run(_settings(handmade_runs), "dishes-run")
    record = RunRecord.read(result.run_dir)
    assert record.target_std is not None and record.target_mean is not None
    expected = _head_bias(result.run_dir) * np.array(record.target_std) + np.array(
        record.target_mean
    )  # [220 kcal, 40 g]
    targets = np.load(handmade_runs / "data" / "prepared" / "dishes" / "targets.npy")
    splits = np.load(handmade_runs / "data" / "prepared" / "dishes" / "splits.npy")
    truth = targets[splits == 2].astype(np.float64)
    with np.load(result.eval_dir / "predictions.npz") as predictions:
        assert np.allclose(predictions["outputs"], expected, atol=1e-4)
    energy, mass = result.rows
    assert (energy["target"], energy["unit"], mass["unit"]) == ("energy", "kcal", "g")
    assert energy["mae"] == pytest.approx(np.abs(truth[:, 0] - expected[0]).mean(), rel=1e-5)
    residual = ((truth[:, 1] - expected[1]) ** 2).sum()
    spread = ((truth[:, 1] - truth[:, 1].mean()) ** 2).sum()
    assert mass["r2"] == pytest.approx(1 - residual / spread, rel=1e-5)
    assert mass["mape_n"] == len(truth) - 1  # the zero mass is left out
    assert result.metrics["r2"] == pytest.approx((energy["r2"] + mass["r2"]) / 2)
    assert {"scatter_energy.png", "scatter_mass.png"} <= {
        path.name for path in result.eval_dir.iterdir()
    }


def test_unknown_split_and_checkpoint_are_config_errors(handmade_runs: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown split 'holdout'.*train, val, test"):
        evaluate_run(_settings(handmade_runs), "tags-run", split="holdout")
    with pytest.raises(ConfigError, match="use best or last"):
        evaluate_run(_settings(handmade_runs), "tags-run", checkpoint="final")


def test_no_run_names_visionops_train(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="visionops train"):
        evaluate_run(_settings(tmp_path), None)


def test_missing_dataset_names_preprocess(handmade_runs: Path, tmp_path: Path) -> None:
    run_dir = _copy_run(handmade_runs, tmp_path, "tags-run", dataset=None)
    with pytest.raises(DatasetNotFoundError, match="visionops data preprocess"):
        evaluate_run(_settings(tmp_path), run_dir)
    assert not (run_dir / "eval").exists()


def test_changed_dataset_warns_or_fails_with_strict(handmade_runs: Path, tmp_path: Path) -> None:
    run_dir = _copy_run(handmade_runs, tmp_path, "dishes-run", "dishes")
    prepared = tmp_path / "data" / "prepared" / "dishes"
    PreparedManifest.read(prepared).model_copy(update={"fingerprint": "f" * 64}).write(prepared)
    with pytest.raises(ArtifactError, match=r"changed since run dishes-run.*--strict"):
        evaluate_run(_settings(tmp_path), run_dir, strict=True)
    assert not (run_dir / "eval").exists()
    result = evaluate_run(_settings(tmp_path), run_dir)
    assert any("changed since" in note for note in result.warnings)
    saved = EvalMetrics.read(result.metrics_path)
    assert saved.dataset.fingerprint_matches is False
    assert saved.warnings == result.warnings
    assert "CHANGED since training" in result.report_path.read_text()


def test_no_test_items_falls_back_to_val(handmade_runs: Path, tmp_path: Path) -> None:
    run_dir = _copy_run(handmade_runs, tmp_path, "tags-run", "tags")
    prepared = tmp_path / "data" / "prepared" / "tags"
    splits = np.load(prepared / "splits.npy")
    splits[splits == 2] = 0
    np.save(prepared / "splits.npy", splits)
    manifest = PreparedManifest.read(prepared)
    manifest.counts.update(train=int((splits == 0).sum()), test=0)
    manifest.write(prepared)
    result = evaluate_run(_settings(tmp_path), run_dir)
    assert result.split == "val"
    assert result.n == int((splits == 1).sum())
    assert any("no test items" in note for note in result.warnings)
    assert result.payload["requested_split"] == "test"


def test_corrupt_checkpoint_keeps_the_previous_evaluation(
    handmade_runs: Path, tmp_path: Path
) -> None:
    run_dir = _copy_run(handmade_runs, tmp_path, "dishes-run", "dishes")
    first = evaluate_run(_settings(tmp_path), run_dir)
    before = first.metrics_path.read_bytes()
    (run_dir / "checkpoints" / "best.pt").write_bytes(b"\x00" * 512)
    with pytest.raises(ArtifactError, match="corrupt or truncated"):
        evaluate_run(_settings(tmp_path), run_dir)
    assert first.metrics_path.read_bytes() == before
    assert sorted(path.name for path in run_dir.iterdir()) == ["checkpoints", "eval", "run.json"]


def test_rerun_replaces_the_eval_folder(handmade_runs: Path, tmp_path: Path) -> None:
    run_dir = _copy_run(handmade_runs, tmp_path, "dishes-run", "dishes")
    evaluate_run(_settings(tmp_path), run_dir)
    (run_dir / "eval" / "stale.png").write_bytes(b"old")
    result = evaluate_run(_settings(tmp_path), run_dir, split="train")
    assert not (run_dir / "eval" / "stale.png").exists()
    assert EvalMetrics.read(result.metrics_path).split == "train"


def test_runs_of_an_unknown_task_are_refused(handmade_runs: Path, tmp_path: Path) -> None:
    run_dir = _copy_run(handmade_runs, tmp_path, "dishes-run", "dishes")
    RunRecord.read(run_dir).model_copy(update={"task": "segmentation"}).write(run_dir)
    with pytest.raises(ArtifactError, match="segmentation run; `visionops eval` scores"):
        evaluate_run(_settings(tmp_path), run_dir)


def test_dataset_with_other_classes_is_refused(handmade_runs: Path, tmp_path: Path) -> None:
    run_dir = _copy_run(handmade_runs, tmp_path, "tags-run", "tags")
    prepared = tmp_path / "data" / "prepared" / "tags"
    manifest = PreparedManifest.read(prepared)
    assert manifest.class_names is not None
    manifest.class_names[0] = "lion"
    manifest.write(prepared)
    with pytest.raises(ArtifactError, match=r"predicts 12 outputs \(cat, .*now has 12 \(lion"):
        evaluate_run(_settings(tmp_path), run_dir)
    assert not (run_dir / "eval").exists()
