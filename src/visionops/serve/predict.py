"""``POST /predict``: a plain request-to-response endpoint, and the shortcut to it.

The shortcut is ASGI middleware that hands every ``POST /predict`` to the endpoint before
FastAPI's router sees it.

Request path::

    API key (401) -> query options (422) -> ready? (503) -> body read with a size cap (413;
    408 when it stalls) -> type checks (415) -> decode + resize in a thread pool (422 / 413
    for bombs) -> bounded micro-batch queue (503 + Retry-After when full) -> one ONNX Runtime
    call per batch in the inference thread, which also post-processes and appends to the
    prediction log -> answer; the whole request under a deadline (504).

Why not a FastAPI route: dependency solving, parameter validation and the router's layers
(exception middleware, exit stacks, route matching) ran on the event loop for every request,
about as much CPU as the handler itself (``benchmarks/README.md``, "Serve at the limit").
The checks here are the ones those dependencies made, in the same order and with the same
answers: the key is read as FastAPI's security classes read it (:mod:`~visionops.serve.auth`),
and the options are validated by the same pydantic model that documents them
(:func:`~visionops.serve.schemas.predict_query_model`). The router still has a ``/predict``
route on the same endpoint (:class:`visionops.serve.routes.PlainRoute`): it puts the
operation in the OpenAPI document and answers the methods the shortcut leaves to it (405).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Protocol
from urllib.parse import parse_qsl

import pydantic
import pydantic_core
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from visionops.errors import ImageError
from visionops.inference.session import ImageTooLargeError, PredictOptions, UnsupportedImageError
from visionops.serve.auth import check_api_key, presented_key
from visionops.serve.batcher import QueueFullError, StoppedError
from visionops.serve.http_errors import ApiError, api_error_response, request_id
from visionops.serve.metrics import HttpMetrics
from visionops.serve.schemas import PredictQuery, predict_query_model
from visionops.serve.state import Job, ServingState
from visionops.serve.uploads import read_uploads

__all__ = [
    "OPTION_PROBES",
    "EndpointRouter",
    "PredictEndpoint",
    "PredictShortcut",
    "model_in_query",
    "takes_options",
]

OPTION_PROBES = {
    "threshold": PredictOptions(threshold=0.5),
    "heatmap": PredictOptions(heatmap=True),
}
"""One request per option that only some tasks take; a task takes the option when it
accepts the probe."""
# How pydantic (and so FastAPI) reads a boolean query parameter as false.
_FALSE = frozenset({"0", "off", "f", "false", "n", "no"})


def takes_options(state: ServingState) -> tuple[bool, bool]:
    """Whether the served task takes ``threshold`` and ``heatmap``."""
    check = state.postprocess.check
    return (check(OPTION_PROBES["threshold"]) is None, check(OPTION_PROBES["heatmap"]) is None)


class PredictEndpoint:
    """The ``/predict`` endpoint of one app: ``await endpoint(request)`` gives the response.

    Args:
        state: The app's serving state (session, batcher, settings, metrics).
    """

    def __init__(self, state: ServingState) -> None:
        self.state = state
        self.query_model: type[PredictQuery] = predict_query_model(*takes_options(state))

    def options(self, request: Request) -> PredictOptions:
        """The request's query options, validated as documented (422 names what is wrong)."""
        if not request.scope.get("query_string"):
            return PredictOptions()
        try:
            # The last value of a repeated name wins, as in FastAPI. ``model`` chose this
            # endpoint (several models in one server); it is not an option of the model.
            params = dict(request.query_params)
            params.pop("model", None)
            query = self.query_model.model_validate(params)
        except pydantic.ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}"
                for error in exc.errors(include_url=False)
            )
            raise ApiError(422, "invalid_parameter", problems) from None
        return PredictOptions(**query.model_dump())

    def _refuse_options_the_task_ignores(self, request: Request) -> None:
        for name, probe in OPTION_PROBES.items():
            value = request.query_params.get(name)
            if value is None or (name == "heatmap" and value.lower() in _FALSE):
                continue
            problem = self.state.postprocess.check(probe)
            if problem:
                raise ApiError(422, "invalid_parameter", problem)

    async def __call__(self, request: Request) -> Response:
        """Answer one ``POST /predict``.

        Raises:
            ApiError: Every refusal (the app's handler answers it as JSON).
        """
        state = self.state
        started = time.perf_counter()
        chosen_id = request_id(request)
        check_api_key(state.api_key, presented_key(request.headers))
        options = self.options(request)
        if not state.ready:
            raise ApiError(
                503,
                "not_ready",
                f"the model is {state.status} — retry when GET /ready answers 200",
                {"Retry-After": "1"},
            )
        self._refuse_options_the_task_ignores(request)
        problem = state.postprocess.check(options)
        if problem:
            raise ApiError(422, "invalid_parameter", problem)
        uploads, results = await self._predict(request, options, chosen_id, started)
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

    async def _predict(
        self, request: Request, options: PredictOptions, chosen_id: str, started: float
    ) -> tuple[list[Any], list[Any]]:
        state = self.state
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
        return uploads, results


def model_in_query(scope: Scope) -> str | None:
    """The ``model`` query parameter of an ASGI request (the last one wins), if any."""
    query: bytes = scope.get("query_string") or b""
    if b"model=" not in query:
        return None
    found = None
    for key, value in parse_qsl(query.decode("latin-1")):
        if key == "model":
            found = value
    return found


class EndpointRouter(Protocol):
    """The served models' ``/predict`` endpoints by name (a ``ModelSet``)."""

    server_metrics: HttpMetrics

    def endpoint(self, name: str | None) -> PredictEndpoint:
        """The endpoint of the model called ``name`` (None: the default); 404 if unknown."""
        ...


_MODELS_PREFIX = "/models/"
_PREDICT_SUFFIX = "/predict"


def predict_target(scope: Scope) -> tuple[bool, str | None]:
    """Whether a request is a ``POST`` for a model's ``/predict``, and the model it names.

    ``POST /predict`` names the model in ``?model=`` (None: the default);
    ``POST /models/{name}/predict`` in its path.
    """
    if scope["type"] != "http" or scope["method"] != "POST":
        return False, None
    path: str = scope["path"]
    if path == "/predict":
        return True, model_in_query(scope)
    if path.startswith(_MODELS_PREFIX) and path.endswith(_PREDICT_SUFFIX):
        name = path[len(_MODELS_PREFIX) : -len(_PREDICT_SUFFIX)]
        if name and "/" not in name:
            return True, name
    return False, None


class PredictShortcut:
    """ASGI middleware: ``POST /predict`` straight to its endpoint, past FastAPI's router.

    Installed innermost of the app's own middleware, so the metrics and the internal-error
    middleware still wrap it; an :class:`ApiError` is answered here in the one error shape.
    ``POST /models/{name}/predict`` and ``POST /predict?model=NAME`` go to that model's
    endpoint (an unknown name is a 404 listing the models). Every other request goes on to
    FastAPI.

    Args:
        app: The rest of the app.
        router: The served models' endpoints.
    """

    def __init__(self, app: ASGIApp, router: EndpointRouter) -> None:
        self.app = app
        self.router = router

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one ASGI call."""
        wanted, name = predict_target(scope)
        if not wanted:
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive, send)
        metrics = self.router.server_metrics
        try:
            endpoint = self.router.endpoint(name)
            metrics = endpoint.state.metrics
            response = await endpoint(request)
        except ApiError as exc:
            response = api_error_response(metrics, request, exc)
        await response(scope, receive, send)
