"""One module per task: loss, monitored metric, post-processing and metrics.

Examples:
    >>> task = get_task("classification").from_manifest({"class_names": ["cat", "dog"]})
    >>> task.num_outputs, task.monitor
    (2, 'accuracy')
"""

from __future__ import annotations

import difflib

from visionops.errors import ConfigError
from visionops.tasks._base import TrainingTask
from visionops.tasks.classification import ClassificationTask
from visionops.tasks.multilabel import MultilabelTask
from visionops.tasks.regression import RegressionTask

__all__ = [
    "TASKS",
    "ClassificationTask",
    "MultilabelTask",
    "RegressionTask",
    "TrainingTask",
    "get_task",
]

TASKS: dict[str, type[TrainingTask]] = {
    "classification": ClassificationTask,
    "multilabel": MultilabelTask,
    "regression": RegressionTask,
}
"""Tasks the training engine handles, by name (anomaly detection is trained by ``anomaly``)."""


def get_task(name: str) -> type[TrainingTask]:
    """The task class for ``name``.

    Raises:
        ConfigError: Not a task this engine trains.
    """
    if name not in TASKS:
        close = difflib.get_close_matches(name, list(TASKS), n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        raise ConfigError(
            f"task '{name}' is not trained by the gradient-descent engine — {hint}use one of"
            f" {', '.join(TASKS)}"
        )
    return TASKS[name]
