"""Checkpoint writing: ``last.pt`` every epoch, ``best.pt`` when the monitored metric improved.

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
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from visionops._io import atomic_write_bytes, current_umask, temp_prefix
from visionops.runs import RunWriter
from visionops.train.engine import Engine

__all__ = ["save_checkpoint", "save_checkpoints"]


def save_checkpoint(state: Mapping[str, Any], path: Path) -> None:
    """``torch.save`` ``state`` to ``path`` atomically (flushed, then renamed over it)."""
    buffer = io.BytesIO()
    torch.save(dict(state), buffer)
    atomic_write_bytes(path, buffer.getvalue())


def save_checkpoints(
    engine: Engine, writer: RunWriter, epoch: int, best: float | None, improved: bool
) -> None:
    """``last.pt`` every epoch; ``best.pt`` when the monitored metric improved.

    ``best.pt`` becomes a hard link to the new ``last.pt`` (no second copy of the optimiser
    state); the next epoch's ``last.pt`` replaces its own name only, so ``best.pt`` keeps
    the old file. Where hard links are not allowed, the file is copied.
    """
    last, best_path = writer.checkpoints / "last.pt", writer.checkpoints / "best.pt"
    save_checkpoint(engine.state(epoch, best, writer.record.to_json()), last)
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
