"""What one serving app owns: the model session, the batcher, the pools, metrics and the log.

The model loads and warms up in the inference thread after start-up; ``status`` moves from
``loading`` to ``ready`` (or ``failed``), then to ``stopping`` on shutdown, which finishes
queued work and flushes the prediction log.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from loguru import logger

from visionops.config import DriftSettings, ServeSettings
from visionops.errors import ImageError
from visionops.inference.budget import CpuBudget
from visionops.inference.bundle import Bundle
from visionops.inference.predlog import LogEntry, PredictionLog, prediction_record
from visionops.inference.runtime import available_cores, execution_providers
from visionops.inference.session import (
    DecodedImage,
    ModelSession,
    Postprocessor,
    PredictOptions,
    UnsupportedImageError,
)
from visionops.serve.batcher import MicroBatcher
from visionops.serve.http_errors import SecretScrubber
from visionops.serve.metrics import ServeMetrics, watch_log_uploads, watch_statistics
from visionops.serve.schemas import predict_response_model
from visionops.serve.sources import public_source
from visionops.serve.uploads import IMAGE_TYPES, Upload
from visionops.storage import is_url

__all__ = ["Job", "ServingState", "compute_plan", "default_log_dir", "worker_cores"]


def compute_plan(settings: ServeSettings, *, cpu: bool, models: int = 1) -> tuple[int, int]:
    """How the model's work is spread: batches computed at once, ONNX Runtime threads each.

    On the CPU with ``threads`` left at 0, each core of the worker runs its own batch on one
    thread: two single-thread runs side by side did 10-18 % more images per second than one
    run on two threads, for about 10 % less CPU per image (no barrier between the threads of
    an operator, which on a core shared with decoding and HTTP waits on whichever is
    descheduled; ``benchmarks/README.md``). A given ``threads`` keeps one batch at a time on
    that many threads (the lowest latency for a lone request); so does a GPU.

    Several models in one server split the budget rather than multiply it: each gets
    ``1/models`` of the worker's cores (and of a given ``threads``), at least one.

    Args:
        settings: The server settings (``threads``, ``workers``).
        cpu: The model runs on ONNX Runtime's CPU provider.
        models: How many models the server's worker serves.

    Returns:
        ``(batches_at_once, threads_per_batch)``.
    """
    cores = worker_cores(settings, models)
    if settings.threads:
        return 1, max(1, settings.threads // models)
    if not cpu:
        return 1, cores
    return cores, 1


def worker_cores(settings: ServeSettings, models: int = 1) -> int:
    """The cores each model of each of the ``serve.workers`` processes has to itself."""
    return max(1, available_cores() // settings.workers // models)


def default_log_dir(bundle: Bundle) -> Path:
    """Where the prediction log goes unless told otherwise: ``<bundle>/../predictions``."""
    return bundle.path.resolve().parent / "predictions"


@dataclass
class Job:
    """One decoded image waiting for (or in) a batch."""

    decoded: DecodedImage
    upload: Upload
    request_id: str
    index: int
    options: PredictOptions
    started: float
    submitted: float = 0.0
    log_entry: LogEntry | None = None


class ServingState:
    """Everything one app instance owns: session, batcher, pools, metrics, log.

    Args:
        bundle: The verified bundle.
        settings: Server settings.
        log_dir: The prediction log folder or URL (None: :func:`default_log_dir`); a URL's
            segments are uploaded off the event loop (see
            :mod:`visionops.inference.predlog_upload`).
        decode_threads: Threads that decode uploads (None: one per core; 0: decode on the
            event loop itself, only for measuring what the pool buys).
        device: ``--device``; see :func:`~visionops.inference.runtime.execution_providers`.
        drift: Online drift settings (``drift.window``, ``drift.every``; None: defaults).
        name: The model's name in a server with several (``/models/{name}/predict``).
        source: Where the bundle came from, as the user named it (a folder, URL, ...); a
            URL is kept without its query or password (:func:`public_source`).
        models: How many models the server serves: this one gets ``1/models`` of the CPU
            budget (cores for batches and decoding, drift's share).

    Raises:
        DeviceError: A device that cannot serve the bundle with checked answers.
    """

    def __init__(
        self,
        bundle: Bundle,
        settings: ServeSettings,
        log_dir: str | Path | None,
        decode_threads: int | None = None,
        device: str = "auto",
        drift: DriftSettings | None = None,
        *,
        name: str = "",
        source: str = "",
        models: int = 1,
    ) -> None:
        from visionops.drift.online import monitor_for_serve

        self.name = name
        self.source = public_source(source) if source else str(bundle.path)
        self.bundle = bundle
        self.meta = bundle.meta
        self.settings = settings
        self.providers, self.device_reason = execution_providers(device)
        self.api_key = settings.api_key.get_secret_value() if settings.api_key else None
        self.scrub = SecretScrubber([self.api_key])
        self.postprocess = Postprocessor(bundle, default_top_k=settings.top_k)
        self.response_model = predict_response_model(self.meta.task)
        self.metrics = ServeMetrics(self.meta)
        drift = drift or DriftSettings()
        cores = worker_cores(settings, models)
        self.drift = monitor_for_serve(bundle, drift, self.metrics.registry, cores)
        self.statistics_budget = CpuBudget(drift.statistics_cpu_share, cores)
        watch_statistics(self.metrics, self.statistics_budget.status)
        self.drift_off_reason = (
            "switched off (drift.online=false)"
            if not drift.online
            else "the bundle has no usable held-out drift reference (see the server log)"
        )
        self.log_dir: str | Path = (
            str(log_dir)
            if log_dir is not None and is_url(log_dir)
            else Path(log_dir or default_log_dir(bundle))
        )
        self.session: ModelSession | None = None
        self.status = "loading"
        self.failure: str | None = None
        self.on_fatal: Callable[[str], None] | None = None
        self.decode_threads = (
            max(1, available_cores() // models) if decode_threads is None else decode_threads
        )
        self.decode_pool = ThreadPoolExecutor(
            max_workers=max(1, self.decode_threads), thread_name_prefix="decode"
        )
        self.batches_at_once, self.ort_threads = compute_plan(
            settings, cpu=self.providers[0] == "CPUExecutionProvider", models=models
        )
        self.inference_pool = ThreadPoolExecutor(
            max_workers=self.batches_at_once, thread_name_prefix="inference"
        )
        # One writer thread: batches reach the log in order, while the next batch computes.
        self.log_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="predlog")
        self.predlog = PredictionLog(
            self.log_dir,
            log_images=settings.log_images,
            upload_seconds=settings.log_upload_seconds,
        )
        watch_log_uploads(self.metrics, self.predlog.upload_status)
        self.batcher: MicroBatcher[Job, dict[str, Any]] = MicroBatcher(
            self._run_batch,
            executor=self.inference_pool,
            max_batch=settings.max_batch,
            max_wait_s=settings.max_wait_ms / 1000.0,
            queue_size=settings.queue_size,
            on_batch=self._on_batch,
            describe_error=self.scrub.format_exception,
            after=self._write_log,
            after_executor=self.log_pool,
            concurrency=self.batches_at_once,
        )
        self.metrics.queue_depth.set_function(lambda: self.batcher.depth)
        self._seconds_per_image = 0.05
        self._load_task: asyncio.Task[None] | None = None

    @property
    def ready(self) -> bool:
        """Model loaded and warmed up, and not shutting down."""
        return self.status == "ready"

    # -- lifecycle

    async def startup(self) -> None:
        """Start the batcher, then load and warm up the model in the background."""
        self.batcher.start()
        if self.drift is not None:
            self.drift.start()
        self._load_task = asyncio.get_running_loop().create_task(self._load())

    async def _load(self) -> None:
        loop = asyncio.get_running_loop()
        drift_ready = None
        try:
            if self.drift is not None:
                # scikit-learn sets environment variables as it is imported; a setenv on one
                # thread while ONNX Runtime calls getenv on another crashes glibc. So the
                # drift tests' libraries are imported first, and the rest of the warm-up runs
                # alongside the model (so /ready also means drift's first run is cheap).
                await loop.run_in_executor(None, self.drift.import_libraries)
                drift_ready = loop.run_in_executor(None, self.drift.warm_up)
            self.session = await loop.run_in_executor(self.inference_pool, self._make_session)
            if drift_ready is not None:
                await drift_ready
        except Exception as exc:
            self.status = "failed"
            self.failure = self.scrub(str(exc))
            logger.error("cannot serve {}: {}", self.bundle.path, self.failure)
            if self.on_fatal is not None:
                self.on_fatal(self.failure)
            return
        if self.status == "loading":
            self.status = "ready"
            logger.info(
                "model {} ready ({} task, {} px, {} {}, ONNX Runtime {}: {} batch(es) at once,"
                " {} thread(s) each; {})",
                self.bundle.model_version,
                self.bundle.task,
                self.session.size,
                self.session.precision,
                self.session.model_path.name,
                "/".join(self.session.providers),
                self.batches_at_once,
                self.session.threads,
                self.device_reason,
            )

    def _make_session(self) -> ModelSession:
        session = ModelSession(
            self.bundle,
            threads=self.ort_threads,
            precision=self.settings.precision,
            providers=self.providers,
            statistics_budget=self.statistics_budget,
        )
        sizes = {1, self.settings.max_batch}
        if session.fixed_batch is not None:
            sizes = {session.fixed_batch}
        session.warm_up(tuple(sorted(sizes)))
        self.metrics.set_model_info(self.meta, session.providers, session.precision)
        return session

    async def shutdown(self) -> None:
        """Finish queued work, then flush and close the prediction log and the pools."""
        if self.status == "ready":
            self.status = "stopping"
        if self._load_task is not None and not self._load_task.done():
            await asyncio.wait([self._load_task])
        await self.batcher.stop()
        self.inference_pool.shutdown(wait=True)
        self.log_pool.shutdown(wait=True)
        self.decode_pool.shutdown(wait=True)
        # Off the event loop: with a log URL this is the drain's upload (bounded).
        await asyncio.get_running_loop().run_in_executor(None, self.predlog.close)
        if self.drift is not None:
            self.drift.stop()
        logger.info(
            "server stopped; {} predictions logged in {}",
            self.predlog.records_written,
            self.predlog.location,
        )
        await logger.complete()

    # -- inference thread

    def _run_batch(self, jobs: Sequence[Job]) -> list[dict[str, Any]]:
        session = self.session
        if session is None:  # the batcher only receives work once ready
            raise RuntimeError("model not loaded")
        started = time.perf_counter()
        outputs = session.run(np.stack([job.decoded.pixels for job in jobs]))
        answers = [
            self.postprocess(outputs, row, job.options, job.decoded.pixels)
            for row, job in enumerate(jobs)
        ]
        compute_s = time.perf_counter() - started
        now = datetime.now(UTC).isoformat()
        finished = time.perf_counter()
        for row, (job, answer) in enumerate(zip(jobs, answers, strict=True)):
            record = prediction_record(
                answer,
                outputs.main[row],
                job.decoded.info,
                time=now,
                request_id=job.request_id,
                index=job.index,
                model_version=self.bundle.model_version,
                task=self.bundle.meta.task,
                precision=session.precision,
                latency_ms=(finished - job.started) * 1000,
                queue_ms=(started - job.submitted) * 1000,
                compute_ms=compute_s * 1000,
                batch_size=len(jobs),
            )
            job.log_entry = LogEntry(
                record=record,
                embedding=None if outputs.embedding is None else outputs.embedding[row],
                image_bytes=job.upload.data if self.settings.log_images else None,
                image_format=job.decoded.info.format,
            )
        if self.drift is not None:
            self.drift.observe(outputs.main, outputs.embedding, [j.decoded.info for j in jobs])
        return answers

    def _write_log(self, jobs: Sequence[Job], answers: Sequence[dict[str, Any]]) -> None:
        # In the log thread, before any of these clients gets its answer (durability).
        self.predlog.write([job.log_entry for job in jobs if job.log_entry is not None])

    def _on_batch(self, batch_size: int, compute_s: float) -> None:
        self.metrics.observe_batch(batch_size, compute_s)
        # A running estimate of the cost of one image, for Retry-After.
        self._seconds_per_image = 0.9 * self._seconds_per_image + 0.1 * (compute_s / batch_size)

    def retry_after(self) -> str:
        """Seconds a refused client should wait: the current queue's estimated drain time."""
        seconds = self.batcher.depth * self._seconds_per_image / self.batches_at_once
        return str(max(1, math.ceil(seconds)))

    # -- request path

    def decode(self, upload: Upload) -> DecodedImage:
        """Check and decode one upload (runs in the decode pool)."""
        session = self.session
        if session is None:
            raise RuntimeError("model not loaded")
        if upload.content_type and not upload.content_type.startswith(IMAGE_TYPES):
            raise UnsupportedImageError(
                f"content type {upload.content_type} is not an image — send image/* files"
            )
        try:
            return session.decode(upload.data)
        except ImageError as exc:
            # Name the file, so a client that sent a batch knows which one failed.
            reason = str(exc).removeprefix("upload: ")
            raise type(exc)(f"{upload.name}: {reason}") from None
