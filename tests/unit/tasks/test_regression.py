import numpy as np
import pytest
import torch
from task_sources import bundle_meta, run_record

from visionops.errors import ArtifactError
from visionops.tasks import RegressionTask, get_task

RECORD = run_record(
    "regression",
    target_names=["energy", "mass"],
    target_mean=[200.0, 50.0],
    target_std=[40.0, 10.0],
)


def test_targets_are_standardised_and_outputs_restored() -> None:
    task = get_task("regression").from_manifest(RECORD)
    targets = torch.tensor([[240.0, 40.0], [200.0, 50.0]])
    encoded = task.encode_targets(targets)
    assert torch.allclose(encoded, torch.tensor([[1.0, -1.0], [0.0, 0.0]]))
    assert torch.allclose(task.postprocess(encoded), targets)
    assert task.loss(encoded, encoded).item() == 0.0


def test_metrics_are_in_original_units() -> None:
    task = RegressionTask(["energy", "mass"], [200.0, 50.0], [40.0, 10.0])
    truth = np.array([[100.0, 10.0], [200.0, 20.0], [300.0, 30.0]])
    predicted = truth + np.array([[10.0, 1.0], [-10.0, -1.0], [10.0, 1.0]])
    metrics = task.metrics(predicted, truth)
    assert metrics["mae/energy"] == pytest.approx(10.0)
    assert metrics["mae/mass"] == pytest.approx(1.0)
    assert metrics["r2/energy"] == pytest.approx(1 - 300 / 20000)
    assert metrics["r2"] == pytest.approx((metrics["r2/energy"] + metrics["r2/mass"]) / 2)
    assert (task.monitor, task.mode) == ("r2", "max")


def test_zero_std_does_not_divide_by_zero() -> None:
    task = RegressionTask(["x"], [5.0], [0.0])
    assert torch.isfinite(task.encode_targets(torch.tensor([[5.0]]))).all()


def test_missing_statistics_name_the_fix_when_training_needs_them() -> None:
    # A bundle's metadata has no target statistics: serving needs none, training does.
    task = get_task("regression").from_manifest(
        bundle_meta("regression", "values", target_names=["a"])
    )
    with pytest.raises(ArtifactError, match="visionops data preprocess"):
        task.encode_targets(torch.tensor([[1.0]]))
    with pytest.raises(ArtifactError, match="visionops data preprocess"):
        get_task("regression").from_manifest(
            run_record("regression", target_names=["a"], target_mean=[1.0, 2.0])
        )
