"""Read prediction logs: one folder, a whole fleet's bucket prefix, or several, merged by time.

A location is a local folder, one ``predictions-*.jsonl`` segment, a URL (``s3://``, ``gs://``,
any fsspec protocol) or a glob of those (``s3://bucket/logs/web-*``). A folder's segments are
the ones directly in it (one server's log, as ``serve`` writes locally) and the ones one level
down (``<log-dir>/<instance-id>/``, as each replica uploads them); embeddings are read from
the segment's own folder, so two replicas' segments with the same name never mix.
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import numpy as np
from loguru import logger
from numpy.typing import NDArray
from pydantic import ValidationError

from visionops.artifacts import PredictionRecord
from visionops.errors import ArtifactError, VisionOpsError
from visionops.storage import filesystem, is_url, storage_error

if TYPE_CHECKING:
    from fsspec import AbstractFileSystem

__all__ = [
    "SEGMENT_PATTERN",
    "PredictionLogData",
    "Segment",
    "find_segments",
    "read_prediction_logs",
]

SEGMENT_PATTERN = re.compile(r"^predictions-.+\.jsonl$")
"""Names of JSONL segments (their embeddings sit beside them as ``<stem>.embeddings.npy``)."""

_GLOB_CHARS = frozenset("*?[")
_OLDEST = datetime.min.replace(tzinfo=UTC)


@dataclass(frozen=True)
class Segment:
    """One JSONL segment found under a location.

    Attributes:
        fs: The filesystem it lives on.
        path: Its path on ``fs``.
        shown: How to name it to people (the URL, or the local path).
    """

    fs: AbstractFileSystem
    path: str
    shown: str

    @property
    def folder(self) -> str:
        """The folder holding the segment and its embeddings file."""
        return self.path.rsplit("/", 1)[0] if "/" in self.path else ""


@dataclass
class PredictionLogData:
    """What :func:`read_prediction_logs` returns.

    Attributes:
        records: Every record, ordered by time (records of one segment keep their order).
        embeddings: ``(len(records), D)`` float32 aligned with ``records`` (NaN rows for
            records without an embedding), or None when no record has one.
        files: The JSONL segments read, as shown to people.
        skipped_lines: Lines that are not a valid record (a crash's partial last line).
    """

    records: list[PredictionRecord]
    embeddings: NDArray[np.float32] | None
    files: list[str] = field(default_factory=list)
    skipped_lines: int = 0


def _shown(fs: AbstractFileSystem, path: str, location: str) -> str:
    return fs.unstrip_protocol(path) if is_url(location) else path


def _expand(location: str) -> tuple[list[Segment], bool]:
    """The segments under a location, and whether anything is there at all."""
    fs, path = filesystem(location)
    # Drivers cache listings for the life of the process; replicas keep adding segments.
    fs.invalidate_cache()
    matches = fs.glob(path) if _GLOB_CHARS & set(location) else [path]
    exists = bool(matches) and any(fs.exists(match) for match in matches)
    segments: list[Segment] = []
    for match in sorted(matches):
        if match.endswith(".jsonl"):  # one segment, named as the user likes
            if fs.isfile(match):
                segments.append(Segment(fs, match, _shown(fs, match, location)))
            continue
        if not fs.isdir(match):
            continue
        # The folder's own segments and its instance folders' (never images/ or deeper).
        for found in sorted(fs.find(match, maxdepth=2)):
            if SEGMENT_PATTERN.match(found.rsplit("/", 1)[-1]):
                segments.append(Segment(fs, found, _shown(fs, found, location)))
    return segments, exists


def find_segments(location: str | os.PathLike[str]) -> list[Segment]:
    """The JSONL segments under one location (folder, segment, URL or glob).

    Raises:
        StorageError: A URL that cannot be reached or read (the message names the
            credentials its driver reads), or a scheme whose driver is not installed.
        ArtifactError: Nothing there, or no segment in it.
    """
    text = os.fspath(location)
    try:
        segments, exists = _expand(text)
    except VisionOpsError:
        raise
    except Exception as error:  # each driver raises its own kinds: one line names the fix
        if is_url(text):
            raise storage_error(text, error, "read") from None
        raise ArtifactError(f"cannot read the prediction log at {text} ({error})") from None
    if not segments and exists:
        raise ArtifactError(
            f"no prediction log in {text} — serve traffic first with `visionops serve`"
        )
    if not segments:
        raise ArtifactError(
            f"no prediction log at {text} — pass the folder or URL `visionops serve --log-dir`"
            " writes (default: <run>/predictions); quote globs so the shell leaves them alone"
        )
    return segments


def _parse_npy(data: bytes, shown: str) -> NDArray[np.float32]:
    """An embeddings file's rows, trusting its header's count (rows past it were never logged)."""
    handle = io.BytesIO(data)
    version = np.lib.format.read_magic(handle)
    if version != (1, 0):
        raise ArtifactError(f"{shown} is not a visionops embeddings file (npy {version})")
    shape, _, _ = np.lib.format.read_array_header_1_0(handle)
    rows, dim = shape
    offset = handle.tell()
    available = (len(data) - offset) // (4 * dim) if dim else 0
    rows = min(rows, available)
    if rows == 0:
        return np.zeros((0, dim), np.float32)
    return np.frombuffer(data, dtype="<f4", count=rows * dim, offset=offset).reshape(rows, dim)


def _read_segment(segment: Segment) -> tuple[list[PredictionRecord], int]:
    lines = segment.fs.cat_file(segment.path).split(b"\n")
    records: list[PredictionRecord] = []
    skipped = 0
    for number, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            records.append(PredictionRecord.model_validate_json(line))
        except ValidationError:
            skipped += 1
            if number != len(lines) - 1:
                logger.warning(
                    "{}: line {} is not a prediction record, skipped", segment.shown, number + 1
                )
    return records, skipped


def _embeddings_of(
    segment: Segment, records: list[PredictionRecord], cache: dict[str, NDArray[np.float32]]
) -> list[NDArray[np.float32] | None]:
    rows: list[NDArray[np.float32] | None] = []
    for record in records:
        ref = record.embedding
        if ref is None:
            rows.append(None)
            continue
        name = ref.file.rsplit("/", 1)[-1]
        side = f"{segment.folder}/{name}" if segment.folder else name
        if side not in cache:
            try:
                cache[side] = _parse_npy(segment.fs.cat_file(side), side)
            except FileNotFoundError:
                cache[side] = np.zeros((0, 0), np.float32)
        array = cache[side]
        rows.append(array[ref.row] if 0 <= ref.row < array.shape[0] else None)
    return rows


def read_prediction_logs(
    locations: Sequence[str | os.PathLike[str]], *, with_embeddings: bool = True
) -> PredictionLogData:
    """Read every segment under several locations and merge the records by time.

    Each line is validated as a :class:`~visionops.artifacts.PredictionRecord`; lines that
    are not — the partial last line a crash can leave — are skipped and counted.

    Args:
        locations: Folders, segments, URLs or globs (see the module docstring).
        with_embeddings: Also load the embeddings the records point to.

    Returns:
        Records ordered by time, aligned embeddings, the segments read and how many lines
        were skipped.

    Raises:
        StorageError: A URL that cannot be reached or read.
        ArtifactError: A location with no segment.

    Examples:
        >>> log = read_prediction_logs(["s3://bucket/logs", "runs/run-001/predictions"])
        ... # doctest: +SKIP
        >>> len(log.records), log.embeddings.shape  # doctest: +SKIP
        (2400, (2400, 512))
    """
    segments: dict[tuple[int, str], Segment] = {}
    for location in locations:
        for segment in find_segments(location):
            segments.setdefault((id(segment.fs), segment.path), segment)
    records: list[PredictionRecord] = []
    vectors: list[NDArray[np.float32] | None] = []
    skipped = 0
    cache: dict[str, NDArray[np.float32]] = {}
    for segment in segments.values():
        try:
            found, bad = _read_segment(segment)
            if with_embeddings:
                vectors += _embeddings_of(segment, found, cache)
        except VisionOpsError:
            raise
        except Exception as error:  # each driver raises its own kinds: one line names the fix
            if is_url(segment.shown):
                raise storage_error(segment.shown, error, "read") from None
            raise ArtifactError(f"cannot read {segment.shown} ({error})") from None
        records += found
        skipped += bad
    # Stable: records of the same time keep their file order.
    order = sorted(range(len(records)), key=lambda i: records[i].timestamp() or _OLDEST)
    records = [records[i] for i in order]
    embeddings = None
    widths = {vector.shape[0] for vector in vectors if vector is not None}
    if with_embeddings and widths:
        dim = max(widths)
        embeddings = np.full((len(records), dim), np.nan, dtype=np.float32)
        for row, index in enumerate(order):
            vector = vectors[index]
            if vector is not None and vector.shape[0] == dim:
                embeddings[row] = vector
    return PredictionLogData(
        records, embeddings, [segment.shown for segment in segments.values()], skipped
    )
