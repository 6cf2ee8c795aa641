import numpy as np
import pytest
import torch
from task_sources import run_record

from visionops.errors import ArtifactError, ConfigError
from visionops.tasks import ClassificationTask, get_task


def test_registry_builds_task_from_manifest() -> None:
    task = get_task("classification").from_manifest(
        run_record("classification", class_names=["cat", "dog", "fox"]), label_smoothing=0.1
    )
    assert isinstance(task, ClassificationTask)
    assert task.num_outputs == 3
    assert (task.monitor, task.mode) == ("accuracy", "max")


def test_unknown_task_is_config_error_with_hint() -> None:
    with pytest.raises(ConfigError, match="did you mean 'regression'"):
        get_task("regresion")
    with pytest.raises(ConfigError, match="classification, multilabel, regression, anomaly"):
        get_task("segmentation")


def test_one_class_is_refused() -> None:
    with pytest.raises(ArtifactError, match="at least 2 classes"):
        ClassificationTask(["only"])


def test_loss_matches_cross_entropy_with_smoothing() -> None:
    task = ClassificationTask(["a", "b", "c"], label_smoothing=0.2)
    logits = torch.tensor([[2.0, 0.5, -1.0], [0.0, 0.0, 3.0]])
    targets = task.encode_targets(torch.tensor([0, 2]))
    expected = torch.nn.functional.cross_entropy(logits, targets, label_smoothing=0.2)
    assert torch.allclose(task.loss(logits, targets), expected)


def test_postprocess_is_softmax_and_metrics_are_right() -> None:
    task = ClassificationTask(["a", "b"])
    probabilities = task.postprocess(torch.tensor([[3.0, 1.0], [0.0, 2.0], [1.0, 0.0]]))
    assert torch.allclose(probabilities.sum(1), torch.ones(3))
    metrics = task.metrics(probabilities.numpy(), np.array([0, 1, 1]))
    assert metrics["accuracy"] == pytest.approx(2 / 3)
    assert metrics["balanced_accuracy"] == pytest.approx(0.75)
    assert "top5_accuracy" not in metrics


def test_better_follows_mode_and_ignores_nan() -> None:
    task = ClassificationTask(["a", "b"])
    assert task.better(0.5, None)
    assert task.better(0.6, 0.5)
    assert not task.better(0.4, 0.5)
    assert not task.better(float("nan"), None)


def test_a_later_epoch_within_validation_noise_counts_as_best() -> None:
    """On 150 val images, 0.887 after 0.893 is one image: noise, so the later weights win."""
    task = get_task("classification").from_manifest(
        run_record("classification", class_names=["a", "b"])
    )
    assert task.within_noise(0.8867, 0.8933, images=150)  # 1 image short
    assert not task.within_noise(0.86, 0.8933, images=150)  # 5 images short: a real drop
    assert not task.within_noise(0.8867, 0.8933, images=100_000)  # a large split is exact
    assert not task.within_noise(0.5, None, images=150)  # nothing to be close to yet
    assert not task.within_noise(float("nan"), 0.9, images=150)


def test_the_top_score_of_a_resumed_run_comes_from_its_history() -> None:
    from visionops.train.loop import _top_score

    task = get_task("classification").from_manifest(
        run_record("classification", class_names=["a", "b"])
    )
    history = [{"epoch": 1, "val_accuracy": 0.8}, {"epoch": 2}, {"epoch": 3, "val_accuracy": 0.9}]
    # The best checkpoint may be a later, slightly lower epoch; the bar stays the top score.
    assert _top_score(history, task, 0.88) == 0.9
    assert _top_score([], task, 0.88) == 0.88
