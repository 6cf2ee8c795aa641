"""The prediction log that drift detection reads: append-only JSONL segments with rotation.

Layout of the log folder (default ``<bundle>/../predictions/``)::

    predictions-20261122T060000Z-p1234-0001.jsonl            one JSON record per image
    predictions-20261122T060000Z-p1234-0001.embeddings.npy   float32 (rows, D), row = record
    images/<request_id>-<index>.<ext>                        raw uploads, only with --log-images

A record looks like::

    {"time": "2026-11-22T06:00:00.123456+00:00", "request_id": "...", "index": 0,
     "model_version": "run-001@abcd1234", "task": "classification",
     "prediction": {"label": "circle", "probability": 0.97, "top_k": [...]},
     "latency_ms": 12.5, "queue_ms": 1.2, "compute_ms": 9.8, "batch_size": 4,
     "image": {"format": "jpeg", "width": 640, "height": 480, "bytes": 51234,
               "mean": 0.47, "std": 0.21, "min": 0.0, "max": 1.0, "mean_c0": 0.5, ...},
     "embedding": {"file": "predictions-...-0001.embeddings.npy", "row": 17},
     "image_file": "images/<request_id>-0.jpg"}

The folder may also be a URL (``s3://bucket/logs``, ``gs://...``, any fsspec URL): segments
are then written the same way into a local spool and uploaded to ``<url>/<instance-id>/`` when
they close — by size, every ``upload_seconds``, and on :meth:`PredictionLog.close` — by
:mod:`visionops.inference.predlog_upload`, off the caller's thread. :func:`read_prediction_log`
reads any number of folders, URLs and globs, merged by time
(:mod:`visionops.inference.predlog_read`).

Durability: each batch's embedding rows are written first, then the ``.npy`` header is updated
to count them, then the batch's JSONL lines are written in one ``write`` — all before any client
gets its answer. So a record a client was told about is already in the file (a clean shutdown
also fsyncs), and a crash can at most leave a partial last line (which
:func:`read_prediction_log` skips) or embedding rows no record points to. Each process (each
uvicorn worker) writes its own segments, and a segment rotates when it passes ``max_bytes``.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from loguru import logger
from numpy.typing import NDArray

from visionops._io import atomic_write_bytes, clean_stale_temps
from visionops.artifacts import EmbeddingRef, LoggedImage, PredictionRecord, TaskName
from visionops.errors import ArtifactError
from visionops.inference.predlog_read import PredictionLogData, read_prediction_logs
from visionops.inference.predlog_upload import (
    SegmentUploader,
    UploadStatus,
    instance_id,
    spool_root,
)
from visionops.storage import is_url

__all__ = [
    "DEFAULT_DRAIN_S",
    "DEFAULT_MAX_BYTES",
    "DEFAULT_UPLOAD_S",
    "LogEntry",
    "PredictionLog",
    "PredictionLogData",
    "UploadStatus",
    "prediction_record",
    "read_prediction_log",
]

DEFAULT_MAX_BYTES = 64 * 1024 * 1024
DEFAULT_UPLOAD_S = 60.0
DEFAULT_DRAIN_S = 20.0
"""Longest time :meth:`PredictionLog.close` spends uploading what is pending to a URL."""
_NPY_HEADER_BYTES = 128
_NPY_MAGIC = b"\x93NUMPY\x01\x00"
_EXTENSIONS = {"jpeg": "jpg", "png": "png", "gif": "gif", "bmp": "bmp", "tiff": "tif",
               "webp": "webp", "pnm": "pnm"}  # fmt: skip


def prediction_record(
    answer: dict[str, Any],
    output: NDArray[np.float32],
    image: LoggedImage,
    *,
    time: str,
    request_id: str,
    index: int,
    model_version: str,
    task: TaskName,
    precision: str,
    latency_ms: float,
    queue_ms: float,
    compute_ms: float,
    batch_size: int,
    source: str | None = None,
) -> PredictionRecord:
    """One image's record, as ``serve`` and ``predict --log`` write it.

    Args:
        answer: The task's answer (a heatmap in it is left out: it is a whole image).
        output: The graph's main output for the image, kept at float32 precision: drift
            compares it with the reference's float32 outputs, and rounding would turn a
            saturated 0.9999999 into 1.0 on one side only (a false alarm on a confident
            model).
        image: The upload's facts from decoding.
        time: When the batch finished (ISO 8601).
        request_id: The request (or ``predict`` job) it belongs to.
        index: Its position in the request.
        model_version: The bundle's version.
        task: The bundle's task.
        precision: ``fp32`` or ``int8``.
        latency_ms: From arrival to answer.
        queue_ms: Waiting for a batch.
        compute_ms: The batch's model call.
        batch_size: Images in the batch.
        source: The file it was read from (``predict``).
    """
    logged = dict(answer)
    if logged.get("heatmap"):
        logged["heatmap"] = "omitted"
    return PredictionRecord(
        time=time,
        request_id=request_id,
        index=index,
        model_version=model_version,
        precision=precision,
        task=task,
        prediction=logged,
        output=np.atleast_1d(output).astype(np.float32).tolist(),
        latency_ms=round(latency_ms, 3),
        queue_ms=round(queue_ms, 3),
        compute_ms=round(compute_ms, 3),
        batch_size=batch_size,
        image=image,
        source=source,
    )


@dataclass
class LogEntry:
    """One image's record before it is written.

    Attributes:
        record: The record without ``embedding`` and ``image_file`` (set when written).
        embedding: The image's embedding, or None.
        image_bytes: The raw upload, kept only when the log stores images.
        image_format: Its format name (``jpeg``, ``png``, ...), for the file extension.
    """

    record: PredictionRecord
    embedding: NDArray[np.float32] | None = None
    image_bytes: bytes | None = None
    image_format: str | None = None


def _npy_header(rows: int, dim: int) -> bytes:
    """A fixed-size npy v1.0 header, so the row count can be rewritten in place."""
    text = repr({"descr": "<f4", "fortran_order": False, "shape": (rows, dim)})
    room = _NPY_HEADER_BYTES - len(_NPY_MAGIC) - 2
    body = text.encode("latin1").ljust(room - 1) + b"\n"
    return _NPY_MAGIC + len(body).to_bytes(2, "little") + body


class _Segment:
    """One segment's two files, both created here (never an existing file appended to)."""

    def __init__(self, directory: Path, stem: str) -> None:
        self.jsonl_path = directory / f"{stem}.jsonl"
        self.npy_path = directory / f"{stem}.embeddings.npy"
        # Exclusive creation: a process that reuses a PID (a container restarted within the
        # second) or a second log in the same process must not append to, or truncate, a
        # segment someone else wrote; FileExistsError makes the caller pick the next name.
        self.jsonl: BinaryIO = self.jsonl_path.open("xb", buffering=0)
        try:
            self._npy_file: BinaryIO = self.npy_path.open("xb", buffering=0)
        except FileExistsError:
            self.jsonl.close()
            self.jsonl_path.unlink()
            raise
        self.npy: BinaryIO | None = None
        self.rows = 0
        self.dim = 0
        self.jsonl_bytes = 0

    def add_embeddings(self, embeddings: NDArray[np.float32]) -> int:
        """Append rows; return the index of the first."""
        if self.npy is None:
            self.dim = int(embeddings.shape[1])
            self.npy = self._npy_file
            self.npy.write(_npy_header(0, self.dim))
        if embeddings.shape[1] != self.dim:
            raise ValueError(f"embedding width {embeddings.shape[1]} != {self.dim}")
        first = self.rows
        self.npy.seek(0, os.SEEK_END)
        self.npy.write(np.ascontiguousarray(embeddings, dtype="<f4").tobytes())
        self.rows += embeddings.shape[0]
        os.pwrite(self.npy.fileno(), _npy_header(self.rows, self.dim), 0)
        return first

    def size(self) -> int:
        return max(self.jsonl_bytes, _NPY_HEADER_BYTES + self.rows * self.dim * 4)

    def close(self) -> None:
        for handle in (self.jsonl, self._npy_file):
            if not handle.closed:
                os.fsync(handle.fileno())
                handle.close()
        if self.npy is None:  # no embedding was ever written: no empty side file
            self.npy_path.unlink(missing_ok=True)


class PredictionLog:
    """Append prediction records (and embeddings, and optionally images) to a folder or URL.

    Thread-safe: the server writes from its log thread and closes from the event loop.

    Args:
        location: The log folder (created), or a URL whose segments are uploaded under
            ``<url>/<instance-id>/`` from a local spool (see the module docstring).
        max_bytes: Rotate to a new segment when a segment's JSONL or embeddings pass this.
        log_images: Keep every raw upload under ``images/``.
        upload_seconds: With a URL: close and upload the open segment this often.
        spool: With a URL: the local spool root (default
            :func:`~visionops.inference.predlog_upload.spool_root`).

    Raises:
        ArtifactError: The local folder cannot be created.
        StorageError: A URL scheme whose driver is not installed (the message is the
            ``pip install`` that brings it).

    Examples:
        >>> log = PredictionLog("s3://bucket/logs", upload_seconds=60)  # doctest: +SKIP
        >>> log.write(entries)  # doctest: +SKIP
        >>> log.close()  # uploads what is pending, for up to DEFAULT_DRAIN_S  # doctest: +SKIP
    """

    def __init__(
        self,
        location: str | os.PathLike[str],
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        log_images: bool = False,
        upload_seconds: float = DEFAULT_UPLOAD_S,
        spool: Path | None = None,
    ) -> None:
        text = os.fspath(location)
        self.url: str | None = text.rstrip("/") if is_url(text) else None
        self.uploader: SegmentUploader | None = None
        if self.url is not None:
            root = spool or spool_root(self.url)
            directory = root / instance_id()
            self.uploader = SegmentUploader(
                self.url,
                root,
                is_open=self._is_open,
                rotate=self.rotate,
                every_s=upload_seconds,
            )
        else:
            directory = Path(text)
        self.location = self.url or str(directory)
        self.directory = directory
        self.max_bytes = max_bytes
        self.log_images = log_images
        try:
            directory.mkdir(parents=True, exist_ok=True)
            if log_images:
                (directory / "images").mkdir(exist_ok=True)
            # Half-written uploads of a server that was killed (never a live one's).
            clean_stale_temps(directory / "images")
        except OSError as exc:
            raise ArtifactError(
                f"cannot create the prediction log folder {directory} ({exc.strerror}) — pass"
                " a writable --log-dir"
                + (" (or set XDG_CACHE_HOME to a writable folder)" if self.url else "")
            ) from None
        self._lock = threading.Lock()
        self._segment: _Segment | None = None
        self._sequence = 0
        self._started = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        self.records_written = 0
        if self.uploader is not None:
            self.uploader.start()

    @property
    def current_file(self) -> Path | None:
        """The JSONL segment being written, if any."""
        return self._segment.jsonl_path if self._segment else None

    def _open_segment(self) -> _Segment:
        while True:
            self._sequence += 1
            stem = f"predictions-{self._started}-p{os.getpid()}-{self._sequence:04d}"
            try:
                return _Segment(self.directory, stem)
            except FileExistsError:
                continue

    def write(self, entries: list[LogEntry]) -> None:
        """Append one batch of records; returns once they are in the files.

        Args:
            entries: Records in the order they should appear.
        """
        if not entries:
            return
        with self._lock:
            if self._segment is None:
                self._segment = self._open_segment()
            segment = self._segment
            with_embedding = [e for e in entries if e.embedding is not None]
            if with_embedding:
                stacked = np.stack([np.asarray(e.embedding, np.float32) for e in with_embedding])
                row = segment.add_embeddings(stacked)
                for entry in with_embedding:
                    entry.record.embedding = EmbeddingRef(file=segment.npy_path.name, row=row)
                    row += 1
            if self.log_images:
                for entry in entries:
                    if entry.image_bytes is None:
                        continue
                    ext = _EXTENSIONS.get(entry.image_format or "", "bin")
                    name = f"{entry.record.request_id}-{entry.record.index}.{ext}"
                    atomic_write_bytes(self.directory / "images" / name, entry.image_bytes)
                    entry.record.image_file = f"images/{name}"
            payload = b"".join(
                e.record.model_dump_json(exclude_unset=True, fallback=str).encode("utf-8") + b"\n"
                for e in entries
            )
            segment.jsonl.write(payload)
            segment.jsonl_bytes += len(payload)
            self.records_written += len(entries)
            if segment.size() >= self.max_bytes:
                segment.close()
                self._segment = None
                if self.uploader is not None:
                    self.uploader.wake()

    def _is_open(self, path: Path) -> bool:
        with self._lock:
            return self._segment is not None and self._segment.jsonl_path == path

    def rotate(self) -> None:
        """Close the open segment if it holds records (the next write starts a new one)."""
        with self._lock:
            if self._segment is None:
                return
            self._segment.close()
            self._segment = None

    def upload_status(self) -> UploadStatus | None:
        """Upload counters when the log goes to a URL, else None."""
        return None if self.uploader is None else self.uploader.status()

    def close(self, drain_s: float = DEFAULT_DRAIN_S) -> bool:
        """Flush and fsync everything written; with a URL, upload what is pending.

        Later writes start a new segment (and, with a URL, are uploaded by the next writer).

        Args:
            drain_s: With a URL: the longest time spent uploading; what is left stays in the
                spool and is uploaded by the next writer to the same URL on this disk.

        Returns:
            False when a URL's uploads did not all finish within ``drain_s``.
        """
        self.rotate()
        drained = True
        if self.uploader is not None:
            drained = self.uploader.drain(drain_s)
        logger.debug("prediction log closed: {} records in {}", self.records_written, self.location)
        return drained


def read_prediction_log(
    location: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    *,
    with_embeddings: bool = True,
) -> PredictionLogData:
    """Read a prediction log: a folder, a segment, a URL, a glob, or several, merged by time.

    Each line is validated as a :class:`~visionops.artifacts.PredictionRecord`; lines that
    are not — the partial last line a crash can leave — are skipped and counted.

    Args:
        location: One location or a list of them (folders, ``predictions-*.jsonl`` files,
            URLs such as ``s3://bucket/logs``, globs such as ``'s3://bucket/logs/web-*'``).
        with_embeddings: Also load the embeddings the records point to.

    Returns:
        Records ordered by time, aligned embeddings, the segments read and how many lines
        were skipped.

    Raises:
        ArtifactError: No such folder or file, or no segment in it.
        StorageError: A URL that cannot be reached or read.

    Examples:
        >>> log = read_prediction_log(Path("runs/run-001/predictions"))  # doctest: +SKIP
        >>> len(log.records), log.embeddings.shape
        (1200, (1200, 512))
    """
    if isinstance(location, str | os.PathLike):
        return read_prediction_logs([location], with_embeddings=with_embeddings)
    return read_prediction_logs(list(location), with_embeddings=with_embeddings)
