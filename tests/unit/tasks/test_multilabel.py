import numpy as np
import pytest
import torch
from task_sources import run_record

from visionops.tasks import MultilabelTask, get_task
from visionops.tasks.multilabel import multilabel_metrics, tune_thresholds


def test_loss_is_bce_with_logits() -> None:
    task = MultilabelTask(["a", "b"])
    logits = torch.tensor([[1.0, -2.0], [0.5, 0.5]])
    targets = task.encode_targets(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    expected = torch.nn.functional.binary_cross_entropy_with_logits(logits, targets)
    assert torch.allclose(task.loss(logits, targets), expected)
    assert torch.allclose(task.postprocess(logits), torch.sigmoid(logits))


def test_thresholds_are_tuned_per_class_for_f1() -> None:
    rng = np.random.default_rng(0)
    truth = rng.random((200, 2)) < 0.5
    # Class 0 is separable at 0.3, class 1 at 0.7: a single 0.5 cut would be wrong for both.
    probabilities = np.where(truth, [0.35, 0.8], [0.2, 0.6]) + rng.normal(0, 0.02, (200, 2))
    thresholds = tune_thresholds(probabilities, truth.astype(np.float32))
    assert 0.2 < thresholds[0] <= 0.35
    assert 0.6 < thresholds[1] <= 0.8
    tuned = multilabel_metrics(probabilities, truth, thresholds)
    default = multilabel_metrics(probabilities, truth)
    assert tuned["f1_macro"] == pytest.approx(1.0)
    assert default["f1_macro"] < 0.9
    assert tuned["map"] == pytest.approx(1.0)


def test_class_without_positives_keeps_half_and_is_left_out_of_map() -> None:
    truth = np.array([[1, 0], [0, 0], [1, 0]], dtype=np.float32)
    probabilities = np.array([[0.9, 0.1], [0.2, 0.3], [0.8, 0.2]])
    assert tune_thresholds(probabilities, truth)[1] == 0.5
    assert multilabel_metrics(probabilities, truth)["map"] == pytest.approx(1.0)


def test_fit_postprocessing_goes_to_run_fields_and_back() -> None:
    task = get_task("multilabel").from_manifest(run_record("multilabel", class_names=["a", "b"]))
    assert task.run_fields() == {"thresholds": [0.5, 0.5]}
    probabilities = np.array([[0.3, 0.9], [0.1, 0.8], [0.32, 0.1]])
    task.fit_postprocessing(probabilities, np.array([[1, 1], [0, 1], [1, 0]]))
    thresholds = task.run_fields()["thresholds"]
    assert thresholds[0] <= 0.3
    again = get_task("multilabel").from_manifest(
        run_record("multilabel", class_names=["a", "b"], thresholds=thresholds)
    )
    assert again.run_fields()["thresholds"] == thresholds
