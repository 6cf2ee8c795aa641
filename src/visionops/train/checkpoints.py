"""Checkpoint writing: ``last.pt`` every ``train.checkpoint_every``, ``best.pt`` on improvement.

``train.checkpoint_every`` is ``Nepoch`` (the default ``1epoch``), ``Nsteps`` (optimiser
steps) or ``Nmin``; a checkpoint written in the middle of an epoch records the position
(batch, running loss) and every rank's random streams, so a resume continues at the exact
batch with the same data order, augmentation, scaler and EMA.

Both are written under temporary names that carry this process's PID and renamed into place,
so a reader (or a ``--resume`` after ``kill -9``) only ever sees whole checkpoints, and the
next ``visionops train`` in the same runs folder removes what a dead process left behind
(:func:`visionops.runs.recover_runs`). Reading is :func:`visionops.runs.load_checkpoint`.

Once the run holds its first checkpoint, the rest are written off the training thread
(:class:`CheckpointWriter`): the training thread only copies the state, and serialising,
writing and fsync overlap the next steps.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from loguru import logger

from visionops._io import atomic_writer, current_umask, temp_prefix
from visionops.config import Settings
from visionops.distributed import DistContext, broadcast_flag, gather_objects
from visionops.runs import RunWriter
from visionops.train.engine import Engine, EpochPosition, rng_state

__all__ = [
    "CheckpointWriter",
    "MidEpochCheckpoints",
    "epoch_checkpoint_due",
    "save_checkpoint",
    "save_checkpoints",
]


def save_checkpoint(state: Mapping[str, Any], path: Path) -> None:
    """``torch.save`` ``state`` to ``path`` atomically (fsync'd, then renamed over it)."""
    with atomic_writer(path) as handle:
        torch.save(dict(state), handle)


def _link_best(folder: Path) -> None:
    """Point ``best.pt`` at the current ``last.pt``: a hard link, or a copy where none is allowed.

    The next ``last.pt`` replaces its own name only, so ``best.pt`` keeps the old file.
    """
    last, best = folder / "last.pt", folder / "best.pt"
    tmp = best.with_name(f"{temp_prefix(best.name)}link.tmp")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
    try:
        os.link(last, tmp)
    except OSError:
        shutil.copyfile(last, tmp)
        os.chmod(tmp, 0o666 & ~current_umask())
    os.replace(tmp, best)


def _snapshot(value: Any) -> Any:
    """``value`` with every tensor copied to the CPU now, so training may change the originals."""
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", copy=True)
    if isinstance(value, Mapping):
        return {key: _snapshot(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_snapshot(item) for item in value)
    return value


class CheckpointWriter:
    """Writes ``checkpoints/last.pt`` (and links ``best.pt``) on a background thread.

    One write is in flight at a time: :meth:`submit` first waits for the previous one. The
    training thread only pays for a copy of the state; a failed write (disk full) is raised
    in the training thread at the next :meth:`submit` or :meth:`wait`. The thread is not a
    daemon, so a write in flight when training fails still completes before the process exits.

    Args:
        folder: The run's ``checkpoints`` folder.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def submit(self, state: Mapping[str, Any], *, best: bool, wait: bool = False) -> None:
        """Write ``state`` as ``last.pt`` (and ``best.pt`` when ``best``).

        Args:
            state: The checkpoint (tensors are copied before this returns).
            best: Also make ``best.pt`` this checkpoint.
            wait: Return only once the files are in place.

        Raises:
            OSError: The previous write failed (or this one, with ``wait``).
        """
        self.wait()
        snapshot = _snapshot(state)
        self._thread = threading.Thread(
            target=self._write, args=(snapshot, best), name="visionops-checkpoint"
        )
        self._thread.start()
        if wait:
            self.wait()

    def _write(self, state: dict[str, Any], best: bool) -> None:
        try:
            save_checkpoint(state, self.folder / "last.pt")
            if best:
                _link_best(self.folder)
        except BaseException as exc:  # re-raised in the training thread
            self._error = exc

    def wait(self) -> None:
        """Block until the write in flight (if any) is done; raise its error.

        Raises:
            OSError: The write failed.
        """
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            error, self._error = self._error, None
            raise error


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
        files: Rank 0's checkpoint writer (None on the other ranks).
    """

    def __init__(
        self,
        settings: Settings,
        context: DistContext,
        device: torch.device,
        engine: Engine,
        writer: RunWriter | None,
        files: CheckpointWriter | None = None,
    ) -> None:
        self.count, self.unit = settings.train.checkpoint_interval
        self.context = context
        self.device = device
        self.engine = engine
        self.writer = writer
        self.files = files
        self.runs_root = settings.runs_root
        self.last_saved = time.monotonic()
        self.saved: EpochPosition | None = None

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
        if self.writer is None or self.files is None:
            return
        writer = self.writer
        state = self.engine.state(
            position.epoch - 1,
            writer.record.best_metric,
            writer.record.to_json(),
            position=position,
            rank_rng=rank_rng if self.context.enabled else None,
        )
        # The first checkpoint is waited for: from then on, a failure must not remove the run.
        self.files.submit(state, best=False, wait=not writer.trusted)
        writer.first_epoch_done(self.runs_root)
        self.saved = position
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
    files: CheckpointWriter,
    epoch: int,
    best: float | None,
    improved: bool,
    rank_rng: list[dict[str, Any]] | None = None,
) -> None:
    """``last.pt`` at an epoch's end; ``best.pt`` when the monitored metric improved.

    ``rank_rng``: every rank's random streams at the end of the epoch's training (rank 0's
    entry is replaced by its streams now, after validation).

    ``best.pt`` becomes a hard link to the new ``last.pt`` (no second copy of the optimiser
    state). The run's first checkpoint is waited for (it makes the run one a failure keeps);
    later ones are written while the next epoch trains.
    """
    if rank_rng is not None:
        rank_rng = [rng_state(), *rank_rng[1:]]
    state = engine.state(epoch, best, writer.record.to_json(), rank_rng=rank_rng)
    files.wait()  # the previous write may be the one that makes best.pt
    linked = (writer.checkpoints / "best.pt").is_file()
    files.submit(state, best=improved or not linked, wait=not writer.trusted)
