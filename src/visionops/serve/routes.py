"""The HTTP routes of one serving app, on an :class:`~fastapi.APIRouter`.

:func:`build_router` declares what the served model takes: the API key only when the server
has one, ``threshold`` and ``heatmap`` only for tasks that use them, and the task's own
response model, so ``/openapi.json`` describes exactly this server. ``POST /predict`` is
answered by :class:`~visionops.serve.predict.PredictEndpoint` (a plain request-to-response
function, the hot path) on a :class:`PlainRoute`, which FastAPI documents like any other.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Security
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.routing import APIRoute
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST

from visionops import __version__
from visionops.serve.auth import check_api_key
from visionops.serve.page import UPLOAD_PAGE
from visionops.serve.predict import PredictEndpoint
from visionops.serve.schemas import (
    ErrorResponse,
    HealthResponse,
    InputSpec,
    MetadataResponse,
    PredictJSON,
    PredictQuery,
    PredictQueryAll,
    PredictQueryHeatmap,
    PredictQueryThreshold,
    ReadyResponse,
    ServerInfo,
)
from visionops.serve.state import ServingState
from visionops.serve.uploads import MAX_FILES_PER_REQUEST

__all__ = ["PlainRoute", "build_router"]

_ApiKey = Annotated[str | None, Security(APIKeyHeader(name="X-API-Key", auto_error=False))]
_Bearer = Annotated[HTTPAuthorizationCredentials | None, Security(HTTPBearer(auto_error=False))]

_ERRORS: dict[int, str] = {
    401: "Missing or wrong API key.",
    408: "The request body did not arrive in full within the server's deadline.",
    413: "Body too large, or an image with too many pixels (decompression bomb).",
    415: "Not multipart, an image or JSON, or a file that is not an image.",
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
            "image/*": {
                "schema": {"type": "string", "format": "binary"},
                "example": "(the bytes of one image file: JPEG, PNG, WebP, ...)",
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
    check_api_key(state.api_key, key or (credentials.credentials if credentials else None))


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
    """The camera and upload page."""
    return HTMLResponse(UPLOAD_PAGE)


# ------------------------------------------------------------------ predict
# ``PredictEndpoint`` answers /predict without FastAPI's dependency machinery; FastAPI still
# documents it, from one of these declarations: the same query model that validates the
# options, and the security schemes when the server has a key. Never called.


async def _declare_top_k(query: Annotated[PredictQuery, Query()]) -> None:
    """Predict one image, or several as one batch."""


async def _declare_threshold(query: Annotated[PredictQueryThreshold, Query()]) -> None:
    """Predict one image, or several as one batch."""


async def _declare_heatmap(query: Annotated[PredictQueryHeatmap, Query()]) -> None:
    """Predict one image, or several as one batch."""


async def _declare_all(query: Annotated[PredictQueryAll, Query()]) -> None:
    """Predict one image, or several as one batch."""


_DECLARATIONS: dict[type[PredictQuery], Callable[..., Awaitable[None]]] = {
    PredictQuery: _declare_top_k,
    PredictQueryThreshold: _declare_threshold,
    PredictQueryHeatmap: _declare_heatmap,
    PredictQueryAll: _declare_all,
}


class PlainRoute(APIRoute):
    """A route FastAPI documents from its declared endpoint but serves with ``handler``.

    ``handler`` takes the :class:`~starlette.requests.Request` and returns the response, as
    a Starlette route's endpoint does: no dependencies solved, no parameters validated, no
    response model applied on the way (the handler does what it needs itself).
    """

    def __init__(
        self,
        path: str,
        endpoint: Callable[..., Any],
        *,
        handler: Callable[[Request], Awaitable[Response]],
        **kwargs: Any,
    ) -> None:
        self.handler = handler
        super().__init__(path, endpoint, **kwargs)

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        """The plain handler, in place of FastAPI's dependency-solving one."""
        handler = self.handler

        async def handle(request: Request) -> Response:
            return await handler(request)

        return handle


# ------------------------------------------------------------------ the router


def _heatmap_sentence(support: dict[str, Any]) -> str:
    """What ``heatmap=true`` gives with this model, or why the option is not offered."""
    if support["available"]:
        return f"`heatmap=true` adds {support['detail']} as PNGs."
    return f"No `heatmap` option: {support['detail']}."


def build_router(state: ServingState, predict: PredictEndpoint) -> APIRouter:
    """The routes for ``state``'s model, declared as that model takes them.

    Args:
        state: The app's serving state (task, settings, post-processing).
        predict: The ``/predict`` endpoint (the app also puts it in front of the router).

    Returns:
        A router with ``/health``, ``/ready``, ``/metadata``, ``/predict``, ``/metrics`` and
        the camera and upload page at ``/``.
    """
    router = APIRouter()
    auth = [Depends(require_key)] if state.settings.api_key is not None else []
    auth_errors = _errors(401) if auth else {}
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
    router.routes.append(
        PlainRoute(
            "/predict",
            _DECLARATIONS[predict.query_model],
            handler=predict,
            methods=["POST"],
            response_model=state.response_model,
            tags=["model"],
            summary="Predict one image, or several as one batch.",
            description=(
                "The images as multipart `file` fields, one image as the body itself"
                " (`Content-Type: image/jpeg`, `image/png`, ...: the cheapest for both sides),"
                " or JSON with base64. "
                + _heatmap_sentence(state.postprocess.describe()["heatmap"])
            ),
            dependencies=auth,
            responses={**auth_errors, **_errors(408, 413, 415, 422, 503, 504)},
            openapi_extra=_PREDICT_BODY,
        )
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
