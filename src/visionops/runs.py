"""Run folders: naming, the run record, writing and reading them, crash recovery, checkpoints.

See ``docs/artifacts.md`` for the layout. Checkpoints are always loaded with
``weights_only=True``: a checkpoint can never run code on load. A run folder is written by one
process at a time: :class:`RunWriter` holds :func:`visionops._io.artifact_lock` on it for the
whole run, and :func:`recover_runs` marks the runs whose process died as ``failed``.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import re
import shutil
import zipfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from loguru import logger

from visionops._io import (
    artifact_lock,
    artifact_lock_holder,
    atomic_write_text,
    clean_stale_temps,
    dead_writer_temps,
    temp_prefix,
)
from visionops.artifacts import RunRecord
from visionops.errors import ArtifactError, ConfigError, DatasetNotFoundError

__all__ = [
    "CHECKPOINT_FORMAT",
    "SCHEMA_VERSION",
    "RunWriter",
    "find_run_dataset",
    "latest_run",
    "load_checkpoint",
    "load_trained_model",
    "next_run_name",
    "read_history",
    "read_run_manifest",
    "recover_runs",
    "resolve_run",
    "update_latest",
]

SCHEMA_VERSION = RunRecord.SCHEMA_VERSION
CHECKPOINT_FORMAT = "visionops.checkpoint"
_RUN_NAME = re.compile(r"^run-(\d+)$")
_USABLE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_LOCK_HINT = "wait for it or pick another --name"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def next_run_name(runs_root: Path) -> str:
    """The next free auto-numbered name: ``run-001``, ``run-002``, ..."""
    numbers = [
        int(match.group(1))
        for entry in (runs_root.iterdir() if runs_root.is_dir() else [])
        if (match := _RUN_NAME.match(entry.name))
    ]
    return f"run-{max(numbers, default=0) + 1:03d}"


def update_latest(runs_root: Path, run_dir: Path) -> None:
    """Point ``runs_root/latest`` at ``run_dir``.

    A relative symlink; a text file holding the name where symlinks are not allowed.
    """
    link = runs_root / "latest"
    tmp = runs_root / f"{temp_prefix('latest')}link.tmp"
    try:
        tmp.symlink_to(run_dir.name, target_is_directory=True)
    except OSError:
        tmp.write_text(run_dir.name + "\n", encoding="utf-8")
    if link.is_dir() and not link.is_symlink():
        raise ArtifactError(f"{link} is a real folder, not visionops' pointer — rename it")
    os.replace(tmp, link)


def latest_run(runs_root: Path) -> Path | None:
    """The run ``runs_root/latest`` points to, or None."""
    link = runs_root / "latest"
    if link.is_symlink():
        target = runs_root / os.readlink(link)
        return target if target.is_dir() else None
    if link.is_file():
        target = runs_root / link.read_text(encoding="utf-8").strip()
        return target if target.is_dir() else None
    return None


def resolve_run(run: str | Path | None, runs_root: Path) -> Path:
    """Find a run folder from a path, a run name, or nothing (``runs/latest``).

    Raises:
        ArtifactError: No such run.
    """
    if run is None or str(run) == "latest":
        found = latest_run(runs_root)
        if found is None:
            raise ArtifactError(
                f"no training run in {runs_root}/ — train one with `visionops train`"
            )
        return found
    for candidate in (Path(run), runs_root / str(run)):
        if (candidate / "run.json").is_file():
            return candidate
    raise ArtifactError(
        f"{run} is not a visionops run folder (no run.json) — pass a folder under {runs_root}/"
        " or train one with `visionops train`"
    )


def read_run_manifest(run_dir: Path) -> RunRecord:
    """Read and validate ``run.json``.

    Raises:
        ArtifactError: Missing, unreadable, foreign or invalid manifest.
    """
    if not (run_dir / "run.json").is_file():
        raise ArtifactError(
            f"{run_dir} has no run.json — it is not a visionops run; train with `visionops train`"
        )
    return RunRecord.read(run_dir)


def find_run_dataset(run_dir: Path, run: RunRecord) -> Path:
    """The folder of the prepared dataset a run was trained on.

    The path recorded in ``run.json`` is tried as it is (relative to the working folder),
    then relative to the project folder that holds ``runs/``.

    Raises:
        DatasetNotFoundError: It is gone; the message names `visionops data preprocess`.
    """
    recorded = run.dataset.path
    path = Path(recorded)
    candidates = [path] if path.is_absolute() else [path, run_dir.parent.parent / path]
    for candidate in candidates:
        if recorded and (candidate / "manifest.json").is_file():
            return candidate
    raise DatasetNotFoundError(
        f"the prepared dataset {recorded or '?'} that run {run_dir.name} was trained on is gone"
        " — eval and export score the model on its images; recreate it with"
        " `visionops data preprocess` (same source and settings)"
    )


def read_history(run_dir: Path) -> list[dict[str, Any]]:
    """The rows of ``history.jsonl`` (one per finished epoch); empty when there is none.

    Lines that are not a JSON object with an integer ``epoch`` are skipped.
    """
    path = run_dir / "history.jsonl"
    if not path.is_file():
        return []
    rows: list[dict[str, Any]] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue  # a line cut short by an interrupted epoch
        if isinstance(row, dict) and isinstance(row.get("epoch"), int):
            rows.append(row)
    return rows


def load_checkpoint(path: Path, map_location: str = "cpu") -> dict[str, Any]:
    """Load a visionops checkpoint safely (``weights_only=True``) and check its format.

    Raises:
        ArtifactError: Missing, corrupt, foreign, or containing pickled objects.
    """
    import torch

    if not path.is_file():
        raise ArtifactError(
            f"no checkpoint at {path} — train (or resume) the run with `visionops train`"
        )
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise ArtifactError(
            f"{path} holds objects a safe load refuses ({_unpickling_reason(exc)}) — it is not"
            " a visionops checkpoint and is not loaded; retrain or point to the right file"
        ) from None
    # Garbage bytes make the weights-only unpickler fail in many ways (IndexError, KeyError...).
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError, LookupError) as exc:
        raise ArtifactError(
            f"{path} is corrupt or truncated ({type(exc).__name__}) — use the other checkpoint"
            " (best.pt/last.pt) or retrain"
        ) from None
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise ArtifactError(
            f"{path} is not a visionops checkpoint — pass a run trained by `visionops train`"
        )
    return checkpoint


def _unpickling_reason(exc: BaseException) -> str:
    """The reason in torch's weights-only refusal, without its advice on how to bypass it.

    torch's message is paragraphs: "Weights only load failed ... weights_only=False ...
    trusted source", then the reason ("Trying to load unsupported GLOBAL posix.system whose
    module posix is blocked", or "WeightsUnpickler error: Unsupported global: ... Please use
    ..."), then "Check the documentation ...". Only the reason is shown.
    """
    text = str(exc)
    if "WeightsUnpickler error:" in text:
        reason = text.split("WeightsUnpickler error:")[-1].strip().splitlines()[0]
    else:
        paragraphs = [" ".join(part.split()) for part in re.split(r"\n\s*\n", text)]
        advice = ("Weights only load failed", "Check the documentation")
        reasons = [p for p in paragraphs if p and not p.startswith(advice)]
        reason = reasons[0] if reasons else "unsafe content"
    return reason.split(" Please ")[0].strip().rstrip(".")[:160] or "unsafe content"


def load_trained_model(run_dir: Path, which: str = "best") -> tuple[Any, RunRecord]:
    """Rebuild a run's model with its trained weights, in eval mode on the CPU.

    Args:
        run_dir: The run folder.
        which: ``best`` or ``last``.

    Returns:
        ``(VisionModel, RunRecord)``.

    Raises:
        ArtifactError: Missing or corrupt checkpoint, or weights that do not fit the model.
    """
    from visionops.models import build_model

    manifest = read_run_manifest(run_dir)
    checkpoint = load_checkpoint(run_dir / "checkpoints" / f"{which}.pt")
    spec = manifest.model
    model = build_model(
        spec.name,
        num_outputs=spec.num_outputs,
        channels=spec.channels,
        pretrained=False,
        dropout=spec.dropout,
        image_size=spec.image_size,
    )
    state = checkpoint.get("ema") or checkpoint["model"]
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise ArtifactError(
            f"{run_dir}/checkpoints/{which}.pt does not fit model {spec.name}"
            f" ({str(exc).splitlines()[0][:120]}) — the checkpoint belongs to another run"
        ) from None
    model.eval()
    return model, manifest


# --------------------------------------------------------------------------- writing


class RunWriter:
    """Writes one run folder; only the training process of rank 0 makes one.

    :meth:`create` (a new run) and :meth:`reopen` (``--resume``) take the folder's lock,
    which the caller releases with :meth:`close` (or by using the writer as a context
    manager); a second process targeting the same folder fails at once with
    :class:`~visionops.errors.ConcurrencyError`. A new run is removed again (and what
    ``--exist-ok`` replaced is put back) if it ends before its first epoch.

    Attributes:
        path: The run folder.
        record: The run record, rewritten by :meth:`write_record`.
        history: One row per finished epoch.
        trusted: Whether the folder holds a finished epoch (then it is never removed).
        previous_status: The status a resumed run had before this attempt.
    """

    record: RunRecord

    def __init__(self, path: Path, replaced: Path | None, lock: contextlib.ExitStack) -> None:
        self.path = path
        self.replaced = replaced
        self.history: list[dict[str, Any]] = []
        self.checkpoints = path / "checkpoints"
        self.trusted = False
        self.previous_status: str | None = None
        self._lock = lock

    @staticmethod
    def _locked(run_dir: Path) -> contextlib.ExitStack:
        stack = contextlib.ExitStack()
        stack.enter_context(artifact_lock(run_dir, hint=_LOCK_HINT))
        return stack

    @classmethod
    def create(cls, runs_root: Path, name: str | None, exist_ok: bool) -> RunWriter:
        """Make (and lock) a new run folder; set :attr:`record` before writing it.

        Raises:
            ConfigError: The name is unusable, or taken without ``exist_ok``.
            ConcurrencyError: Another process is writing that run.
        """
        if name is not None and (not _USABLE_NAME.match(name) or name == "latest"):
            raise ConfigError(
                f"--name {name!r} is not a usable run name — use letters, digits, '.', '_' and"
                " '-' (and not 'latest')"
            )
        runs_root.mkdir(parents=True, exist_ok=True)
        tried = 0
        while True:
            if name is None:
                # Another auto-numbered run may take a number between our look and our lock:
                # then take the next one.
                tried = max(int(next_run_name(runs_root).removeprefix("run-")), tried + 1)
            run_name = name or f"run-{tried:03d}"
            run_dir = runs_root / run_name
            try:
                lock = cls._locked(run_dir)
            except ArtifactError:
                if name is not None:
                    raise
                continue
            if name is None and (run_dir.exists() or run_dir.is_symlink()):
                lock.close()
                continue
            break
        try:
            replaced: Path | None = None
            if run_dir.exists() or run_dir.is_symlink():
                if not exist_ok:
                    raise ConfigError(
                        f"{run_dir} already exists — pass --exist-ok to replace it, choose"
                        " another --name, or continue it with --resume"
                    )
                # Kept aside until the new run finishes an epoch, then deleted.
                replaced = runs_root / f"{temp_prefix(run_name)}replaced.tmp"
                os.replace(run_dir, replaced)
            run_dir.mkdir(parents=True)
            (run_dir / "checkpoints").mkdir()
        except BaseException:
            lock.close()
            raise
        return cls(run_dir, replaced, lock)

    @classmethod
    def reopen(cls, run_dir: Path, first_epoch: int) -> RunWriter:
        """Lock an existing run to continue it; history keeps the epochs before ``first_epoch``.

        Raises:
            ConcurrencyError: Another process is writing that run.
        """
        lock = cls._locked(run_dir)
        try:
            record = read_run_manifest(run_dir)
        except BaseException:
            lock.close()
            raise
        writer = cls(run_dir, None, lock)
        writer.record = record
        writer.trusted = True
        writer.previous_status = record.status
        writer.history = [row for row in read_history(run_dir) if row["epoch"] < first_epoch]
        return writer

    def write_record(self) -> None:
        """Write ``run.json`` atomically."""
        self.record.write(self.path)

    def write_history(self) -> None:
        """Write ``history.jsonl`` atomically."""
        text = "".join(json.dumps(row) + "\n" for row in self.history)
        atomic_write_text(self.path / "history.jsonl", text)

    def first_epoch_done(self, runs_root: Path) -> None:
        """The run now holds a finished epoch: point ``latest`` at it, drop what it replaced."""
        if self.trusted:
            return
        self.trusted = True
        update_latest(runs_root, self.path)
        if self.replaced is not None:
            shutil.rmtree(self.replaced, ignore_errors=True)
            self.replaced = None

    def abandon(self) -> None:
        """Remove a run that never finished an epoch (restoring what ``--exist-ok`` replaced)."""
        shutil.rmtree(self.path, ignore_errors=True)
        if self.replaced is not None:
            os.replace(self.replaced, self.path)
            self.replaced = None

    def close(self) -> None:
        """Release the run's lock."""
        self._lock.close()

    def __enter__(self) -> RunWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --------------------------------------------------------------------------- recovery


def _iter_runs(runs_root: Path) -> Iterator[Path]:
    if not runs_root.is_dir():
        return
    for entry in sorted(runs_root.iterdir()):
        if entry.is_dir() and not entry.is_symlink() and not entry.name.startswith("."):
            yield entry


def recover_runs(runs_root: Path) -> list[Path]:
    """Tidy what crashed training processes left in ``runs_root``; never touch a live run.

    - A run whose ``run.json`` says ``running`` while no process holds its lock died
      (``kill -9``, power loss, out of memory): it is marked ``failed`` with the reason, and
      the reason says whether ``--resume`` can continue it (only with a ``last.pt``).
    - A run that died before its first epoch and had replaced another with ``--exist-ok``
      gets the replaced run back.
    - Temporaries of dead processes (checkpoints, records, bundles being written) go.

    Args:
        runs_root: The folder of runs.

    Returns:
        The runs marked ``failed``.
    """
    marked: list[Path] = []
    for kept in dead_writer_temps(runs_root, ".*.replaced.tmp"):
        run_dir = runs_root / kept.name[1:].rsplit(".", 3)[0]  # .NAME.PID.replaced.tmp
        replacement_died_early = (
            not (run_dir / "checkpoints" / "last.pt").is_file()
            and artifact_lock_holder(run_dir) is None
        )
        if replacement_died_early:
            shutil.rmtree(run_dir, ignore_errors=True)
            os.replace(kept, run_dir)
            logger.warning(
                "{} is back: the run that replaced it died before its first epoch", run_dir
            )
        else:
            shutil.rmtree(kept, ignore_errors=True)
    for run_dir in _iter_runs(runs_root):
        for folder in (run_dir, run_dir / "checkpoints"):
            for path in clean_stale_temps(folder):
                logger.info("removed {} (left by a process that died)", path)
        try:
            record = RunRecord.read(run_dir)
        except ArtifactError:
            continue
        if record.status != "running" or artifact_lock_holder(run_dir) is not None:
            continue
        resumable = (run_dir / "checkpoints" / "last.pt").is_file()
        record.status = "failed"
        record.finished_at = record.finished_at or _now()
        record.failure = (
            f"the training process stopped without finishing after epoch"
            f" {record.epochs_completed} (killed or crashed) — continue it with"
            f" `visionops train --resume {run_dir}`"
            if resumable
            else "the training process stopped during its first epoch (killed or crashed),"
            " before any checkpoint — there is nothing to resume; train it again with"
            f" `visionops train --name {run_dir.name} --exist-ok`"
        )
        record.write(run_dir)
        logger.warning(
            "{} was still marked running but its process is gone: {}", run_dir, record.failure
        )
        marked.append(run_dir)
    return marked
