"""Errors as the client sees them: one JSON shape, a metric per cause, never a traceback.

Expected refusals raise :class:`ApiError`. Anything unexpected is caught by
:class:`InternalErrorMiddleware` *inside* Starlette's own error middleware, so it is answered
with a 500 and logged once — without variable values and with every secret the server holds
scrubbed — instead of being re-raised to uvicorn, which would log it again and drop the
keep-alive connection.
"""

from __future__ import annotations

import re
import traceback
import uuid
from collections.abc import Iterable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from loguru import logger
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from visionops.serve.metrics import HttpMetrics
from visionops.serve.schemas import ErrorBody, ErrorResponse

__all__ = [
    "ApiError",
    "InternalErrorMiddleware",
    "SecretScrubber",
    "api_error_response",
    "install_error_handlers",
    "request_id",
]

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


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


class SecretScrubber:
    """Replace every secret the server holds with ``***`` in text bound for a log.

    Args:
        secrets: The secrets (empty strings are ignored).
    """

    def __init__(self, secrets: Iterable[str | None]) -> None:
        self._secrets = sorted({s for s in secrets if s}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        """``text`` with every secret replaced."""
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def format_exception(self, exc: BaseException) -> str:
        """The exception's traceback as text: no variable values, secrets scrubbed."""
        return self("".join(traceback.format_exception(exc)).rstrip())


def request_id(request: Request) -> str:
    """The request's id: the client's ``X-Request-ID`` when it is sane, else a new one."""
    existing = getattr(request.state, "request_id", None)
    if existing:
        return str(existing)
    given = request.headers.get("x-request-id", "")
    chosen = given if _REQUEST_ID.match(given) else uuid.uuid4().hex
    request.state.request_id = chosen
    return chosen


def _error_response(
    metrics: HttpMetrics,
    chosen_id: str,
    status: int,
    kind: str,
    message: str,
    headers: dict[str, str],
) -> JSONResponse:
    metrics.errors.labels(kind).inc()
    body = ErrorResponse(
        error=ErrorBody(status=status, kind=kind, message=message), request_id=chosen_id
    )
    return JSONResponse(
        body.model_dump(mode="json"), status, headers={**headers, "X-Request-ID": chosen_id}
    )


def api_error_response(metrics: HttpMetrics, request: Request, exc: ApiError) -> JSONResponse:
    """The answer to ``exc``, counted under its kind in ``visionops_errors_total``."""
    return _error_response(
        metrics, request_id(request), exc.status, exc.kind, exc.message, exc.headers
    )


def install_error_handlers(app: FastAPI, metrics: HttpMetrics) -> None:
    """Answer ApiError, HTTP errors (404, 405) and bad parameters in the error shape."""

    def respond(
        request: Request, status: int, kind: str, message: str, headers: dict[str, str]
    ) -> JSONResponse:
        return _error_response(metrics, request_id(request), status, kind, message, headers)

    async def api_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ApiError)
        return api_error_response(metrics, request, exc)

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        kinds = {400: "bad_request", 404: "not_found", 405: "method_not_allowed"}
        kind = kinds.get(exc.status_code, f"http_{exc.status_code}")
        return respond(request, exc.status_code, kind, str(exc.detail), dict(exc.headers or {}))

    async def validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'][1:]) or e['loc'][0]}: {e['msg']}"
            for e in exc.errors()
        )
        return respond(request, 422, "invalid_parameter", problems, {})

    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)


class InternalErrorMiddleware:
    """Turn an unexpected exception into a logged, scrubbed 500 (pure ASGI).

    Args:
        app: The wrapped ASGI app.
        metrics: Where the ``internal`` error is counted.
        scrub: Removes secrets from the logged traceback.
    """

    def __init__(self, app: ASGIApp, metrics: HttpMetrics, scrub: SecretScrubber) -> None:
        self.app = app
        self.metrics = metrics
        self.scrub = scrub

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one ASGI call."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_wrapper(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        except Exception as exc:
            chosen_id = request_id(Request(scope))
            logger.error("request {} failed: {}", chosen_id, self.scrub.format_exception(exc))
            if started:  # too late for an error body; the client sees the connection end
                return
            response = _error_response(
                self.metrics,
                chosen_id,
                500,
                "internal",
                "internal server error — the server log has the details under request id"
                f" {chosen_id}",
                {},
            )
            await response(scope, receive, send)
