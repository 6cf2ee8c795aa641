"""The API key check: ``X-API-Key`` or ``Authorization: Bearer``, compared in constant time.

One check for every protected endpoint: FastAPI's security dependencies (which also put the
schemes in the OpenAPI document) pass it what they read, and ``/predict``'s plain endpoint
reads the same two headers the same way with :func:`presented_key`.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping

from fastapi.security.utils import get_authorization_scheme_param

from visionops.serve.http_errors import ApiError

__all__ = ["check_api_key", "presented_key"]


def presented_key(headers: Mapping[str, str]) -> str | None:
    """The key a request presents: a non-empty ``X-API-Key``, else a ``Bearer`` token.

    Reads the headers exactly as ``APIKeyHeader`` and ``HTTPBearer`` (``auto_error=False``)
    do, so every endpoint accepts the same requests.
    """
    key = headers.get("x-api-key")
    if key:
        return key
    authorization = headers.get("authorization")
    scheme, credentials = get_authorization_scheme_param(authorization)
    if authorization and credentials and scheme.lower() == "bearer":
        return credentials
    return None


def check_api_key(expected: str | None, given: str | None) -> None:
    """Refuse the request (401) unless ``given`` is the server's key (None: no key needed).

    Raises:
        ApiError: 401 with ``WWW-Authenticate: Bearer``.
    """
    if expected is None:
        return
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
