"""What a restarted data-parallel group needs to continue: the run it was writing.

The launcher (:mod:`visionops.train.launch`) keeps one folder per job for its workers, named
by :data:`WORKER_DIR_ENV`; it outlives every restart of the group. Rank 0 notes its run
folder there as soon as it has one; when the elastic agent starts the group again (after a
crash here, or because another node restarted: ``TORCHELASTIC_RESTART_COUNT`` only counts
the former), rank 0 finds the note and resumes that run from its
newest checkpoint, which it then sends to every other rank (:mod:`visionops.distributed`), so
no rank needs a shared filesystem.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["WORKER_DIR_ENV", "note_run", "restart_count", "run_to_continue"]

WORKER_DIR_ENV = "VISIONOPS_WORKER_ERRORS"
"""Environment variable naming the launcher's folder for its workers (errors, the run)."""
_RUN_NOTE = "run-dir.txt"


def restart_count() -> int:
    """How often the elastic agent has restarted this worker's group (0: first attempt)."""
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0)


def note_run(run_dir: Path) -> None:
    """Rank 0: remember the run folder this job writes, for a restart of the group."""
    folder = os.environ.get(WORKER_DIR_ENV)
    if folder:
        (Path(folder) / _RUN_NOTE).write_text(str(run_dir.resolve()), encoding="utf-8")


def run_to_continue() -> Path | None:
    """Rank 0 of a restarted group: the run to resume (one with a checkpoint), else ``None``."""
    folder = os.environ.get(WORKER_DIR_ENV)
    if not folder:
        return None
    note = Path(folder) / _RUN_NOTE
    if not note.is_file():
        return None
    run_dir = Path(note.read_text(encoding="utf-8").strip())
    return run_dir if (run_dir / "checkpoints" / "last.pt").is_file() else None
