"""The HTTP routes of one serving app, on an :class:`~fastapi.APIRouter`.

Request path of ``POST /predict``::

    body read with a size cap (413; 408 when it stalls) -> type checks (415) -> decode +
    resize in a thread pool (422 / 413 for bombs) -> bounded micro-batch queue (503 +
    Retry-After when full) -> one ONNX Runtime call per batch in the inference thread, which
    also post-processes and appends to the prediction log -> answer; the whole request under
    a deadline (504).

:func:`build_router` declares what the served model takes: the API key only when the server
has one, ``threshold`` and ``heatmap`` only for tasks that use them, and the task's own
response model, so ``/openapi.json`` describes exactly this server.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import pydantic_core
from fastapi import APIRouter, Depends, Query, Request, Security
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.requests import ClientDisconnect

from visionops import __version__
from visionops.errors import ImageError
from visionops.inference.session import ImageTooLargeError, PredictOptions, UnsupportedImageError
from visionops.serve.batcher import QueueFullError, StoppedError
from visionops.serve.http_errors import ApiError, request_id
from visionops.serve.page import UPLOAD_PAGE
from visionops.serve.schemas import (
    ErrorResponse,
    HealthResponse,
    InputSpec,
    MetadataResponse,
    PredictJSON,
    ReadyResponse,
    ServerInfo,
)
from visionops.serve.state import Job, ServingState
from visionops.serve.uploads import MAX_FILES_PER_REQUEST, read_uploads

__all__ = ["build_router"]

_ApiKey = Annotated[str | None, Security(APIKeyHeader(name="X-API-Key", auto_error=False))]
_Bearer = Annotated[HTTPAuthorizationCredentials | None, Security(HTTPBearer(auto_error=False))]
_TopK = Annotated[
    int | None, Query(ge=1, le=1000, description="Labels to return (default: the server's).")
]
_Threshold = Annotated[
    float | None,
    Query(ge=0.0, le=1.0e9, description="One threshold for every label, or the anomaly score's."),
]
_Heatmap = Annotated[bool, Query(description="Return the anomaly map as a PNG.")]
# How FastAPI reads a boolean query parameter as false.
_FALSE = frozenset({"0", "off", "f", "false", "n", "no"})

_ERRORS: dict[int, str] = {
    401: "Missing or wrong API key.",
    408: "The request body did not arrive in full within the server's deadline.",
    413: "Body too large, or an image with too many pixels (decompression bomb).",
    415: "Not multipart or JSON, or a file that is not an image.",
    422: "An image that cannot be decoded (the message says why), or bad parameters.",
    503: "Model not ready, queue full or shutting down; see Retry-After.",
    504: "The request did not finish within the server's deadline.",
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
                            "maxItems": MAX_FILES_PER_REQUEST,
                        }
                    },
                    "required": ["file"],
                }
            },
            "application/json": {"schema": PredictJSON.model_json_schema()},
        },
    }
}


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {code: {"model": ErrorResponse, "description": _ERRORS[code]} for code in codes}


# Dependencies are ``async def``: FastAPI runs a plain ``def`` dependency in a worker thread,
# a thread hop per request for a dictionary lookup (seen in the profile).
async def serving_state(request: Request) -> ServingState:
    """The app's :class:`ServingState` (a FastAPI dependency)."""
    state: ServingState = request.app.state.serving
    return state


_State = Annotated[ServingState, Depends(serving_state)]


async def require_key(state: _State, key: _ApiKey, credentials: _Bearer) -> None:
    """Refuse the request (401) unless it carries the server's API key."""
    expected = state.api_key
    if expected is None:
        return
    given = key or (credentials.credentials if credentials else None)
    if given is None or not secrets.compare_digest(
        given.encode("utf-8", "surrogateescape"), expected.encode("utf-8")
    ):
        raise ApiError(
            401,
            "unauthorized",
            "missing or wrong API key — send it in the X-API-Key header"
            " (or Authorization: Bearer <key>)",
            {"WWW-Authenticate": "Bearer"},
        )


# ------------------------------------------------------------------ operations


async def health() -> HealthResponse:
    """Liveness: the process answers."""
    return HealthResponse()


async def ready(state: _State) -> JSONResponse:
    """Readiness: 200 once the model is loaded and warmed up, 503 before and while stopping."""
    if state.ready:
        body = ReadyResponse(status="ready", model_version=state.bundle.model_version)
        return JSONResponse(body.model_dump(exclude_none=True))
    body = ReadyResponse(status=state.status, reason=state.failure)
    return JSONResponse(body.model_dump(exclude_none=True), 503, headers={"Retry-After": "1"})


async def metadata(state: _State) -> MetadataResponse:
    """Task, labels, input size, version, thresholds and server limits."""
    meta, settings, session = state.meta, state.settings, state.session
    spec = meta.input
    return MetadataResponse(
        task=meta.task,
        model_version=meta.model_version,
        labels=state.bundle.labels,
        target_units=meta.target_units,
        input=InputSpec(
            size=spec.size,
            channels=spec.channels,
            layout=spec.layout,
            resize=spec.resize,
            dtype=spec.dtype,
        ),
        **state.postprocess.describe(),
        metrics=meta.metrics,
        training_data_fingerprint=meta.training_data_fingerprint,
        created_at=meta.created_at,
        versions=meta.versions,
        server=ServerInfo(
            visionops=__version__,
            ready=state.ready,
            precision=session.precision if session else None,
            execution_providers=state.providers,
            max_batch=settings.max_batch,
            max_wait_ms=settings.max_wait_ms,
            queue_size=settings.queue_size,
            timeout_s=settings.timeout_s,
            max_upload_mb=settings.max_upload_mb,
            max_files_per_request=MAX_FILES_PER_REQUEST,
            max_image_pixels=spec.max_image_pixels,
            auth_required=settings.api_key is not None,
        ),
    )


async def metrics(state: _State) -> Response:
    """Prometheus metrics."""
    return Response(state.metrics.render(), media_type=CONTENT_TYPE_LATEST)


async def drift_status(state: _State) -> dict[str, Any]:
    """The latest online drift verdict on the rolling window."""
    if state.drift is None:
        return {"status": "off", "reason": state.drift_off_reason}
    return state.drift.snapshot()


async def page() -> HTMLResponse:
    """The upload page."""
    return HTMLResponse(UPLOAD_PAGE)


# ------------------------------------------------------------------ predict


async def _options_top_k(top_k: _TopK = None) -> PredictOptions:
    return PredictOptions(top_k=top_k)


async def _options_threshold(top_k: _TopK = None, threshold: _Threshold = None) -> PredictOptions:
    return PredictOptions(top_k=top_k, threshold=threshold)


async def _options_heatmap(top_k: _TopK = None, heatmap: _Heatmap = False) -> PredictOptions:
    return PredictOptions(top_k=top_k, heatmap=heatmap)


async def _options_all(
    top_k: _TopK = None, threshold: _Threshold = None, heatmap: _Heatmap = False
) -> PredictOptions:
    return PredictOptions(top_k=top_k, threshold=threshold, heatmap=heatmap)


_OPTION_PARSERS: dict[tuple[bool, bool], Callable[..., Awaitable[PredictOptions]]] = {
    (False, False): _options_top_k,
    (True, False): _options_threshold,
    (False, True): _options_heatmap,
    (True, True): _options_all,
}
_PROBES = {"threshold": PredictOptions(threshold=0.5), "heatmap": PredictOptions(heatmap=True)}


def _refuse_options_the_task_ignores(state: ServingState, request: Request) -> None:
    for name, probe in _PROBES.items():
        value = request.query_params.get(name)
        if value is None or (name == "heatmap" and value.lower() in _FALSE):
            continue
        problem = state.postprocess.check(probe)
        if problem:
            raise ApiError(422, "invalid_parameter", problem)


async def _predict(state: ServingState, request: Request, options: PredictOptions) -> Response:
    started = time.perf_counter()
    chosen_id = request_id(request)
    if not state.ready:
        raise ApiError(
            503,
            "not_ready",
            f"the model is {state.status} — retry when GET /ready answers 200",
            {"Retry-After": "1"},
        )
    _refuse_options_the_task_ignores(state, request)
    problem = state.postprocess.check(options)
    if problem:
        raise ApiError(422, "invalid_parameter", problem)
    settings = state.settings
    loop = asyncio.get_running_loop()
    futures: list[asyncio.Future[Any]] = []
    reading = True
    try:
        async with asyncio.timeout(settings.timeout_s):
            uploads = await read_uploads(request, int(settings.max_upload_mb * 1_000_000))
            reading = False
            if state.decode_threads == 0:
                decoded = [state.decode(upload) for upload in uploads]
            else:
                decoded = await asyncio.gather(
                    *(loop.run_in_executor(state.decode_pool, state.decode, u) for u in uploads)
                )
            jobs = [
                Job(image, upload, chosen_id, index, options, started)
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
        if reading:
            raise ApiError(
                408,
                "request_body_incomplete",
                f"the request body did not arrive within {settings.timeout_s:g} s — the"
                " request body is incomplete; send the whole body without pausing",
            ) from None
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
            state.metrics.count_prediction(label)
        state.metrics.queue_latency.observe(result.queue_s)
        predictions.append({**answer, "file": upload.name})
    # Encoded by pydantic-core without a second validation pass (7x faster than json.dumps
    # through JSONResponse); that it matches the declared response model is what the tests
    # check against real answers. NaN and infinity become null, as the models say.
    body = pydantic_core.to_json(
        {
            "request_id": chosen_id,
            "model_version": state.meta.model_version,
            "task": state.meta.task,
            "predictions": predictions,
            "timing": {
                "total_ms": round((time.perf_counter() - started) * 1000, 3),
                "queue_ms": round(max(r.queue_s for r in results) * 1000, 3),
                "compute_ms": round(max(r.compute_s for r in results) * 1000, 3),
                "batch_size": max(r.batch_size for r in results),
            },
        }
    )
    return Response(body, media_type="application/json", headers={"X-Request-ID": chosen_id})


def _predict_endpoint(
    parse_options: Callable[..., Awaitable[PredictOptions]],
) -> Callable[..., Awaitable[Response]]:
    async def predict(
        request: Request,
        state: _State,
        # A default, not Annotated: the dependency is chosen per app, and FastAPI resolves
        # string annotations from module globals only.
        options: PredictOptions = Depends(parse_options),  # noqa: B008
    ) -> Response:
        return await _predict(state, request, options)

    return predict


# ------------------------------------------------------------------ the router


def build_router(state: ServingState) -> APIRouter:
    """The routes for ``state``'s model, declared as that model takes them.

    Args:
        state: The app's serving state (task, settings, post-processing).

    Returns:
        A router with ``/health``, ``/ready``, ``/metadata``, ``/predict``, ``/metrics`` and
        the upload page at ``/``.
    """
    router = APIRouter()
    auth = [Depends(require_key)] if state.settings.api_key is not None else []
    auth_errors = _errors(401) if auth else {}
    takes = tuple(state.postprocess.check(_PROBES[name]) is None for name in _PROBES)
    router.add_api_route(
        "/health",
        health,
        methods=["GET"],
        response_model=HealthResponse,
        tags=["operations"],
        summary="Liveness: the process answers.",
    )
    router.add_api_route(
        "/ready",
        ready,
        methods=["GET"],
        response_model=ReadyResponse,
        tags=["operations"],
        summary="Readiness: model loaded and warmed up (503 before, and while stopping).",
        responses={503: {"model": ReadyResponse, "description": "Not ready; the body says why."}},
    )
    router.add_api_route(
        "/metadata",
        metadata,
        methods=["GET"],
        response_model=MetadataResponse,
        tags=["model"],
        summary="Task, labels, input size, version, thresholds and server limits.",
        dependencies=auth,
        responses=auth_errors,
    )
    router.add_api_route(
        "/predict",
        _predict_endpoint(_OPTION_PARSERS[(takes[0], takes[1])]),
        methods=["POST"],
        response_model=state.response_model,
        tags=["model"],
        summary="Predict one image, or several as one batch.",
        dependencies=auth,
        responses={**auth_errors, **_errors(408, 413, 415, 422, 503, 504)},
        openapi_extra=_PREDICT_BODY,
    )
    router.add_api_route(
        "/metrics",
        metrics,
        methods=["GET"],
        response_class=Response,
        tags=["operations"],
        summary="Prometheus metrics.",
        responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Metrics."}},
    )
    router.add_api_route(
        "/drift",
        drift_status,
        methods=["GET"],
        tags=["operations"],
        summary="Latest online drift verdict (rolling window of recent predictions).",
    )
    router.add_api_route("/", page, methods=["GET"], include_in_schema=False)
    return router
