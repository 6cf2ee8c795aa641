"""The FastAPI app that serves one bundle.

Request path of ``POST /predict``::

    body read with a size cap (413) -> type checks (415) -> decode + resize in a thread pool
    (422 / 413 for bombs) -> bounded micro-batch queue (503 + Retry-After when full) -> one
    ONNX Runtime call per batch in the inference thread, which also post-processes and appends
    to the prediction log -> answer; the whole request under a deadline (504).

The event loop only parses HTTP and moves bytes, so ``/health``, ``/ready`` and ``/metrics``
answer at once however busy the model is. Never imports torch.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import math
import re
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from fastapi import Depends, FastAPI, Query, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from loguru import logger
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel, Field
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.types import Message

from visionops import __version__
from visionops.bundle import Bundle
from visionops.config import DriftSettings, ServeSettings
from visionops.errors import ImageError
from visionops.serve.batcher import MicroBatcher, QueueFullError, StoppedError
from visionops.serve.metrics import MetricsMiddleware, ServeMetrics
from visionops.serve.page import UPLOAD_PAGE
from visionops.serve.predlog import LogEntry, PredictionLog
from visionops.serve.session import (
    DecodedImage,
    ImageTooLargeError,
    ModelSession,
    Postprocessor,
    PredictOptions,
    UnsupportedImageError,
    available_cores,
)

__all__ = ["API_KEY_ENV", "ApiError", "ServingState", "create_app", "default_log_dir"]

API_KEY_ENV = "VISIONOPS_API_KEY"
MAX_FILES_PER_REQUEST = 64
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
_ALLOWED_PART_TYPES = ("image/", "application/octet-stream")


def default_log_dir(bundle: Bundle) -> Path:
    """Where the prediction log goes unless told otherwise: ``<bundle>/../predictions``."""
    return bundle.path.resolve().parent / "predictions"


class ApiError(Exception):
    """An error answered to the client as ``{"error": {...}}`` (never a stack trace).

    Args:
        status: HTTP status.
        kind: Short machine-readable cause (also the ``visionops_errors_total`` label).
        message: What is wrong and what to do, for a person.
        headers: Extra response headers (``Retry-After``, ``WWW-Authenticate``).
    """

    def __init__(
        self, status: int, kind: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind
        self.message = message
        self.headers = headers or {}


# Module level, so FastAPI can resolve these annotations inside create_app's closures.
_ApiKey = Annotated[str | None, Security(APIKeyHeader(name="X-API-Key", auto_error=False))]
_Bearer = Annotated[HTTPAuthorizationCredentials | None, Security(HTTPBearer(auto_error=False))]

# ------------------------------------------------------------------ response schemas (docs)


class ErrorBody(BaseModel):
    """What went wrong."""

    status: int
    kind: str = Field(description="Machine-readable cause, e.g. unsupported_media_type.")
    message: str = Field(description="What is wrong and what to do about it.")


class ErrorResponse(BaseModel):
    """Every error response has this shape."""

    error: ErrorBody
    request_id: str | None = None


class Timing(BaseModel):
    """Where the request's time went, in milliseconds."""

    total_ms: float
    queue_ms: float = Field(description="Longest wait of the request's images for a batch.")
    compute_ms: float = Field(description="Longest model call the request's images ran in.")
    batch_size: int = Field(description="Largest batch the request's images ran in.")


class PredictResponse(BaseModel):
    """The answer to ``POST /predict``: one prediction per uploaded image, in order.

    Each prediction, by task — classification: ``label``, ``probability``, ``top_k`` (list of
    ``{label, probability}``); multilabel: ``labels`` (over threshold), ``probabilities``,
    ``thresholds``; regression: ``values`` (list of ``{name, value, unit}``); anomaly:
    ``score``, ``threshold``, ``is_anomaly``, ``verdict``, ``heatmap`` (PNG as base64, when
    asked). Every prediction also carries ``file`` (the upload's name).
    """

    request_id: str
    model_version: str
    task: str
    predictions: list[dict[str, Any]]
    timing: Timing


class PredictJSON(BaseModel):
    """JSON body for clients without multipart: base64 images (a ``data:`` URL prefix is ok)."""

    image: str | None = Field(None, description="One base64-encoded image file.")
    images: list[str] | None = Field(None, description="Several, predicted as one batch.")


_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": text}
    for code, text in {
        401: "Missing or wrong API key.",
        413: "Body too large, or an image with too many pixels (decompression bomb).",
        415: "Not multipart or JSON, or a file that is not an image.",
        422: "An image that cannot be decoded (the message says why), or bad parameters.",
        503: "Model not ready, queue full or shutting down; see Retry-After.",
        504: "The request did not finish within the server's deadline.",
    }.items()
}

_PREDICT_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "file": {
                            "type": "array",
                            "items": {"type": "string", "format": "binary"},
                            "description": "One or more image files (several = one batch).",
                        }
                    },
                    "required": ["file"],
                }
            },
            "application/json": {"schema": PredictJSON.model_json_schema()},
        },
    }
}


# ------------------------------------------------------------------ serving state


@dataclass
class _Upload:
    name: str
    content_type: str | None
    data: bytes


@dataclass
class _Job:
    decoded: DecodedImage
    upload: _Upload
    request_id: str
    index: int
    options: PredictOptions
    started: float
    submitted: float = 0.0


class ServingState:
    """Everything one app instance owns: session, batcher, pools, metrics, log.

    Args:
        bundle: The verified bundle.
        settings: Server settings.
        log_dir: The prediction log folder (None: :func:`default_log_dir`).
        decode_threads: Threads that decode uploads (None: one per core; 0: decode on the
            event loop itself, only for measuring what the pool buys).
    """

    def __init__(
        self,
        bundle: Bundle,
        settings: ServeSettings,
        log_dir: Path | None,
        decode_threads: int | None = None,
        drift: DriftSettings | None = None,
    ) -> None:
        from visionops.drift.online import monitor_for_serve

        self.bundle = bundle
        self.settings = settings
        self.postprocess = Postprocessor(bundle, default_top_k=settings.top_k)
        self.metrics = ServeMetrics(bundle)
        self.drift = monitor_for_serve(bundle, drift or DriftSettings(), self.metrics.registry)
        self.log_dir = log_dir or default_log_dir(bundle)
        self.session: ModelSession | None = None
        self.status = "loading"
        self.failure: str | None = None
        self.on_fatal: Callable[[str], None] | None = None
        self.decode_threads = available_cores() if decode_threads is None else decode_threads
        self.decode_pool = ThreadPoolExecutor(
            max_workers=max(1, self.decode_threads), thread_name_prefix="decode"
        )
        self.inference_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")
        self.predlog = PredictionLog(self.log_dir, log_images=settings.log_images)
        self.batcher: MicroBatcher[_Job, dict[str, Any]] = MicroBatcher(
            self._run_batch,
            executor=self.inference_pool,
            max_batch=settings.max_batch,
            max_wait_s=settings.max_wait_ms / 1000.0,
            queue_size=settings.queue_size,
            on_batch=self._on_batch,
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
        try:
            self.session = await loop.run_in_executor(self.inference_pool, self._make_session)
        except Exception as exc:
            self.status = "failed"
            self.failure = str(exc)
            logger.error("cannot serve {}: {}", self.bundle.path, exc)
            if self.on_fatal is not None:
                self.on_fatal(str(exc))
            return
        if self.status == "loading":
            self.status = "ready"
            logger.info(
                "model {} ready ({} task, {} px, {} {}, ONNX Runtime {} with {} threads)",
                self.bundle.model_version,
                self.bundle.task,
                self.session.size,
                self.session.precision,
                self.session.model_path.name,
                "/".join(self.session.providers),
                self.session.threads,
            )

    def _make_session(self) -> ModelSession:
        threads = self.settings.threads or max(1, available_cores() // self.settings.workers)
        session = ModelSession(self.bundle, threads=threads, precision=self.settings.precision)
        sizes = {1, self.settings.max_batch}
        if session.fixed_batch is not None:
            sizes = {session.fixed_batch}
        session.warm_up(tuple(sorted(sizes)))
        self.metrics.set_model_info(self.bundle, session.providers, session.precision)
        return session

    async def shutdown(self) -> None:
        """Finish queued work, then flush and close the prediction log and the pools."""
        if self.status == "ready":
            self.status = "stopping"
        if self._load_task is not None and not self._load_task.done():
            await asyncio.wait([self._load_task])
        await self.batcher.stop()
        self.inference_pool.shutdown(wait=True)
        self.decode_pool.shutdown(wait=True)
        self.predlog.close()
        if self.drift is not None:
            self.drift.stop()
        logger.info(
            "server stopped; {} predictions logged in {}",
            self.predlog.records_written,
            self.log_dir,
        )
        await logger.complete()

    # -- inference thread

    def _run_batch(self, jobs: Sequence[_Job]) -> list[dict[str, Any]]:
        session = self.session
        if session is None:  # the batcher only receives work once ready
            raise RuntimeError("model not loaded")
        started = time.perf_counter()
        outputs = session.run(np.stack([job.decoded.pixels for job in jobs]))
        answers = [self.postprocess(outputs, row, job.options) for row, job in enumerate(jobs)]
        compute_s = time.perf_counter() - started
        now = datetime.now(UTC).isoformat()
        finished = time.perf_counter()
        entries = []
        for row, (job, answer) in enumerate(zip(jobs, answers, strict=True)):
            logged = dict(answer)
            if logged.get("heatmap"):
                logged["heatmap"] = "omitted"
            record = {
                "time": now,
                "request_id": job.request_id,
                "index": job.index,
                "model_version": self.bundle.model_version,
                "precision": session.precision,
                "task": self.bundle.task,
                "prediction": logged,
                "output": np.atleast_1d(outputs.main[row]).astype(float).round(6).tolist(),
                "latency_ms": round((finished - job.started) * 1000, 3),
                "queue_ms": round((started - job.submitted) * 1000, 3),
                "compute_ms": round(compute_s * 1000, 3),
                "batch_size": len(jobs),
                "image": job.decoded.info,
            }
            entries.append(
                LogEntry(
                    record=record,
                    embedding=None if outputs.embedding is None else outputs.embedding[row],
                    image_bytes=job.upload.data if self.settings.log_images else None,
                    image_format=str(job.decoded.info.get("format")),
                )
            )
        self.predlog.write(entries)
        if self.drift is not None:
            self.drift.observe(outputs.main, outputs.embedding, [j.decoded.info for j in jobs])
        return answers

    def _on_batch(self, batch_size: int, compute_s: float) -> None:
        self.metrics.observe_batch(batch_size, compute_s)
        # A running estimate of the cost of one image, for Retry-After.
        self._seconds_per_image = 0.9 * self._seconds_per_image + 0.1 * (compute_s / batch_size)

    def retry_after(self) -> str:
        """Seconds a refused client should wait: the current queue's estimated drain time."""
        return str(max(1, math.ceil(self.batcher.depth * self._seconds_per_image)))

    # -- request path

    def decode(self, upload: _Upload) -> DecodedImage:
        """Check and decode one upload (runs in the decode pool)."""
        session = self.session
        if session is None:
            raise RuntimeError("model not loaded")
        if upload.content_type and not upload.content_type.startswith(_ALLOWED_PART_TYPES):
            raise UnsupportedImageError(
                f"content type {upload.content_type} is not an image — send image/* files"
            )
        try:
            return session.decode(upload.data)
        except ImageError as exc:
            # Name the file, so a client that sent a batch knows which one failed.
            reason = str(exc).removeprefix("upload: ")
            raise type(exc)(f"{upload.name}: {reason}") from None


# ------------------------------------------------------------------ request helpers


def _request_id(request: Request) -> str:
    existing = getattr(request.state, "request_id", None)
    if existing:
        return str(existing)
    given = request.headers.get("x-request-id", "")
    request_id = given if _REQUEST_ID.match(given) else uuid.uuid4().hex
    request.state.request_id = request_id
    return request_id


async def _read_body(request: Request, limit: int) -> bytes:
    too_large = ApiError(
        413,
        "payload_too_large",
        f"the request body is larger than the {limit / 1_000_000:g} MB limit — send fewer or"
        " smaller images, or start the server with a higher --max-upload-mb",
    )
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks: list[bytes] = []
    total = 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


def _replay(body: bytes) -> Callable[[], Any]:
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return receive


def _b64(text: object, where: str) -> bytes:
    if not isinstance(text, str) or not text:
        raise ApiError(422, "invalid_json", f"{where} must be a non-empty base64 string")
    if text.startswith("data:"):
        text = text.partition(",")[2]
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(
            422, "invalid_base64", f"{where} is not valid base64 — encode the file's bytes"
        ) from None


async def _uploads(request: Request, limit: int) -> list[_Upload]:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type not in {"multipart/form-data", "application/json"}:
        raise ApiError(
            415,
            "unsupported_media_type",
            f"content type '{content_type or 'none'}' is not accepted — send multipart/form-data"
            " with a 'file' field, or application/json with base64 'image' or 'images'",
        )
    body = await _read_body(request, limit)
    uploads: list[_Upload] = []
    if content_type == "application/json":
        try:
            payload = json.loads(body)
        except ValueError:
            raise ApiError(422, "invalid_json", "the body is not valid JSON") from None
        if not isinstance(payload, dict):
            raise ApiError(422, "invalid_json", "the JSON body must be an object")
        if "images" in payload:
            if not isinstance(payload["images"], list):
                raise ApiError(422, "invalid_json", "'images' must be a list of base64 strings")
            texts = [(f"images[{i}]", t) for i, t in enumerate(payload["images"])]
        elif "image" in payload:
            texts = [("image", payload["image"])]
        else:
            texts = []
        if len(texts) > MAX_FILES_PER_REQUEST:
            raise ApiError(
                413, "too_many_files", f"at most {MAX_FILES_PER_REQUEST} images per request"
            )
        uploads = [_Upload(name, None, _b64(text, name)) for name, text in texts]
    else:
        replayed = Request(request.scope, receive=_replay(body))
        form = await replayed.form(
            max_files=MAX_FILES_PER_REQUEST, max_fields=16, max_part_size=limit
        )
        try:
            for key in ("file", "files"):
                for item in form.getlist(key):
                    if not isinstance(item, UploadFile):
                        raise ApiError(
                            422, "not_a_file", f"form field '{key}' must be a file upload"
                        )
                    uploads.append(
                        _Upload(item.filename or key, item.content_type, await item.read())
                    )
        finally:
            await form.close()
    if not uploads:
        raise ApiError(
            422,
            "no_image",
            "no image in the request — send multipart/form-data with a 'file' field"
            ' (repeat it for a batch), or JSON {"image": "<base64>"}',
        )
    return uploads


# ------------------------------------------------------------------ the app


def create_app(
    bundle: Bundle,
    settings: ServeSettings,
    log_dir: Path | None = None,
    *,
    decode_threads: int | None = None,
    drift: DriftSettings | None = None,
) -> FastAPI:
    """Build the serving app for one bundle.

    The model loads and warms up in the background once the app starts (``/ready`` answers
    503 until then); shutdown finishes queued work and flushes the prediction log.

    Args:
        bundle: A bundle from :func:`visionops.bundle.load_bundle`.
        settings: Server settings (batching, limits, API key, ...).
        log_dir: Prediction log folder; None means ``<bundle>/../predictions``.
        decode_threads: Threads that decode uploads (None: one per core; 0: on the event
            loop, for measurements only).
        drift: Online drift settings (``drift.window``, ``drift.every``; None: defaults).

    Returns:
        The FastAPI app; ``app.state.serving`` is its :class:`ServingState`.

    Examples:
        >>> bundle = load_bundle(Path("runs/run-001/bundle"))  # doctest: +SKIP
        >>> app = create_app(bundle, ServeSettings())  # doctest: +SKIP
        >>> uvicorn.run(app, port=8000)  # doctest: +SKIP
    """
    state = ServingState(bundle, settings, log_dir, decode_threads, drift)
    max_body = int(settings.max_upload_mb * 1_000_000)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await state.startup()
        try:
            yield
        finally:
            await state.shutdown()

    app = FastAPI(
        title="visionops",
        version=__version__,
        summary=f"{bundle.task} model {bundle.model_version}",
        description=(
            "Predictions from a visionops bundle. `POST /predict` takes one or more images"
            " (multipart `file` fields, or JSON with base64); `GET /` is an upload page."
        ),
        lifespan=lifespan,
        redoc_url=None,
    )
    app.state.serving = state
    app.add_middleware(MetricsMiddleware, metrics=state.metrics)

    def error_response(
        request: Request, status: int, kind: str, message: str, headers: dict[str, str]
    ) -> JSONResponse:
        state.metrics.errors.labels(kind).inc()
        request_id = _request_id(request)
        body = {
            "error": {"status": status, "kind": kind, "message": message},
            "request_id": request_id,
        }
        return JSONResponse(body, status, headers={**headers, "X-Request-ID": request_id})

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(request, exc.status, exc.kind, exc.message, exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kinds = {400: "bad_request", 404: "not_found", 405: "method_not_allowed"}
        return error_response(
            request,
            exc.status_code,
            kinds.get(exc.status_code, f"http_{exc.status_code}"),
            str(exc.detail),
            dict(exc.headers or {}),
        )

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'][1:]) or e['loc'][0]}: {e['msg']}"
            for e in exc.errors()
        )
        return error_response(request, 422, "invalid_parameter", problems, {})

    @app.exception_handler(Exception)
    async def _internal_error(request: Request, exc: Exception) -> JSONResponse:
        request_id = _request_id(request)
        logger.opt(exception=exc).error("request {} failed", request_id)
        return error_response(
            request,
            500,
            "internal",
            f"internal server error — the server log has the details under request id {request_id}",
            {},
        )

    async def require_key(key: _ApiKey, credentials: _Bearer) -> None:
        if settings.api_key is None:
            return
        given = key or (credentials.credentials if credentials else None)
        if given is None or not secrets.compare_digest(
            given.encode("utf-8"), settings.api_key.encode("utf-8")
        ):
            raise ApiError(
                401,
                "unauthorized",
                "missing or wrong API key — send it in the X-API-Key header"
                " (or Authorization: Bearer <key>)",
                {"WWW-Authenticate": "Bearer"},
            )

    @app.get("/health", tags=["operations"], summary="Liveness: the process answers.")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(
        "/ready",
        tags=["operations"],
        summary="Readiness: model loaded and warmed up (503 before, and while stopping).",
        responses={503: {"description": "Not ready; the body says why."}},
    )
    async def ready() -> JSONResponse:
        if state.ready:
            return JSONResponse({"status": "ready", "model_version": bundle.model_version})
        body: dict[str, Any] = {"status": state.status}
        if state.failure:
            body["reason"] = state.failure
        return JSONResponse(body, 503, headers={"Retry-After": "1"})

    @app.get(
        "/metadata",
        tags=["model"],
        summary="Task, labels, input size, version, thresholds and server limits.",
        dependencies=[Depends(require_key)],
        responses={401: _ERRORS[401]},
    )
    async def metadata() -> dict[str, Any]:
        manifest = bundle.manifest
        spec = bundle.input
        return {
            "task": bundle.task,
            "model_version": bundle.model_version,
            "labels": bundle.labels,
            "target_units": manifest.get("target_units"),
            "input": {
                key: spec.get(key) for key in ("size", "channels", "layout", "resize", "dtype")
            },
            **state.postprocess.describe(),
            "metrics": manifest.get("metrics"),
            "training_data_fingerprint": manifest.get("training_data_fingerprint"),
            "created_at": manifest.get("created_at"),
            "versions": manifest.get("versions"),
            "server": {
                "visionops": __version__,
                "ready": state.ready,
                "precision": state.session.precision if state.session else None,
                "max_batch": settings.max_batch,
                "max_wait_ms": settings.max_wait_ms,
                "queue_size": settings.queue_size,
                "timeout_s": settings.timeout_s,
                "max_upload_mb": settings.max_upload_mb,
                "max_files_per_request": MAX_FILES_PER_REQUEST,
                "max_image_pixels": spec.get("max_image_pixels"),
                "auth_required": settings.api_key is not None,
            },
        }

    @app.post(
        "/predict",
        tags=["model"],
        summary="Predict one image, or several as one batch.",
        dependencies=[Depends(require_key)],
        response_model=None,
        responses={200: {"model": PredictResponse}, **_ERRORS},
        openapi_extra=_PREDICT_BODY,
    )
    async def predict(
        request: Request,
        top_k: Annotated[
            int | None, Query(ge=1, le=1000, description="Labels to return (default: server's).")
        ] = None,
        threshold: Annotated[
            float | None,
            Query(ge=0.0, le=1.0e9, description="Multilabel/anomaly threshold override."),
        ] = None,
        heatmap: Annotated[
            bool, Query(description="Anomaly models: return the anomaly map as a PNG.")
        ] = False,
    ) -> JSONResponse:
        started = time.perf_counter()
        request_id = _request_id(request)
        if not state.ready:
            raise ApiError(
                503,
                "not_ready",
                f"the model is {state.status} — retry when GET /ready answers 200",
                {"Retry-After": "1"},
            )
        options = PredictOptions(top_k=top_k, threshold=threshold, heatmap=heatmap)
        problem = state.postprocess.check(options)
        if problem:
            raise ApiError(422, "invalid_parameter", problem)
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[Any]] = []
        try:
            async with asyncio.timeout(settings.timeout_s):
                uploads = await _uploads(request, max_body)
                if state.decode_threads == 0:
                    decoded = [state.decode(upload) for upload in uploads]
                else:
                    decoded = await asyncio.gather(
                        *(loop.run_in_executor(state.decode_pool, state.decode, u) for u in uploads)
                    )
                jobs = [
                    _Job(image, upload, request_id, index, options, started)
                    for index, (image, upload) in enumerate(zip(decoded, uploads, strict=True))
                ]
                submitted = time.perf_counter()
                for job in jobs:
                    job.submitted = submitted
                futures = state.batcher.submit(jobs)
                results = await asyncio.gather(*futures)
        except TimeoutError:
            for future in futures:
                future.cancel()
            raise ApiError(
                504,
                "timeout",
                f"the prediction did not finish within {settings.timeout_s:g} s — the server"
                " is overloaded; retry later or send fewer images per request",
            ) from None
        except QueueFullError:
            raise ApiError(
                503,
                "queue_full",
                f"the server is at capacity ({settings.queue_size} images queued) — retry"
                " after the Retry-After delay",
                {"Retry-After": state.retry_after()},
            ) from None
        except ClientDisconnect:
            # Nobody is left to answer; say so in the metrics instead of logging a traceback.
            raise ApiError(400, "client_disconnected", "the client went away mid-upload") from None
        except StoppedError:
            raise ApiError(
                503,
                "stopping",
                "the server is shutting down — retry on another instance",
                {"Retry-After": "1"},
            ) from None
        except UnsupportedImageError as exc:
            raise ApiError(415, "unsupported_media_type", str(exc)) from None
        except ImageTooLargeError as exc:
            raise ApiError(413, "decompression_bomb", str(exc)) from None
        except ImageError as exc:
            raise ApiError(422, "undecodable_image", str(exc)) from None

        predictions = []
        for upload, result in zip(uploads, results, strict=True):
            answer = result.value
            for label in state.postprocess.task.predicted_labels(answer):
                state.metrics.predictions.labels(label).inc()
            state.metrics.queue_latency.observe(result.queue_s)
            predictions.append({**answer, "file": upload.name})
        body = {
            "request_id": request_id,
            "model_version": bundle.model_version,
            "task": bundle.task,
            "predictions": predictions,
            "timing": {
                "total_ms": round((time.perf_counter() - started) * 1000, 3),
                "queue_ms": round(max(r.queue_s for r in results) * 1000, 3),
                "compute_ms": round(max(r.compute_s for r in results) * 1000, 3),
                "batch_size": max(r.batch_size for r in results),
            },
        }
        return JSONResponse(body, headers={"X-Request-ID": request_id})

    @app.get(
        "/metrics",
        tags=["operations"],
        summary="Prometheus metrics.",
        response_class=Response,
    )
    async def metrics() -> Response:
        return Response(state.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/drift", tags=["ops"], summary="Latest online drift verdict (rolling window).")
    async def drift_status() -> dict[str, Any]:
        if state.drift is None:
            return {"status": "off", "reason": "the bundle has no held-out drift reference"}
        return state.drift.snapshot()

    @app.get("/", include_in_schema=False)
    async def page() -> HTMLResponse:
        return HTMLResponse(UPLOAD_PAGE)

    return app
