"""``visionops predict``: batch prediction over files, folders, buckets and list files.

Decoding, the model call and the answer are exactly ``serve``'s, at ``serve``'s precision
(:mod:`visionops.inference.batch`). The local engine streams (:mod:`~visionops.inference.stream`):
rows reach ``--out`` as each batch finishes (:mod:`~visionops.inference.writers`), so memory
stays flat and ``--resume`` continues a job that was killed. ``--engine ray`` runs the same
batches on a Ray cluster (:mod:`~visionops.inference.ray_engine`). Each decoded image can also
be appended to the prediction log ``drift report`` reads (``--log``).

Examples:
    >>> result = predict_files(load_bundle(Path("runs/run-001/bundle")), [Path("photos")])
    >>> result.records[0].prediction["label"]  # doctest: +SKIP
    'circle'
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from loguru import logger
from numpy.typing import NDArray

from visionops.artifacts import PredictionRecord
from visionops.errors import DataError
from visionops.inference.batch import BatchOutcome, BatchPredictor
from visionops.inference.bundle import Bundle
from visionops.inference.inputs import find_images, list_inputs
from visionops.inference.rows import Prediction
from visionops.inference.stream import StreamSummary, stream_predictions
from visionops.inference.writers import done_inputs, open_writer, out_exists, out_format
from visionops.progress import NULL_PROGRESS, ProgressReporter
from visionops.storage import filesystem, storage_error

__all__ = [
    "PredictJob",
    "PredictJobResult",
    "PredictResult",
    "find_images",
    "predict_files",
    "run_predict_job",
]

DEFAULT_BATCH = 16
Engine = Literal["local", "ray"]


# ---------------------------------------------------------------------------- library call


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


def predict_files(
    bundle: Bundle,
    paths: Sequence[Path],
    *,
    batch_size: int = DEFAULT_BATCH,
    threads: int = 0,
    top_k: int = 5,
    precision: str = "fp32",
    progress: ProgressReporter = NULL_PROGRESS,
) -> PredictResult:
    """Run the bundle over image files and folders, keeping every record in memory.

    For a sample that fits in memory (``drift report --current FOLDER``); a job of any size
    streams through :func:`run_predict_job` instead.

    Args:
        bundle: A verified bundle.
        paths: Files and folders (searched recursively).
        batch_size: Images per model call.
        threads: ONNX Runtime threads (0 = every core).
        top_k: Labels in a classification answer.
        precision: ``fp32`` (what drift references hold), ``int8`` or ``auto``.
        progress: Progress reporter (one step per image).

    Returns:
        Records in the prediction-log format (plus ``source``), embeddings, raw outputs and
        the files that failed to decode.

    Raises:
        DataError: No image to read, or none of them could be decoded.
    """
    files = [str(path) for path in find_images(paths)]
    predictor = BatchPredictor(
        bundle, threads=threads, precision=precision, top_k=top_k, request_id=_job_id()
    )
    records: list[PredictionRecord] = []
    embeddings: list[NDArray[np.float32]] = []
    outputs: list[NDArray[np.float32]] = []
    failures: list[tuple[Path, str]] = []

    def keep(outcome: BatchOutcome) -> None:
        records.extend(outcome.records)
        failures.extend((Path(p.path), p.error) for p in outcome.predictions if p.error)
        if outcome.records:
            outputs.append(outcome.outputs)
            if outcome.embeddings is not None:
                embeddings.append(outcome.embeddings)

    summary = stream_predictions(predictor, files, [keep], batch_size=batch_size, progress=progress)
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
        seconds=summary.seconds,
    )


# ---------------------------------------------------------------------------- the command


@dataclass
class PredictJob:
    """One ``visionops predict`` job.

    Attributes:
        locations: Images, folders, bucket prefixes and list files (see ``list_inputs``).
        out: ``FILE.csv``, ``FILE.jsonl`` or ``FOLDER.parquet``, local or a URL; None keeps
            the predictions for the screen.
        resume: Skip inputs ``out`` already has a row for, and append.
        force: Replace an ``out`` that exists.
        log_dir: Append each decoded image to the prediction log in this folder.
        engine: ``local`` (streaming, this process) or ``ray`` (Ray Data actors).
        batch_size: Images per model call.
        threads: ONNX Runtime threads (per Ray actor with ``ray``); 0: every core.
        precision: ``auto`` (``serve``'s default: int8 when the bundle has it), ``fp32``,
            ``int8``.
        device: ``auto``, ``cpu`` or ``cuda[:N]`` (one GPU per actor with ``ray``).
        top_k: Labels in a classification answer.
        ray_address: A running Ray cluster to join (None: a local Ray for this job).
        actors: Ray actors (0: one per ``threads`` CPUs of the cluster, or one per GPU).
        keep: Predictions kept for the screen when there is no ``out`` (None: all).
    """

    locations: list[str]
    out: str | None = None
    resume: bool = False
    force: bool = False
    log_dir: str | None = None
    engine: Engine = "local"
    batch_size: int = DEFAULT_BATCH
    threads: int = 0
    precision: str = "auto"
    device: str = "auto"
    top_k: int = 5
    ray_address: str | None = None
    actors: int = 0
    keep: int | None = 20


@dataclass
class PredictJobResult:
    """What a job did (the CLI prints it).

    Attributes:
        listed: Inputs the locations named.
        skipped: Inputs ``--resume`` found in ``out`` already.
        summary: What this run predicted and what failed.
        precision: ``fp32`` or ``int8``.
        shown: Predictions kept for the screen (only without ``out``).
        logged: Records appended to the prediction log.
    """

    listed: int
    skipped: int
    summary: StreamSummary
    precision: str
    shown: list[Prediction] = field(default_factory=list)
    logged: int = 0

    @property
    def images_per_s(self) -> float:
        """Inputs per second of this run."""
        seconds = self.summary.seconds
        return self.summary.inputs / seconds if seconds > 0 else 0.0


def _job_id() -> str:
    return f"predict-{uuid.uuid4().hex[:12]}"


def _prepare_out(job: PredictJob) -> set[str]:
    """Check ``--out`` against ``--resume``/``--force``; the inputs it already has."""
    if job.out is None:
        if job.resume:
            raise DataError("--resume continues an --out file — pass --out FILE as before")
        return set()
    suffix = out_format(job.out)
    if job.engine == "ray" and suffix != ".parquet":
        raise DataError(
            f"--engine ray writes parquet shards: pass --out FOLDER.parquet (got {job.out})"
        )
    if not out_exists(job.out):
        return set()
    if job.resume:
        return done_inputs(job.out)
    if not job.force:
        raise DataError(
            f"--out {job.out} exists — pass --resume to continue it or --force to replace it"
        )
    if suffix == ".parquet":
        fs, path = filesystem(job.out)
        try:
            fs.rm(path, recursive=True)
        except Exception as error:
            raise storage_error(job.out, error, "replace") from None
    return set()


class _LogSink:
    """Each batch's records and embeddings into the prediction log ``drift`` reads."""

    def __init__(self, location: str) -> None:
        from visionops.inference.predlog import PredictionLog

        # A URL stays a string: Path("s3://b/x") would collapse its "//".
        self.log = PredictionLog(location)

    def __call__(self, outcome: BatchOutcome) -> None:
        from visionops.inference.predlog import LogEntry

        self.log.write(
            [
                LogEntry(
                    record=record,
                    embedding=None if outcome.embeddings is None else outcome.embeddings[row],
                )
                for row, record in enumerate(outcome.records)
            ]
        )

    def close(self) -> int:
        if not self.log.close():
            logger.warning(
                "some prediction-log segments for {} are still in the local spool; the next"
                " `visionops predict --log` or `serve` with the same --log-dir uploads them",
                self.log.location,
            )
        return self.log.records_written


def run_predict_job(
    bundle: Bundle,
    job: PredictJob,
    *,
    providers: Sequence[str] | None = None,
    progress: ProgressReporter = NULL_PROGRESS,
) -> PredictJobResult:
    """List the inputs, skip what ``--resume`` finds done, predict the rest, write as it goes.

    Every check that can refuse the job (inputs, ``--out``, the bundle's precision, the
    device, Ray) runs before the first row is written.

    Args:
        bundle: A verified bundle.
        job: What to predict and where the rows go.
        providers: ONNX Runtime providers (None: those ``job.device`` names).
        progress: Progress reporter.

    Returns:
        Counts, timing and (without ``out``) the predictions to show.

    Raises:
        DataError: No inputs, an unknown ``--out`` suffix, an ``--out`` that exists without
            ``--resume``/``--force``, or Ray/pyarrow missing.
        StorageError: A bucket that cannot be reached.
        ArtifactError: ``int8`` asked of a bundle without one.
        DeviceError: A device that cannot run the bundle.
    """
    from visionops.inference.runtime import execution_providers

    if job.engine == "ray" and job.log_dir is not None:
        raise DataError(
            "--log with --engine ray is not supported — run `drift report` on a local"
            " --engine local --log job, or drop --log"
        )
    inputs = list_inputs(job.locations)
    done = _prepare_out(job)
    todo = [path for path in inputs if path not in done] if done else inputs
    if providers is None:
        providers, _ = execution_providers(job.device)
    if job.engine == "ray":
        from visionops.inference.ray_engine import predict_with_ray

        assert job.out is not None  # _prepare_out refuses ray without --out
        summary, precision = predict_with_ray(
            bundle,
            todo,
            job.out,
            address=job.ray_address,
            actors=job.actors,
            threads=job.threads,
            providers=providers,
            precision=job.precision,
            batch_size=job.batch_size,
            top_k=job.top_k,
        )
        return PredictJobResult(len(inputs), len(inputs) - len(todo), summary, precision)
    predictor = BatchPredictor(
        bundle,
        threads=job.threads,
        precision=job.precision,
        providers=providers,
        top_k=job.top_k,
        request_id=_job_id(),
    )
    shown: list[Prediction] = []

    def show(outcome: BatchOutcome) -> None:
        room = len(outcome.predictions) if job.keep is None else job.keep - len(shown)
        shown.extend(outcome.predictions[: max(0, room)])

    sinks: list[Callable[[BatchOutcome], None]] = []
    log = _LogSink(job.log_dir) if job.log_dir is not None else None
    writer = open_writer(job.out, predictor.rows, resume=job.resume) if job.out else None
    if writer is not None:
        sinks.append(lambda outcome: writer.write(outcome.predictions))
    else:
        sinks.append(show)
    if log is not None:
        sinks.append(log)
    logged = 0
    try:
        summary = stream_predictions(
            predictor, todo, sinks, batch_size=job.batch_size, progress=progress
        )
    finally:
        if writer is not None:
            writer.close()
        if log is not None:
            logged = log.close()
    return PredictJobResult(
        len(inputs), len(inputs) - len(todo), summary, predictor.precision, shown, logged
    )
