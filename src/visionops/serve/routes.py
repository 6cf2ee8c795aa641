"""The HTTP routes of one serving app, on an :class:`~fastapi.APIRouter`.

With several models, each model's routes are also under ``/models/{name}/`` and the
model-level routes take ``?model=NAME`` (the default model without it); the document lists
each model's ``/models/{name}/predict`` with its own task, options and answer.

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
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.routing import APIRoute
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST

from visionops import __version__
from visionops.serve.auth import check_api_key
from visionops.serve.models import ModelSet
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
    404: "No model of that name; the message lists the served models.",
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
async def served_models(request: Request) -> ModelSet:
    """The app's :class:`~visionops.serve.models.ModelSet` (a FastAPI dependency)."""
    models: ModelSet = request.app.state.models
    return models


_Models = Annotated[ModelSet, Depends(served_models)]


async def serving_state(request: Request, models: _Models) -> ServingState:
    """The model a request is for: ``/models/{name}/...``, else ``?model=``, else the default.

    Raises:
        ApiError: 404 for an unknown name, listing the models.
    """
    name = request.path_params.get("name")
    return models.get(name if name is not None else request.query_params.get("model"))


_State = Annotated[ServingState, Depends(serving_state)]


async def _named(
    name: Annotated[str, PathParam(description="The model's name (GET /models lists them).")],
) -> None:
    """Declares ``{name}`` of ``/models/{name}/...`` for the document (read by serving_state)."""


async def require_key(models: _Models, key: _ApiKey, credentials: _Bearer) -> None:
    """Refuse the request (401) unless it carries the server's API key."""
    api_key = models.default.api_key
    check_api_key(api_key, key or (credentials.credentials if credentials else None))


# ------------------------------------------------------------------ operations


async def health() -> HealthResponse:
    """Liveness: the process answers."""
    return HealthResponse()


def _readiness(state: ServingState) -> ReadyResponse:
    if state.ready:
        return ReadyResponse(status="ready", model_version=state.bundle.model_version)
    return ReadyResponse(status=state.status, reason=state.failure)


def _ready_response(body: ReadyResponse, ok: bool) -> JSONResponse:
    if ok:
        return JSONResponse(body.model_dump(exclude_none=True))
    return JSONResponse(body.model_dump(exclude_none=True), 503, headers={"Retry-After": "1"})


async def model_ready(state: _State) -> JSONResponse:
    """One model's readiness: 200 once loaded and warmed up, 503 before and while stopping."""
    return _ready_response(_readiness(state), state.ready)


async def ready(request: Request, models: _Models) -> JSONResponse:
    """Readiness: 200 once every model is loaded and warmed up, 503 before and while stopping.

    ``?model=NAME`` asks about one model.
    """
    name = request.query_params.get("model")
    if models.single or name is not None:
        return await model_ready(models.get(name))
    each = {state.name: _readiness(state) for state in models}
    statuses = {body.status for body in each.values()}
    overall = (
        "ready"
        if statuses == {"ready"}
        else next(status for status in ("failed", "stopping", "loading") if status in statuses)
    )
    return _ready_response(ReadyResponse(status=overall, models=each), models.ready)


async def list_models(models: _Models) -> dict[str, Any]:
    """The served models: name, task, version, status, options and endpoints."""
    return models.describe()


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


async def metrics(models: _Models) -> Response:
    """Prometheus metrics (several models: every model's series labelled ``model``)."""
    return Response(models.render_metrics(), media_type=CONTENT_TYPE_LATEST)


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


def _model_parameter(models: ModelSet) -> dict[str, Any]:
    """The documented ``?model=`` of a model-level route (only with several models)."""
    if models.single:
        return {}
    return {
        "parameters": [
            {
                "name": "model",
                "in": "query",
                "required": False,
                "description": f"The model (default: {models.default.name}); GET /models lists"
                " them.",
                "schema": {"type": "string", "enum": models.names, "default": models.default.name},
            }
        ]
    }


def _predict_route(
    path: str,
    endpoint: PredictEndpoint,
    auth: list[Any],
    auth_errors: dict[int | str, dict[str, Any]],
    *,
    summary: str,
    tags: list[str],
    extra: dict[str, Any],
) -> PlainRoute:
    return PlainRoute(
        path,
        _DECLARATIONS[endpoint.query_model],
        handler=endpoint,
        methods=["POST"],
        response_model=endpoint.state.response_model,
        tags=tags,
        summary=summary,
        description=(
            "The images as multipart `file` fields, one image as the body itself"
            " (`Content-Type: image/jpeg`, `image/png`, ...: the cheapest for both sides),"
            " or JSON with base64. "
            + _heatmap_sentence(endpoint.state.postprocess.describe()["heatmap"])
        ),
        dependencies=auth,
        responses={**auth_errors, **_errors(408, 413, 415, 422, 503, 504)},
        openapi_extra={**_PREDICT_BODY, **extra},
        operation_id=f"predict_{endpoint.state.name}" if path != "/predict" else None,
    )


def build_router(models: ModelSet) -> APIRouter:
    """The routes for the served models, declared as each model takes them.

    Args:
        models: The served models (task, settings, post-processing of each).

    Returns:
        A router with ``/health``, ``/ready``, ``/metadata``, ``/predict``, ``/metrics``,
        ``/drift``, ``/models`` (and each model's ``/models/{name}/...``) and the camera and
        upload page at ``/``.
    """
    router = APIRouter()
    default = models.default
    auth = [Depends(require_key)] if default.settings.api_key is not None else []
    auth_errors = _errors(401) if auth else {}
    choose = _model_parameter(models)
    several = not models.single
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
        summary="Readiness: every model loaded and warmed up (503 before, and while stopping)."
        if several
        else "Readiness: model loaded and warmed up (503 before, and while stopping).",
        responses={503: {"model": ReadyResponse, "description": "Not ready; the body says why."}},
        openapi_extra=choose or None,
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
        openapi_extra=choose or None,
    )
    task = f" ({default.name}: {default.meta.task} by default)" if several else ""
    router.routes.append(
        _predict_route(
            "/predict",
            models.endpoint(None),
            auth,
            auth_errors,
            summary=f"Predict one image, or several as one batch{task}.",
            tags=["model"],
            extra=choose,
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
        openapi_extra=choose or None,
    )
    router.add_api_route(
        "/models",
        list_models,
        methods=["GET"],
        tags=["models"],
        summary="The served models: name, task, version, status, options and endpoints.",
        dependencies=auth,
        responses=auth_errors,
    )
    for name in models.names:
        state = models.get(name)
        router.routes.append(
            _predict_route(
                f"/models/{name}/predict",
                models.endpoint(name),
                auth,
                auth_errors,
                summary=f"Predict with {name} ({state.meta.task}: {state.meta.model_version}).",
                tags=["models"],
                extra={},
            )
        )
    router.add_api_route(
        "/models/{name}/metadata",
        metadata,
        methods=["GET"],
        response_model=MetadataResponse,
        tags=["models"],
        summary="One model's task, labels, input size, version, thresholds and limits.",
        dependencies=[Depends(_named), *auth],
        responses={**auth_errors, **_errors(404)},
    )
    router.add_api_route(
        "/models/{name}/ready",
        model_ready,
        methods=["GET"],
        response_model=ReadyResponse,
        tags=["models"],
        summary="One model's readiness (503 before it is loaded, and while stopping).",
        dependencies=[Depends(_named)],
        responses={503: {"model": ReadyResponse, "description": "Not ready; the body says why."}},
    )
    router.add_api_route(
        "/models/{name}/drift",
        drift_status,
        methods=["GET"],
        tags=["models"],
        summary="One model's latest online drift verdict.",
        dependencies=[Depends(_named)],
        responses=_errors(404),
    )
    router.add_api_route("/", page, methods=["GET"], include_in_schema=False)
    return router
