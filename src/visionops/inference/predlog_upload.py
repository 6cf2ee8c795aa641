"""Ship closed prediction-log segments to object storage, off the request path.

A log whose folder is a URL is written exactly like a local one, into a spool folder on the
local disk (``$XDG_CACHE_HOME/visionops/prediction-logs/<url-hash>/<instance-id>/``, default
``~/.cache``); this module's thread uploads each segment once it is closed (by size, every
``upload_seconds``, and at shutdown) to ``<url>/<instance-id>/`` and then deletes the local copy.
So what is pending is simply what is still in the spool, and survives a restart that keeps
the disk: the next writer with the same URL uploads it under its original instance id.

A failing upload (no network, no credentials, the server down) never reaches the writer: it
is counted, retried with exponential back-off, and warned about at most once a minute.
"""

from __future__ import annotations

import hashlib
import os
import platform
import re
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from loguru import logger

from visionops._io import pid_alive
from visionops.inference.predlog_read import SEGMENT_PATTERN
from visionops.storage import filesystem, join, storage_error

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = [
    "SegmentUploader",
    "UploadStatus",
    "instance_id",
    "spool_root",
]

WARN_EVERY_S = 60.0
_PID = re.compile(r"-p(\d+)-\d+$")
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")
_METADATA = "http://metadata.google.internal/computeMetadata/v1/instance/id"


def _cloud_run_instance() -> str | None:
    """The Cloud Run instance's id from its metadata server (only asked on Cloud Run)."""
    request = urllib.request.Request(_METADATA, headers={"Metadata-Flavor": "Google"})
    try:
        with urllib.request.urlopen(request, timeout=1.0) as response:
            return str(response.read().decode("ascii", "replace")).strip() or None
    except OSError:
        return None


def instance_id(environ: dict[str, str] | None = None) -> str:
    """This replica's name in the fleet: the folder its segments go to under the log URL.

    Cloud Run: ``<K_REVISION>-<instance id>`` (the id from the metadata server, shortened);
    Kubernetes: ``HOSTNAME`` (the pod name); elsewhere: ``<host>-<pid>``.

    Args:
        environ: The environment to read (default ``os.environ``).
    """
    env = os.environ if environ is None else environ
    revision = env.get("K_REVISION")
    if revision:
        instance = _cloud_run_instance() if environ is None else None
        suffix = instance[-12:] if instance else f"{platform.node()}-{os.getpid()}"
        name = f"{revision}-{suffix}"
    elif env.get("HOSTNAME"):
        name = env["HOSTNAME"]
    else:
        name = f"{platform.node() or 'host'}-{os.getpid()}"
    return _SAFE.sub("-", name).strip("-.") or f"pid-{os.getpid()}"


def spool_root(url: str, cache_home: str | None = None) -> Path:
    """The local folder a URL's segments wait in before upload (one per URL).

    Args:
        url: The log URL.
        cache_home: The cache folder (default ``$XDG_CACHE_HOME``, else ``~/.cache``).
    """
    base = cache_home or os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    digest = hashlib.sha256(url.rstrip("/").encode("utf-8")).hexdigest()[:16]
    return Path(base).expanduser() / "visionops" / "prediction-logs" / digest


@dataclass(frozen=True)
class UploadStatus:
    """Where uploads to the log URL stand (``/metrics`` shows it).

    Attributes:
        url: The log URL.
        pending_bytes: Bytes in the spool not in the bucket yet (the open segment included).
        pending_segments: Segments waiting (the open one included).
        uploaded_segments: Segments uploaded by this process.
        uploaded_bytes: Their bytes (with their embeddings and images).
        failures: Upload attempts that failed.
    """

    url: str
    pending_bytes: int
    pending_segments: int
    uploaded_segments: int
    uploaded_bytes: int
    failures: int


class SegmentUploader:
    """The thread that uploads a spool's closed segments to a URL.

    Args:
        url: Where segments go (``<url>/<instance-id>/<segment>``).
        spool: The local spool root (one subfolder per instance id).
        is_open: Whether a local JSONL path is the writer's open segment (never uploaded).
        rotate: Closes the writer's open segment if it holds records (called every
            ``every_s``).
        every_s: Seconds between uploads (and the longest back-off after failures).
    """

    def __init__(
        self,
        url: str,
        spool: Path,
        *,
        is_open: Callable[[Path], bool],
        rotate: Callable[[], None],
        every_s: float,
    ) -> None:
        self.url = url.rstrip("/")
        self.spool = spool
        self.is_open = is_open
        self.rotate = rotate
        self.every_s = max(0.05, every_s)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()  # one upload pass at a time (thread vs drain)
        self._thread: threading.Thread | None = None
        self._failures = 0
        self._uploaded_segments = 0
        self._uploaded_bytes = 0
        self._pending = (0, 0)
        self._warned_at = -float("inf")
        self._failing = False
        filesystem(self.url)  # a scheme without its driver fails now, with the pip line

    # -- the thread

    def start(self) -> None:
        """Start uploading in the background (a first pass checks that the URL is usable)."""
        self._thread = threading.Thread(target=self._run, name="predlog-upload", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """Upload soon (a segment was just closed)."""
        self._wake.set()

    def _run(self) -> None:
        backoff = 1.0
        next_rotation = time.monotonic() + self.every_s
        retry_at = 0.0
        first = True
        while not self._stop.is_set():
            now = time.monotonic()
            if now >= next_rotation:
                self.rotate()
                next_rotation = now + self.every_s
            if now >= retry_at:
                if self.upload_pending(probe=first):
                    backoff = 1.0
                    retry_at = 0.0
                else:
                    retry_at = now + backoff
                    backoff = min(backoff * 2, max(1.0, self.every_s))
                first = False
            due = min(next_rotation, retry_at) if retry_at else next_rotation
            self._wake.wait(max(0.0, due - time.monotonic()))
            self._wake.clear()

    def stop(self) -> None:
        """Stop the thread (an upload in progress finishes first)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    # -- one pass

    def _candidates(self) -> list[tuple[str, Path]]:
        """Closed segments in the spool, oldest name first, with their instance id."""
        found: list[tuple[str, Path]] = []
        if not self.spool.is_dir():
            return found
        me = os.getpid()
        for folder in sorted(p for p in self.spool.iterdir() if p.is_dir()):
            for path in sorted(folder.glob("predictions-*.jsonl")):
                match = _PID.search(path.stem)
                pid = int(match.group(1)) if match else None
                if pid == me:
                    if self.is_open(path):
                        continue
                # Another live process (a sibling worker) uploads its own segments.
                elif pid is not None and pid_alive(pid):
                    continue
                found.append((folder.name, path))
        return found

    def _refresh_pending(self) -> None:
        total, segments = 0, 0
        if self.spool.is_dir():
            for path in self.spool.rglob("*"):
                if path.name.startswith(".") or not path.is_file():
                    continue
                try:
                    total += path.stat().st_size
                except FileNotFoundError:  # uploaded meanwhile
                    continue
                segments += SEGMENT_PATTERN.match(path.name) is not None
        self._pending = (total, segments)

    def _upload_one(self, instance: str, jsonl: Path) -> int:
        fs, _ = filesystem(self.url)
        remote = join(self.url, instance)
        _, remote_path = filesystem(remote)
        sent = 0
        images = jsonl.parent / "images"
        # Images and embeddings first, the JSONL last: a reader that sees a record in the
        # bucket finds what it points to.
        if images.is_dir():
            for image in sorted(images.iterdir()):
                if image.name.startswith(".") or not image.is_file():
                    continue
                fs.put_file(str(image), f"{remote_path}/images/{image.name}")
                sent += image.stat().st_size
                image.unlink()
        npy = jsonl.with_name(jsonl.stem + ".embeddings.npy")
        if npy.is_file():
            fs.put_file(str(npy), f"{remote_path}/{npy.name}")
            sent += npy.stat().st_size
        fs.put_file(str(jsonl), f"{remote_path}/{jsonl.name}")
        sent += jsonl.stat().st_size
        jsonl.unlink()
        npy.unlink(missing_ok=True)
        return sent

    def upload_pending(self, *, probe: bool = False) -> bool:
        """Upload every closed segment in the spool; False when an upload failed.

        Args:
            probe: Also check that the URL is reachable when nothing is pending (start-up),
                so a wrong URL or missing credentials is reported at once.
        """
        with self._lock:
            try:
                candidates = self._candidates()
                if probe and not candidates:
                    fs, path = filesystem(self.url)
                    fs.ls(path.split("/", 1)[0])  # the bucket: exists, and we may list it
                for instance, jsonl in candidates:
                    self._uploaded_bytes += self._upload_one(instance, jsonl)
                    self._uploaded_segments += 1
            except Exception as error:  # every driver raises its own kinds; all mean "retry"
                self._failures += 1
                self._failing = True
                now = time.monotonic()
                if now - self._warned_at >= WARN_EVERY_S:
                    self._warned_at = now
                    logger.warning(
                        "prediction log upload failed, will retry: {}",
                        storage_error(self.url, error, "upload to"),
                    )
                return False
            finally:
                self._refresh_pending()
            if self._failing and candidates:
                self._failing = False
                logger.info("prediction log uploads to {} resumed", self.url)
            return True

    def drain(self, deadline_s: float) -> bool:
        """Stop the thread, then upload what is left, retrying until ``deadline_s`` passes.

        Returns:
            True when nothing is left in the spool for this process to upload.
        """
        self.stop()
        end = time.monotonic() + deadline_s
        delay = 0.2
        while True:
            if self.upload_pending() and not self._candidates():
                return True
            if time.monotonic() + delay > end:
                break
            time.sleep(delay)
            delay = min(delay * 2, 5.0)
        logger.warning(
            "{} prediction-log bytes could not be uploaded to {} before shutdown; they stay in"
            " {} and upload on the next start with this --log-dir",
            self._pending[0],
            self.url,
            self.spool,
        )
        return False

    def status(self) -> UploadStatus:
        """Counters for ``/metrics`` (read from any thread)."""
        pending_bytes, pending_segments = self._pending
        return UploadStatus(
            url=self.url,
            pending_bytes=pending_bytes,
            pending_segments=pending_segments,
            uploaded_segments=self._uploaded_segments,
            uploaded_bytes=self._uploaded_bytes,
            failures=self._failures,
        )
