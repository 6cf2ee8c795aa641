"""Temporaries that name their writer, stale-temp cleaning and the artifact lock.

The concurrency tests use real processes (``multiprocessing`` with the spawn start method)
and synchronise on events, never on sleeps.
"""

from __future__ import annotations

import multiprocessing
import os
import re
import signal
from multiprocessing.synchronize import Event
from pathlib import Path

import pytest

from visionops import _io
from visionops.errors import ArtifactError, ConcurrencyError

SPAWN = multiprocessing.get_context("spawn")
WAIT_S = 60.0


def _hold_lock(folder: str, locked: Event, release: Event) -> None:
    with _io.artifact_lock(Path(folder), hint="wait for it or pick another --name"):
        locked.set()
        release.wait(WAIT_S)


def _stage_and_hang(final: str, staged: Event) -> None:
    with _io.atomic_dir(Path(final)) as tmp:
        (tmp / "half.bin").write_bytes(b"half")
        staged.set()
        while True:  # until killed
            staged.wait(WAIT_S)


def test_atomic_write_stages_under_a_name_with_the_writers_pid(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[str] = []
    real_fsync = os.fsync

    def spying_fsync(fd: int) -> None:
        seen.extend(p.name for p in tmp_path.iterdir())
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", spying_fsync)
    _io.atomic_write_bytes(tmp_path / "run.json", b"{}")

    assert len(seen) == 1
    assert re.fullmatch(rf"\.run\.json\.{os.getpid()}\.[^.]+\.tmp", seen[0])
    assert [p.name for p in tmp_path.iterdir()] == ["run.json"]


def test_atomic_dir_stages_under_a_name_with_the_writers_pid(tmp_path: Path) -> None:
    with _io.atomic_dir(tmp_path / "bundle") as tmp:
        assert re.fullmatch(rf"\.bundle\.{os.getpid()}\.[^.]+\.tmp", tmp.name)
    assert (tmp_path / "bundle").is_dir()


def test_clean_stale_temps_removes_a_killed_writers_temp_but_not_a_live_ones(
    tmp_path: Path,
) -> None:
    # A real writer killed with SIGKILL in the middle of staging a folder...
    staged = SPAWN.Event()
    dead = SPAWN.Process(target=_stage_and_hang, args=(str(tmp_path / "prepared"), staged))
    dead.start()
    assert staged.wait(WAIT_S)
    os.kill(dead.pid or 0, signal.SIGKILL)
    dead.join(WAIT_S)
    # ...and a live writer still busy with its own temporary.
    locked, release = SPAWN.Event(), SPAWN.Event()
    live = SPAWN.Process(target=_hold_lock, args=(str(tmp_path / "x"), locked, release))
    live.start()
    try:
        assert locked.wait(WAIT_S)
        live_tmp = tmp_path / f".prepared.{live.pid}.abcd1234.tmp"
        live_tmp.write_bytes(b"in progress")
        own_tmp = tmp_path / f".prepared.{os.getpid()}.zzzz.tmp"
        own_tmp.write_bytes(b"ours")
        unrelated = tmp_path / ".prepared.notapid.tmp"
        unrelated.write_bytes(b"no pid in the name")
        dead_leftovers = sorted(tmp_path.glob(f".prepared.{dead.pid}.*.tmp"))
        assert len(dead_leftovers) == 1 and dead_leftovers[0].is_dir()

        removed = _io.clean_stale_temps(tmp_path, ".prepared.*.tmp")

        assert removed == dead_leftovers
        assert not dead_leftovers[0].exists()
        assert live_tmp.exists() and own_tmp.exists() and unrelated.exists()
    finally:
        release.set()
        live.join(WAIT_S)


def test_clean_stale_temps_on_a_missing_folder_removes_nothing(tmp_path: Path) -> None:
    assert _io.clean_stale_temps(tmp_path / "absent") == []


def test_a_second_process_is_refused_the_lock_with_the_holders_pid(tmp_path: Path) -> None:
    folder = tmp_path / "runs" / "same"
    locked, release = SPAWN.Event(), SPAWN.Event()
    holder = SPAWN.Process(target=_hold_lock, args=(str(folder), locked, release))
    holder.start()
    try:
        assert locked.wait(WAIT_S)
        assert _io.artifact_lock_holder(folder) == holder.pid
        with (
            pytest.raises(ConcurrencyError) as caught,
            _io.artifact_lock(folder, hint="wait for it or pick another --name"),
        ):
            pytest.fail("the lock was granted twice")
        assert isinstance(caught.value, ArtifactError)
        assert str(caught.value) == (
            f"{folder} is being written by process {holder.pid} — "
            "wait for it or pick another --name"
        )
        assert "\n" not in str(caught.value)
    finally:
        release.set()
        holder.join(WAIT_S)
    # Released when the holder is done: the next writer gets it.
    assert _io.artifact_lock_holder(folder) is None
    with _io.artifact_lock(folder):
        assert _io.artifact_lock_holder(folder) == os.getpid()
    assert not folder.exists()  # the lock never creates the artifact itself


def test_a_killed_holder_releases_the_lock(tmp_path: Path) -> None:
    folder = tmp_path / "run"
    locked, release = SPAWN.Event(), SPAWN.Event()
    holder = SPAWN.Process(target=_hold_lock, args=(str(folder), locked, release))
    holder.start()
    assert locked.wait(WAIT_S)
    os.kill(holder.pid or 0, signal.SIGKILL)
    holder.join(WAIT_S)

    assert _io.artifact_lock_holder(folder) is None
    with _io.artifact_lock(folder):
        pass


def test_the_lock_file_goes_away_with_the_lock(tmp_path: Path) -> None:
    folder = tmp_path / "run"
    with _io.artifact_lock(folder):
        assert (tmp_path / ".run.lock").read_text().strip() == str(os.getpid())
    assert list(tmp_path.iterdir()) == []
