"""``visionops predict``: batch inference over files and folders, without a server.

Decoding, the model call and the answer are exactly ``serve``'s (:class:`ModelSession` and
:class:`Postprocessor` on the bundle's ONNX graph; never torch). Each image yields a record in
the prediction-log format, so ``--log`` appends batch jobs to the log ``drift report`` reads.

Examples:
    >>> result = predict_files(load_bundle(Path("runs/run-001/bundle")), [Path("photos")])
    >>> result.records[0].prediction["label"]  # doctest: +SKIP
    'circle'
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from visionops.artifacts import PredictionRecord
from visionops.errors import DataError, ImageError
from visionops.imaging import IMAGE_SUFFIXES
from visionops.inference.bundle import Bundle
from visionops.progress import NULL_PROGRESS, ProgressReporter
from visionops.tasks import get_task

__all__ = ["PredictResult", "append_to_log", "find_images", "predict_files", "write_predictions"]

DEFAULT_BATCH = 16


@dataclass
class PredictResult:
    """What :func:`predict_files` returns.

    Attributes:
        records: One prediction-log record per image that was read (``source``: its path).
        embeddings: ``(len(records), D)`` float32, or None when the graph has no embedding.
        outputs: ``(len(records), K)`` float32: the graph's task output.
        failures: ``(path, reason)`` for each file that could not be decoded.
        seconds: Wall time.
    """

    records: list[PredictionRecord]
    embeddings: NDArray[np.float32] | None
    outputs: NDArray[np.float32]
    failures: list[tuple[Path, str]] = field(default_factory=list)
    seconds: float = 0.0


def find_images(paths: Sequence[Path]) -> list[Path]:
    """Every image file named or inside a named folder (recursive, sorted, by suffix).

    Raises:
        DataError: A path that does not exist, or no image at all.
    """
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found.extend(
                sorted(
                    p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                )
            )
        elif path.is_file():
            found.append(path)
        else:
            raise DataError(f"{path} does not exist — pass image files or folders of images")
    if not found:
        shown = ", ".join(str(p) for p in paths[:3])
        raise DataError(
            f"no image files in {shown} — pass JPEG, PNG, BMP, GIF, TIFF, WebP or PNM files"
        )
    return found


def _batches(items: Sequence[Path], size: int) -> Iterator[Sequence[Path]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def predict_files(
    bundle: Bundle,
    paths: Sequence[Path],
    *,
    batch_size: int = DEFAULT_BATCH,
    threads: int = 0,
    top_k: int = 5,
    progress: ProgressReporter = NULL_PROGRESS,
) -> PredictResult:
    """Run the bundle over image files and folders, as ``serve`` would answer each.

    Args:
        bundle: A verified bundle.
        paths: Files and folders (searched recursively).
        batch_size: Images per model call.
        threads: ONNX Runtime threads (0 = every core).
        top_k: Labels in a classification answer.
        progress: Progress reporter (one step per image).

    Returns:
        Records in the prediction-log format (plus ``source``), embeddings, raw outputs and
        the files that failed to decode.

    Raises:
        DataError: No image to read, or none of them could be decoded.
    """
    from visionops.inference.predlog import prediction_record
    from visionops.inference.session import ModelSession, Postprocessor, PredictOptions

    started = time.perf_counter()
    files = find_images(paths)
    session = ModelSession(bundle, threads=threads, precision="fp32")
    postprocess = Postprocessor(bundle, default_top_k=top_k)
    options = PredictOptions()
    request_id = f"predict-{uuid.uuid4().hex[:12]}"
    records: list[PredictionRecord] = []
    embeddings: list[NDArray[np.float32]] = []
    outputs: list[NDArray[np.float32]] = []
    failures: list[tuple[Path, str]] = []
    bar = progress.start(f"predict {len(files)} images", total=len(files))
    try:
        for chunk in _batches(files, batch_size):
            decoded = []
            for path in chunk:
                try:
                    decoded.append((path, session.decode(path.read_bytes())))
                except (ImageError, OSError) as exc:
                    failures.append((path, str(exc)))
            if not decoded:
                bar.advance(len(chunk))
                continue
            compute_started = time.perf_counter()
            result = session.run(np.stack([image.pixels for _, image in decoded]))
            compute_ms = (time.perf_counter() - compute_started) * 1000
            now = datetime.now(UTC).isoformat()
            for row, (path, image) in enumerate(decoded):
                records.append(
                    prediction_record(
                        postprocess(result, row, options),
                        result.main[row],
                        image.info,
                        time=now,
                        request_id=request_id,
                        index=len(records),
                        model_version=bundle.model_version,
                        task=bundle.meta.task,
                        precision=session.precision,
                        latency_ms=compute_ms,
                        queue_ms=0.0,
                        compute_ms=compute_ms,
                        batch_size=len(decoded),
                        source=str(path),
                    )
                )
            outputs.append(result.main.reshape(len(decoded), -1))
            if result.embedding is not None:
                embeddings.append(result.embedding)
            bar.advance(len(chunk))
    finally:
        bar.close()
    if not records:
        raise DataError(
            f"none of the {len(files)} files could be decoded (first: {failures[0][0]}:"
            f" {failures[0][1]}) — pass readable images"
        )
    return PredictResult(
        records=records,
        embeddings=np.concatenate(embeddings) if len(embeddings) == len(outputs) else None,
        outputs=np.concatenate(outputs),
        failures=failures,
        seconds=time.perf_counter() - started,
    )


def append_to_log(result: PredictResult, directory: Path) -> int:
    """Append the records (and embeddings) to a prediction log in ``serve``'s format.

    Args:
        result: What :func:`predict_files` returned.
        directory: The log folder (default in the CLI: ``<run>/predictions``).

    Returns:
        Records written.
    """
    from visionops.inference.predlog import LogEntry, PredictionLog

    log = PredictionLog(directory)
    try:
        entries = [
            LogEntry(
                record=record,
                embedding=None if result.embeddings is None else result.embeddings[row],
            )
            for row, record in enumerate(result.records)
        ]
        for start in range(0, len(entries), 256):
            log.write(entries[start : start + 256])
    finally:
        log.close()
    return len(result.records)


def write_predictions(result: PredictResult, task: str, out: Path) -> Path:
    """Write one row per image to ``out``: ``.csv`` (flat columns) or ``.jsonl`` (records).

    Raises:
        DataError: Another suffix.
    """
    import csv
    import io
    import json

    from visionops._io import atomic_write_text

    suffix = out.suffix.lower()
    if suffix == ".jsonl":
        text = "".join(
            json.dumps({"path": record.source, **record.prediction}, default=str) + "\n"
            for record in result.records
        )
    elif suffix == ".csv":
        rows = [
            {"path": record.source, **get_task(task).flat_answer(record.prediction)}
            for record in result.records
        ]
        columns = list(dict.fromkeys(key for row in rows for key in row))
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        text = buffer.getvalue()
    else:
        raise DataError(f"--out {out}: write .csv or .jsonl (got '{suffix or 'no suffix'}')")
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, text)
    return out
