"""Atomic file writes and content fingerprints shared by every stage."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from visionops.errors import ConcurrencyError

__all__ = [
    "artifact_lock",
    "artifact_lock_holder",
    "atomic_dir",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "atomic_writer",
    "clean_stale_temps",
    "current_umask",
    "dead_writer_temps",
    "file_sha256",
    "pid_alive",
    "read_json",
    "temp_prefix",
]


def temp_prefix(name: str) -> str:
    """The prefix of a temporary sibling of ``name``: ``.{name}.{pid}.``.

    Every temporary visionops stages an artifact under is named
    ``.{name}.{pid}.{random}.tmp``, so :func:`clean_stale_temps` can tell the leftovers of a
    process that died (kill -9, power loss) from the work in progress of a live one.
    """
    return f".{name}.{os.getpid()}."


def current_umask() -> int:
    """The process umask (read without changing it where ``/proc`` allows)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_writer(path: Path) -> Iterator[BinaryIO]:
    """A binary handle whose content replaces ``path`` whole when the block ends without error.

    Readers see the old file or the new one, never half: the content goes to a private
    temporary sibling, is flushed and fsync'd, then renamed over ``path``. On an error the
    temporary file is removed and ``path`` is untouched. The file gets the mode any new file
    gets (``0o666`` less the umask), like the rest of an artifact.

    Args:
        path: Destination file; its parent folder is created if needed.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=temp_prefix(path.name), suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_writer`).

    Args:
        path: Destination file; its parent folder is created if needed.
        data: The complete new content.
    """
    with atomic_writer(path) as handle:
        handle.write(data)


def atomic_write_text(path: Path, text: str) -> None:
    """Write text atomically (UTF-8). See :func:`atomic_write_bytes`."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def read_json(path: Path) -> Any:
    """Read a JSON file."""
    with path.open("r", encoding="utf-8") as handle:
        return json.load(handle)


@contextlib.contextmanager
def atomic_dir(final: Path) -> Iterator[Path]:
    """Build a folder under a temporary name and move it to ``final`` only on success.

    If ``final`` exists it is replaced (the caller decides whether that is allowed). On any
    exception the temporary folder is removed, so no half-written artifact is ever visible.

    Args:
        final: Where the finished folder should end up.

    Yields:
        The temporary folder to write into.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=temp_prefix(final.name), suffix=".tmp"))
    # mkdtemp makes a private (0700) folder; artifacts get the usual umask-based mode.
    tmp.chmod(0o777 & ~current_umask())
    try:
        yield tmp
        if final.exists():
            # Named like any temporary, so a crash between the two renames leaves something
            # clean_stale_temps recognises.
            trash = final.with_name(f"{temp_prefix(final.name)}old.tmp")
            os.replace(final, trash)
            os.replace(tmp, final)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def file_sha256(path: Path, chunk_size: int = 1 << 20) -> str:
    """Return the hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def _embedded_pid(name: str) -> int | None:
    """The writer's PID in a temporary named ``.{name}.{pid}.{random}.tmp``, else ``None``."""
    parts = name.split(".")
    if len(parts) < 5 or parts[0] != "" or parts[-1] != "tmp":
        return None
    try:
        pid = int(parts[-3])
    except ValueError:
        return None
    return pid if pid > 0 else None


def pid_alive(pid: int) -> bool:
    """Whether a process with this PID exists (``kill(pid, 0)``; not ours to signal = alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError as error:  # pragma: no cover - other errnos mean we cannot tell
        return error.errno != errno.ESRCH
    return True


def dead_writer_temps(folder: Path, pattern: str = ".*.tmp") -> list[Path]:
    """The temporaries in ``folder`` whose writer (the PID in the name) is not running.

    Names without a PID, and this process's own temporaries, are never listed.

    Args:
        folder: The folder to look in (not recursive); a missing folder lists nothing.
        pattern: Glob for the candidate names, e.g. ``".best.pt.*.tmp"``.

    Returns:
        The paths, sorted.
    """
    if not folder.is_dir():
        return []
    stale = []
    for path in sorted(folder.glob(pattern)):
        pid = _embedded_pid(path.name)
        if pid is not None and pid != os.getpid() and not pid_alive(pid):
            stale.append(path)
    return stale


def clean_stale_temps(folder: Path, pattern: str = ".*.tmp") -> list[Path]:
    """Remove the temporaries left in ``folder`` by writers that are no longer running.

    A temporary is stale when the PID embedded in its name (see :func:`temp_prefix`) is not a
    live process. Temporaries of live processes, and names without a PID, are never touched,
    so this is safe to call while other visionops commands write into the same folder.

    Args:
        folder: The folder to sweep (not recursive); a missing folder is not an error.
        pattern: Glob for the candidate names, e.g. ``".best.pt.*.tmp"``.

    Returns:
        The paths removed, sorted.
    """
    removed: list[Path] = []
    for path in dead_writer_temps(folder, pattern):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        removed.append(path)
    return removed


def _lock_path(folder: Path) -> Path:
    return folder.parent / f".{folder.name}.lock"


def _read_holder(lock_path: Path) -> int | None:
    try:
        text = lock_path.read_text(encoding="utf-8").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def artifact_lock_holder(folder: Path) -> int | None:
    """The PID holding :func:`artifact_lock` on ``folder``, or ``None`` when nobody does.

    The probe takes the lock for an instant (and removes a lock file a crashed writer left),
    so a writer starting at that very moment may be refused; callers use it for bookkeeping
    (is this "running" run really running?), never to decide who may write.

    Args:
        folder: The artifact folder (it need not exist).

    Returns:
        The holder's PID (``0`` when it is held but the PID is unreadable), or ``None``.
    """
    lock_path = _lock_path(folder)
    if not lock_path.exists():
        return None
    fd = _open_locked(lock_path)
    if fd is None:
        return _read_holder(lock_path) or 0
    with contextlib.suppress(FileNotFoundError):
        lock_path.unlink()
    os.close(fd)
    return None


def _open_locked(lock_path: Path) -> int | None:
    """Open ``lock_path`` and ``flock`` it without waiting; ``None`` if someone holds it.

    The file is removed when its holder lets go, so after taking the lock we check that the
    name still points at the file we locked; if not, the holder removed it meanwhile and we
    try again with the new one.
    """
    while True:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666 & ~current_umask())
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        try:
            same = os.stat(lock_path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)


@contextlib.contextmanager
def artifact_lock(
    folder: Path, *, hint: str = "wait for it to finish or write somewhere else"
) -> Iterator[None]:
    """Hold an exclusive lock on an artifact folder while this process writes it.

    The lock is an ``flock`` on the hidden file ``.{name}.lock`` next to ``folder`` (the
    folder itself may be replaced while locked), removed again on release. It is taken
    without waiting: if another process holds it,
    :class:`~visionops.errors.ConcurrencyError` says which one at once. The kernel drops the
    lock when the process dies, however it dies, so a crashed writer never blocks the next.

    Args:
        folder: The artifact folder being written.
        hint: What the refused user should do, appended to the error message.

    Yields:
        Nothing; the lock is held for the body of the ``with`` block.

    Raises:
        ConcurrencyError: Another live process holds the lock.
    """
    lock_path = _lock_path(folder)
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    fd = _open_locked(lock_path)
    if fd is None:
        holder = _read_holder(lock_path)
        who = f"process {holder}" if holder else "another process"
        raise ConcurrencyError(f"{folder} is being written by {who} — {hint}")
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        # Unlink while still holding the lock: a waiter that opened the old file sees that
        # the name moved on and retries (see _open_locked).
        with contextlib.suppress(FileNotFoundError):
            lock_path.unlink()
        os.close(fd)
