"""Training: a prepared dataset in, a run folder (``runs/<name>/``) out.

- :mod:`~visionops.train.dataset`: which prepared dataset (fetched and prepared through the
  data stage's public functions when needed), and whether it fits the requested settings.
- :mod:`~visionops.train.engine`: the public :class:`Engine` (model, optimiser, loops).
- :mod:`~visionops.train.checkpoints`: atomic ``last.pt`` / ``best.pt``.
- :mod:`~visionops.train.loop`: :func:`train`, early stopping, the run folder.
- :mod:`~visionops.train.launch`: ``visionops train`` as one call (resume settings,
  data-parallel launch, worker errors).

Run folders are written and read in :mod:`visionops.runs`.
"""

from visionops.data.resolve import resolve_prepared
from visionops.train.engine import Engine, EpochStats, ModelEma, warmup_cosine
from visionops.train.launch import TrainRequest, run_training
from visionops.train.loop import TrainResult, train

__all__ = [
    "Engine",
    "EpochStats",
    "ModelEma",
    "TrainRequest",
    "TrainResult",
    "resolve_prepared",
    "run_training",
    "train",
    "warmup_cosine",
]
