"""One module per task behind one protocol (:class:`Task`), and the registry that finds them.

Examples:
    >>> task = task_for(PreparedManifest.read(Path("data/prepared/shapes")))
    >>> task.num_outputs, task.monitor, task.main_output
    (8, 'accuracy', 'probabilities')
"""

from __future__ import annotations

import difflib
from typing import TypeVar

from visionops.errors import ConfigError
from visionops.tasks._base import INPUT_KEY, PredictOptions, Task, TaskSource, TrainingTask
from visionops.tasks._results import Outputs, Plot, TaskMetrics, finite

__all__ = [
    "INPUT_KEY",
    "TASKS",
    "AnomalyTask",
    "ClassificationTask",
    "MultilabelTask",
    "Outputs",
    "Plot",
    "PredictOptions",
    "RegressionTask",
    "Task",
    "TaskMetrics",
    "TaskSource",
    "TrainingTask",
    "finite",
    "get_task",
    "register_task",
    "task_for",
]

TASKS: dict[str, type[Task]] = {}
"""Every registered task, by name."""

_T = TypeVar("_T", bound=type[Task])


def register_task(cls: _T) -> _T:
    """Class decorator that makes a :class:`Task` subclass known by its ``name``."""
    TASKS[cls.name] = cls
    return cls


def get_task(name: str) -> type[Task]:
    """The task class registered as ``name``.

    Raises:
        ConfigError: No such task; the message suggests the closest name.
    """
    if name not in TASKS:
        close = difflib.get_close_matches(name, list(TASKS), n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        raise ConfigError(f"unknown task '{name}' — {hint}use one of {', '.join(TASKS)}")
    return TASKS[name]


def task_for(manifest: TaskSource, *, label_smoothing: float = 0.0) -> Task:
    """The task of an artifact (prepared manifest, run record or bundle metadata), built from it.

    Args:
        manifest: The artifact; its ``task`` names the task.
        label_smoothing: Passed to tasks that train with it.
    """
    return get_task(manifest.task).from_manifest(manifest, label_smoothing=label_smoothing)


# The built-in tasks register themselves on import; they come last because they import
# register_task from this package. A new task module is added to this list.
from visionops.tasks.classification import ClassificationTask  # noqa: E402
from visionops.tasks.multilabel import MultilabelTask  # noqa: E402
from visionops.tasks.regression import RegressionTask  # noqa: E402

# isort: split
# Registered last: the order of TASKS is the order error messages list the tasks in.
from visionops.tasks.anomaly import AnomalyTask  # noqa: E402
