"""The Task contract, checked for every registered task.

A new task is one module in ``visionops/tasks/``; this test is what tells its author whether
it fits the stages that find it through the registry: the answer ``/predict`` documents, the
columns drift tests, the metric training monitors, the fields a run and a bundle carry.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from visionops.artifacts import BundleMeta, PreparedManifest
from visionops.serve.schemas import PredictResponse, predict_response_model
from visionops.tasks import TASKS, PredictOptions, Task, task_for

ROWS = 12

# What each task's prepared dataset names; a task missing here fails
# test_every_task_has_an_example.
EXAMPLES: dict[str, dict[str, Any]] = {
    "classification": {"class_names": ["cat", "dog", "fox"]},
    "multilabel": {"class_names": ["sky", "tree"]},
    "regression": {
        "target_names": ["kcal", "mass"], "target_units": ["kcal", "g"],
        "target_mean": [300.0, 150.0], "target_std": [80.0, 40.0],
    },
    "anomaly": {"class_names": ["good", "defect"]},
}  # fmt: skip


def _prepared(name: str) -> PreparedManifest:
    source = {"name": "demo", "source": "demo:x", "file_count": 1, "bytes": 1, "fingerprint": "f"}
    return PreparedManifest.model_validate({
        "name": "demo", "task": name, "image_size": 32, "channels": 3, "mean": [0.5] * 3,
        "std": [0.25] * 3, "source": source, "fingerprint": "f", **EXAMPLES[name],
    })  # fmt: skip


def _bundle_meta(trained: Task, cam: bool = True) -> BundleMeta:
    """The bundle export writes for a task trained on :func:`_prepared`.

    A task that ``explains`` gets a class activation map unless ``cam`` is False (a backbone
    without one).
    """
    prepared = _prepared(trained.name)
    maps = trained.explains and cam
    record = {
        "available": maps,
        "output": "cam" if maps else None,
        "layer": "backbone.layer4",
        "feature_size": [2, 2] if maps else [1, 1],
        "reason": None if maps else "backbone.layer4's map is 1x1 at 32 px",
    }
    return BundleMeta.model_validate({
        "task": trained.name, "model_version": "run-001@abcd",
        "input": {"size": 32, "channels": 3, "max_image_pixels": 10**6},
        "outputs": {"main": trained.main_output, "embedding": "embedding",
                    **({"cam": "cam"} if maps else {})},
        "class_names": prepared.class_names, "target_names": prepared.target_names,
        "target_units": prepared.target_units, **trained.run_fields(),
        **({"cam": record} if trained.explains else {}),
    })  # fmt: skip


@pytest.fixture(params=sorted(TASKS))
def trained(request: pytest.FixtureRequest) -> Task:
    """The task as training builds it from the prepared dataset."""
    return task_for(_prepared(request.param))


@pytest.fixture
def task(trained: Task) -> Task:
    """The task as serve, predict and drift build it from the bundle."""
    return task_for(_bundle_meta(trained))


def _main_outputs(task: Task) -> np.ndarray[Any, Any]:
    """What the exported graph's main output holds for ``ROWS`` images."""
    import torch

    torch.manual_seed(0)
    return task.postprocess(torch.randn(ROWS, task.num_outputs)).numpy()


def _targets(task: Task) -> np.ndarray[Any, Any]:
    """Targets as ``targets.npy`` stores them for this task."""
    rng = np.random.default_rng(0)
    width = len(task.labels)
    if task.target_kind == "class_index":
        return (np.arange(ROWS) % width).astype(np.int64)
    if task.target_kind == "multi_hot":
        return (rng.random((ROWS, width)) > 0.5).astype(np.float32)
    return rng.normal(size=(ROWS, width)).astype(np.float32)


def test_every_task_has_an_example() -> None:
    assert set(EXAMPLES) == set(TASKS)


def test_each_task_has_its_documented_predict_response(task: Task) -> None:
    assert predict_response_model(task.name) is not PredictResponse


def test_answers_match_the_documented_response(trained: Task, task: Task) -> None:
    schema = predict_response_model(task.name)
    rows = _main_outputs(trained)
    answers = [
        {"file": f"{i}.jpg", **task.answer(row, {}, PredictOptions())} for i, row in enumerate(rows)
    ]
    response = schema.model_validate({
        "request_id": "r", "model_version": "v", "task": task.name, "predictions": answers,
        "timing": {"total_ms": 1.0, "queue_ms": 0.0, "compute_ms": 1.0, "batch_size": 1},
    })  # fmt: skip
    assert len(response.predictions) == ROWS
    for answer in answers:
        flat = task.flat_answer(answer)
        assert all(not isinstance(v, dict | list) for v in flat.values()), flat
        assert task.answer_text(answer)
        assert set(task.predicted_labels(answer)) <= set(task.labels)


def test_drift_columns_cover_every_image(trained: Task, task: Task) -> None:
    main = _main_outputs(trained)
    columns = task.output_columns(main)
    assert columns
    assert all(values.shape == (ROWS,) and np.isfinite(values).all() for values in columns.values())
    classes = task.predicted_classes(main)
    if classes is not None:
        assert classes.shape == (ROWS,)
        assert set(classes.tolist()) <= set(range(len(task.labels)))


def test_training_metrics_include_the_monitored_one(trained: Task) -> None:
    metrics = trained.metrics(_main_outputs(trained), _targets(trained))
    assert trained.monitor in metrics


def test_evaluation_scores_and_plots_read_the_same_outputs(trained: Task, task: Task) -> None:
    main, targets = _main_outputs(trained), _targets(task)
    scored = task.score(main, targets)
    assert scored.rows
    for plot in task.plots(scored, main, targets):
        assert plot.png.startswith(b"\x89PNG")


def test_options_outside_the_task_are_refused_with_a_reason(task: Task) -> None:
    assert task.check_options(PredictOptions()) is None
    for option, value in {"threshold": 0.5, "heatmap": True}.items():
        problem = task.check_options(PredictOptions(**{option: value}))
        assert (problem is None) == (option in task.serve_options), (option, problem)


def test_a_heatmap_the_bundle_lacks_is_refused_with_its_reason(trained: Task) -> None:
    task = task_for(_bundle_meta(trained, cam=False))
    problem = task.check_options(PredictOptions(heatmap=True))
    support = task.heatmap_support()
    if task.name == "anomaly":
        assert problem is None and support["kind"] == "anomaly_map"
        return
    assert problem is not None and not support["available"]
    if trained.explains:
        assert "1x1 at 32 px" in problem and "1x1 at 32 px" in support["detail"]


def test_the_bundle_rebuilds_the_trained_task(trained: Task, task: Task) -> None:
    assert task.labels == trained.labels
    assert task.num_outputs == trained.num_outputs
    assert task.describe() == trained.describe()
