"""Where ``visionops predict --out`` rows go, batch by batch, and what ``--resume`` skips.

- ``.csv`` and ``.jsonl``, local: appended after every batch and flushed, so a killed job
  leaves every finished batch on disk (a partial last line is cut on ``--resume``).
- ``.csv`` and ``.jsonl`` at a URL: streamed into one object, which the store publishes
  when the job ends (object stores have no append); ``--resume`` rewrites it with the old
  rows first. A killed job leaves the previous object as it was.
- ``.parquet``: a folder (or prefix) of shards, each written whole and atomically every
  :data:`SHARD_ROWS` rows or :data:`SHARD_SECONDS` seconds; the Ray engine writes its shards
  into the same folder. Read it with ``pandas.read_parquet`` or ``pyarrow.dataset``.
"""

from __future__ import annotations

import csv
import io
import json
import os
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Protocol

from visionops.errors import DataError
from visionops.inference.rows import Prediction, RowFormat, require_pyarrow
from visionops.storage import filesystem, is_url, storage_error

__all__ = [
    "FORMATS",
    "SHARD_ROWS",
    "SHARD_SECONDS",
    "PredictionWriter",
    "done_inputs",
    "open_writer",
    "out_exists",
    "out_format",
]

FORMATS = (".csv", ".jsonl", ".parquet")
SHARD_ROWS = 1024
SHARD_SECONDS = 10.0


class PredictionWriter(Protocol):
    """Takes each finished batch's predictions; ``close`` publishes what is left."""

    def write(self, predictions: Sequence[Prediction]) -> None:
        """Append one batch's rows."""

    def close(self) -> None:
        """Flush and publish everything written."""


def out_format(out: str) -> str:
    """``.csv``, ``.jsonl`` or ``.parquet`` from ``--out``'s suffix.

    Raises:
        DataError: Another suffix.
    """
    suffix = Path(out.rstrip("/")).suffix.lower()
    if suffix not in FORMATS:
        raise DataError(
            f"--out {out}: write .csv, .jsonl or .parquet (got '{suffix or 'no suffix'}')"
        )
    return suffix


def out_exists(out: str) -> bool:
    """Whether ``--out`` already holds something (a file, an object or a shard folder).

    Raises:
        StorageError: The store cannot be reached.
    """
    fs, path = filesystem(out)
    try:
        return bool(fs.exists(path))
    except Exception as error:
        raise storage_error(out, error) from None


# ---------------------------------------------------------------------------- resume


def _cut_partial_line(path: Path) -> None:
    """Drop a last line that a killed writer left without its newline."""
    with path.open("rb+") as handle:
        size = handle.seek(0, os.SEEK_END)
        if size == 0:
            return
        position = size
        while position > 0:
            step = min(1 << 16, position)
            handle.seek(position - step)
            chunk = handle.read(step)
            newline = chunk.rfind(b"\n")
            if newline >= 0:
                handle.truncate(position - step + newline + 1)
                return
            position -= step
        handle.truncate(0)


def _text_lines(out: str) -> list[str] | None:
    """The whole lines of a local or remote text output (None: it does not exist)."""
    if not is_url(out):
        path = Path(out)
        if not path.is_file():
            return None
        _cut_partial_line(path)
        return path.read_text(encoding="utf-8").splitlines()
    fs, path_in = filesystem(out)
    try:
        if not fs.exists(path_in):
            return None
        text: str = fs.cat_file(path_in).decode("utf-8")
    except Exception as error:
        raise storage_error(out, error, "read") from None
    whole = text[: text.rfind("\n") + 1]
    return whole.splitlines()


def _shard_files(out: str) -> list[str]:
    fs, root = filesystem(out)
    try:
        if not fs.exists(root):
            return []
        return sorted(p for p in fs.find(root) if p.endswith(".parquet"))
    except Exception as error:
        raise storage_error(out, error, "list") from None


def done_inputs(out: str) -> set[str]:
    """The inputs ``out`` already has a row for (what ``--resume`` skips).

    Raises:
        DataError: ``out`` is not a prediction file visionops wrote.
        StorageError: The store cannot be read.
    """
    suffix = out_format(out)
    if suffix == ".parquet":
        pq = require_pyarrow().parquet
        fs, _ = filesystem(out)
        done: set[str] = set()
        for shard in _shard_files(out):
            with fs.open(shard, "rb") as handle:
                done.update(pq.read_table(handle, columns=["path"]).column("path").to_pylist())
        return done
    lines = _text_lines(out)
    if not lines:
        return set()
    if suffix == ".jsonl":
        return {json.loads(line)["path"] for line in lines if line.strip()}
    reader = csv.DictReader(lines)
    if reader.fieldnames is None or "path" not in reader.fieldnames:
        raise DataError(f"--out {out} has no 'path' column — resume only a file predict wrote")
    return {row["path"] for row in reader}


# ---------------------------------------------------------------------------- writers


class _TextWriter:
    """CSV or JSON Lines, appended batch by batch."""

    def __init__(self, out: str, rows: RowFormat, *, resume: bool) -> None:
        self.out = out
        self.rows = rows
        self.csv = out_format(out) == ".csv"
        previous: list[str] = []
        local = None if is_url(out) else Path(out)
        if resume and local is not None and local.is_file():
            _cut_partial_line(local)
            with local.open(encoding="utf-8") as handle:
                previous = [line] if (line := handle.readline().rstrip("\n")) else []
        elif resume and local is None:
            previous = _text_lines(out) or []
        header = ["path", *rows.flat_columns, "error"]
        if self.csv and previous and previous[0].split(",") != header:
            raise DataError(
                f"--out {out} has columns {previous[0]}, not {','.join(header)} — it holds"
                " another model's rows; write to a new --out"
            )
        self.header = header
        self.handle: IO[str]
        if local is None:
            fs, path = filesystem(out)
            try:
                self.handle = fs.open(path, "w", encoding="utf-8")
            except Exception as error:
                raise storage_error(out, error, "write to") from None
            if previous:
                # Object stores cannot append: the old rows go first into the new object.
                self.handle.write("\n".join(previous) + "\n")
        else:
            local.parent.mkdir(parents=True, exist_ok=True)
            self.handle = local.open("a" if previous else "w", encoding="utf-8", newline="")
        if self.csv and not previous:
            self.handle.write(",".join(header) + "\n")
        self.handle.flush()

    def write(self, predictions: Sequence[Prediction]) -> None:
        buffer = io.StringIO()
        if self.csv:
            writer = csv.DictWriter(buffer, fieldnames=self.header, lineterminator="\n")
            writer.writerows(self.rows.flat_row(p) for p in predictions)
        else:
            for prediction in predictions:
                buffer.write(json.dumps(self.rows.record(prediction), default=str) + "\n")
        # One write per batch, then flush: a kill leaves whole batches (and at most one
        # partial line, which resume cuts).
        self.handle.write(buffer.getvalue())
        self.handle.flush()

    def close(self) -> None:
        try:
            self.handle.close()
        except Exception as error:
            raise storage_error(self.out, error, "write to") from None


class _ShardWriter:
    """Parquet shards in a folder or under a prefix, each published whole."""

    def __init__(self, out: str, rows: RowFormat) -> None:
        self.pq = require_pyarrow().parquet
        self.out = out
        self.rows = rows
        self.fs, self.root = filesystem(out)
        if not is_url(out):
            from visionops._io import clean_stale_temps

            Path(self.root).mkdir(parents=True, exist_ok=True)
            clean_stale_temps(Path(self.root))
        self.pending: list[Prediction] = []
        self.flushed = time.monotonic()
        self.prefix = f"part-{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}"
        self.sequence = 0

    def write(self, predictions: Sequence[Prediction]) -> None:
        self.pending.extend(predictions)
        if len(self.pending) >= SHARD_ROWS or time.monotonic() - self.flushed >= SHARD_SECONDS:
            self._flush()

    def _flush(self) -> None:
        self.flushed = time.monotonic()
        if not self.pending:
            return
        table = self.rows.arrow_table(self.pending)
        sink = io.BytesIO()
        self.pq.write_table(table, sink)
        name = f"{self.prefix}-{self.sequence:05d}.parquet"
        self.sequence += 1
        if is_url(self.out):
            try:
                self.fs.pipe_file(f"{self.root.rstrip('/')}/{name}", sink.getvalue())
            except Exception as error:
                raise storage_error(self.out, error, "write to") from None
        else:
            from visionops._io import atomic_write_bytes

            atomic_write_bytes(Path(self.root) / name, sink.getvalue())
        self.pending = []

    def close(self) -> None:
        self._flush()


def open_writer(out: str, rows: RowFormat, *, resume: bool) -> PredictionWriter:
    """A writer for ``--out`` (local path or URL) in the format its suffix names.

    Args:
        out: ``FILE.csv``, ``FILE.jsonl`` or ``FOLDER.parquet``, local or a URL.
        rows: The bundle's row columns.
        resume: Keep the rows already there (the caller skips their inputs).

    Raises:
        DataError: An unknown suffix, pyarrow missing for parquet, or a CSV with other columns.
        StorageError: The store cannot be written.
    """
    if out_format(out) == ".parquet":
        return _ShardWriter(out, rows)
    return _TextWriter(out, rows, resume=resume)
