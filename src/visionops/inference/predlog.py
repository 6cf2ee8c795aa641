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

Durability: each batch's embedding rows are written first, then the ``.npy`` header is updated
to count them, then the batch's JSONL lines are written in one ``write`` — all before any client
gets its answer. So a record a client was told about is already in the file (a clean shutdown
also fsyncs), and a crash can at most leave a partial last line (which
:func:`read_prediction_log` skips) or embedding rows no record points to. Each process (each
uvicorn worker) writes its own segments, and a segment rotates when it passes ``max_bytes``.
"""

from __future__ import annotations

import os
import re
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from loguru import logger
from numpy.typing import NDArray
from pydantic import ValidationError

from visionops._io import atomic_write_bytes, clean_stale_temps
from visionops.artifacts import EmbeddingRef, LoggedImage, PredictionRecord, TaskName
from visionops.errors import ArtifactError

__all__ = [
    "DEFAULT_MAX_BYTES",
    "LogEntry",
    "PredictionLog",
    "PredictionLogData",
    "prediction_record",
    "read_prediction_log",
]

DEFAULT_MAX_BYTES = 64 * 1024 * 1024
_NPY_HEADER_BYTES = 128
_NPY_MAGIC = b"\x93NUMPY\x01\x00"
_SEGMENT = re.compile(r"^predictions-.+\.jsonl$")
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
    """Append prediction records (and embeddings, and optionally images) to a folder.

    Thread-safe: the server writes from its inference thread and closes from the event loop.

    Args:
        directory: The log folder (created).
        max_bytes: Rotate to a new segment when a segment's JSONL or embeddings pass this.
        log_images: Keep every raw upload under ``images/``.
    """

    def __init__(
        self, directory: Path, *, max_bytes: int = DEFAULT_MAX_BYTES, log_images: bool = False
    ) -> None:
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
            ) from None
        self._lock = threading.Lock()
        self._segment: _Segment | None = None
        self._sequence = 0
        self._started = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        self.records_written = 0

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

    def close(self) -> None:
        """Flush and fsync everything written; later writes start a new segment."""
        with self._lock:
            if self._segment is not None:
                self._segment.close()
                self._segment = None
        logger.debug(
            "prediction log closed: {} records in {}", self.records_written, self.directory
        )


@dataclass
class PredictionLogData:
    """What :func:`read_prediction_log` returns.

    Attributes:
        records: The records, oldest segment first, in file order.
        embeddings: ``(len(records), D)`` float32 aligned with ``records`` (NaN rows for
            records without an embedding), or None when no record has one.
        files: The JSONL segments read.
        skipped_lines: Lines that are not a valid record (a crash's partial last line).
    """

    records: list[PredictionRecord]
    embeddings: NDArray[np.float32] | None
    files: list[Path] = field(default_factory=list)
    skipped_lines: int = 0


def _read_npy_rows(path: Path) -> NDArray[np.float32]:
    """Read a side file, trusting its header's row count (rows past it were never recorded)."""
    with path.open("rb") as handle:
        version = np.lib.format.read_magic(handle)
        if version != (1, 0):
            raise ArtifactError(f"{path} is not a visionops embeddings file (npy {version})")
        header = np.lib.format.read_array_header_1_0(handle)
        offset = handle.tell()
    rows, dim = header[0]
    available = (path.stat().st_size - offset) // (4 * dim) if dim else 0
    rows = min(rows, available)
    if rows == 0:
        return np.zeros((0, dim), np.float32)
    mapped = np.memmap(path, dtype="<f4", mode="r", offset=offset, shape=(rows, dim))
    return np.array(mapped, dtype=np.float32)


def read_prediction_log(path: Path, *, with_embeddings: bool = True) -> PredictionLogData:
    """Read a prediction log folder (every segment) or one JSONL segment.

    Each line is validated as a :class:`~visionops.artifacts.PredictionRecord`; lines that
    are not — the partial last line a crash can leave — are skipped and counted.

    Args:
        path: The log folder or a ``predictions-*.jsonl`` file.
        with_embeddings: Also load the embeddings the records point to.

    Returns:
        Records, aligned embeddings, the files read and how many lines were skipped.

    Raises:
        ArtifactError: No such folder or file, or no segment in the folder.

    Examples:
        >>> log = read_prediction_log(Path("runs/run-001/predictions"))  # doctest: +SKIP
        >>> len(log.records), log.embeddings.shape
        (1200, (1200, 512))
    """
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if _SEGMENT.match(p.name))
        if not files:
            raise ArtifactError(
                f"no prediction log in {path} — serve traffic first with `visionops serve`"
            )
    elif path.is_file():
        files = [path]
    else:
        raise ArtifactError(
            f"no prediction log at {path} — pass the folder `visionops serve` writes"
            " (default: <run>/predictions)"
        )
    records: list[PredictionRecord] = []
    skipped = 0
    for file in files:
        lines = file.read_bytes().split(b"\n")
        for number, line in enumerate(lines):
            if not line.strip():
                continue
            try:
                record = PredictionRecord.model_validate_json(line)
            except ValidationError:
                skipped += 1
                if number != len(lines) - 1:
                    logger.warning(
                        "{}: line {} is not a prediction record, skipped", file, number + 1
                    )
                continue
            records.append(record)
    embeddings = None
    if with_embeddings:
        embeddings = _gather_embeddings(records, files[0].parent if files else path)
    return PredictionLogData(records, embeddings, files, skipped)


def _gather_embeddings(
    records: list[PredictionRecord], directory: Path
) -> NDArray[np.float32] | None:
    refs = [record.embedding for record in records]
    names = {ref.file for ref in refs if ref is not None}
    if not names:
        return None
    arrays: dict[str, NDArray[np.float32]] = {}
    for name in names:
        side = directory / Path(name).name
        arrays[name] = _read_npy_rows(side) if side.is_file() else np.zeros((0, 0), np.float32)
    dim = max(a.shape[1] for a in arrays.values())
    out = np.full((len(records), dim), np.nan, dtype=np.float32)
    for i, ref in enumerate(refs):
        if ref is None:
            continue
        array = arrays[ref.file]
        if 0 <= ref.row < array.shape[0] and array.shape[1] == dim:
            out[i] = array[ref.row]
    return out
