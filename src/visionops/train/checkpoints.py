"""Checkpoint writing: ``last.pt`` every ``train.checkpoint_every``, ``best.pt`` on improvement.

``train.checkpoint_every`` is ``Nepoch`` (the default ``1epoch``), ``Nsteps`` (optimiser
steps) or ``Nmin``; a checkpoint written in the middle of an epoch records the position
(batch, running loss) and every rank's random streams, so a resume continues at the exact
batch with the same data order, augmentation, scaler and EMA.

Both are written under temporary names that carry this process's PID and renamed into place,
so a reader (or a ``--resume`` after ``kill -9``) only ever sees whole checkpoints, and the
next ``visionops train`` in the same runs folder removes what a dead process left behind
(:func:`visionops.runs.recover_runs`). Reading is :func:`visionops.runs.load_checkpoint`.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from loguru import logger

from visionops._io import atomic_write_bytes, current_umask, temp_prefix
from visionops.config import Settings
from visionops.distributed import DistContext, broadcast_flag, gather_objects
from visionops.runs import RunWriter
from visionops.train.engine import Engine, EpochPosition, rng_state

__all__ = ["MidEpochCheckpoints", "epoch_checkpoint_due", "save_checkpoint", "save_checkpoints"]


def save_checkpoint(state: Mapping[str, Any], path: Path) -> None:
    """``torch.save`` ``state`` to ``path`` atomically (flushed, then renamed over it)."""
    buffer = io.BytesIO()
    torch.save(dict(state), buffer)
    atomic_write_bytes(path, buffer.getvalue())


def epoch_checkpoint_due(settings: Settings, epoch: int, improved: bool) -> bool:
    """Whether ``epoch``'s end writes ``last.pt``: every N epochs, on improvement, at the end.

    Step- and time-based intervals also write at every epoch's end (the epoch is scored
    there anyway, and the history row and the checkpoint then agree).
    """
    count, unit = settings.train.checkpoint_interval
    return unit != "epoch" or improved or epoch % count == 0 or epoch >= settings.train.epochs


class MidEpochCheckpoints:
    """The engine's step hook for ``Nsteps``/``Nmin`` intervals: when, and on every rank.

    Args:
        settings: ``train.checkpoint_every``.
        context: Rank and world size: whether a checkpoint is due is decided identically on
            every rank (steps) or by rank 0 and broadcast (minutes), since saving gathers
            every rank's random streams.
        device: Where the broadcast flag lives.
        engine: The engine whose state is saved.
        writer: Rank 0's run writer (None on the other ranks, which write nothing).
    """

    def __init__(
        self,
        settings: Settings,
        context: DistContext,
        device: torch.device,
        engine: Engine,
        writer: RunWriter | None,
    ) -> None:
        self.count, self.unit = settings.train.checkpoint_interval
        self.context = context
        self.device = device
        self.engine = engine
        self.writer = writer
        self.runs_root = settings.runs_root
        self.last_saved = time.monotonic()

    @property
    def active(self) -> bool:
        """Whether this interval writes inside epochs at all."""
        return self.unit != "epoch"

    def due(self, step: int) -> bool:
        """Whether to checkpoint after global optimiser step ``step``."""
        if self.unit == "step":
            return step % self.count == 0
        elapsed = time.monotonic() - self.last_saved >= 60 * self.count
        return broadcast_flag(elapsed, self.context, self.device)

    def saved_epoch_end(self) -> None:
        """An epoch-end checkpoint restarts the minutes interval."""
        self.last_saved = time.monotonic()

    def save(self, position: EpochPosition) -> None:
        """Write ``last.pt`` at ``position`` (rank 0) after gathering every rank's streams."""
        rank_rng = gather_objects(rng_state(), self.context)
        self.last_saved = time.monotonic()
        if self.writer is None:
            return
        writer = self.writer
        state = self.engine.state(
            position.epoch - 1,
            writer.record.best_metric,
            writer.record.to_json(),
            position=position,
            rank_rng=rank_rng if self.context.enabled else None,
        )
        save_checkpoint(state, writer.checkpoints / "last.pt")
        # The run now holds a checkpoint to continue: a failure must not remove it.
        writer.first_epoch_done(self.runs_root)
        logger.info(
            "checkpoint: epoch {} batch {}/{} (step {})",
            position.epoch,
            position.batch,
            len(self.engine.train_loader),
            self.engine.scheduler.last_epoch,
        )


def save_checkpoints(
    engine: Engine,
    writer: RunWriter,
    epoch: int,
    best: float | None,
    improved: bool,
    rank_rng: list[dict[str, Any]] | None = None,
) -> None:
    """``last.pt`` at an epoch's end; ``best.pt`` when the monitored metric improved.

    ``rank_rng``: every rank's random streams at the end of the epoch's training (rank 0's
    entry is replaced by its streams now, after validation).

    ``best.pt`` becomes a hard link to the new ``last.pt`` (no second copy of the optimiser
    state); the next epoch's ``last.pt`` replaces its own name only, so ``best.pt`` keeps
    the old file. Where hard links are not allowed, the file is copied.
    """
    last, best_path = writer.checkpoints / "last.pt", writer.checkpoints / "best.pt"
    if rank_rng is not None:
        rank_rng = [rng_state(), *rank_rng[1:]]
    save_checkpoint(engine.state(epoch, best, writer.record.to_json(), rank_rng=rank_rng), last)
    if improved or not best_path.is_file():
        tmp = best_path.with_name(f"{temp_prefix(best_path.name)}link.tmp")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        try:
            os.link(last, tmp)
        except OSError:
            shutil.copyfile(last, tmp)
            os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, best_path)
