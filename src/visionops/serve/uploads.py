"""Read a ``/predict`` body into uploads: size cap, multipart, a raw image or base64 JSON.

The body is read in full (counting bytes, so a body without ``Content-Length`` is capped too)
before it is parsed. A raw image body (``Content-Type: image/jpeg`` etc.) is the cheapest for
both sides: nothing to encode or parse around the file. JSON is parsed by pydantic-core, whose
nesting limit turns a deeply nested document into a 422 instead of a ``RecursionError``.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pydantic_core
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import Message

from visionops.serve.http_errors import ApiError

__all__ = ["IMAGE_TYPES", "MAX_FILES_PER_REQUEST", "RAW_UPLOAD_NAME", "Upload", "read_uploads"]

MAX_FILES_PER_REQUEST = 64
IMAGE_TYPES = ("image/", "application/octet-stream")
"""Declared types taken as an image (the bytes are checked when decoded): a raw body's
``Content-Type`` or a multipart part's."""
RAW_UPLOAD_NAME = "image"
"""The ``file`` a raw body's prediction is reported under (the body carries no name)."""
_ACCEPTED = (
    "send multipart/form-data with a 'file' field, the image itself as the body"
    " (Content-Type: image/jpeg, image/png, ...), or application/json with base64 'image' or"
    " 'images'"
)


@dataclass(frozen=True)
class Upload:
    """One uploaded file.

    Attributes:
        name: The file name the client gave (or its place in the JSON body).
        content_type: The part's declared type (None for JSON uploads).
        data: The file's bytes.
    """

    name: str
    content_type: str | None
    data: bytes


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, refused with 413 as soon as it passes ``limit`` bytes."""
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


def _json_uploads(body: bytes) -> list[Upload]:
    try:
        payload = pydantic_core.from_json(body)
    except ValueError as exc:
        reason = str(exc).split(" at line")[0]
        raise ApiError(422, "invalid_json", f"the body is not valid JSON ({reason})") from None
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
        raise ApiError(413, "too_many_files", f"at most {MAX_FILES_PER_REQUEST} images per request")
    return [Upload(name, None, _b64(text, name)) for name, text in texts]


async def _multipart_uploads(request: Request, body: bytes, limit: int) -> list[Upload]:
    replayed = Request(request.scope, receive=_replay(body))
    try:
        form = await replayed.form(
            max_files=MAX_FILES_PER_REQUEST, max_fields=16, max_part_size=limit
        )
    except HTTPException as exc:  # Starlette's answer to a body it cannot parse
        raise ApiError(
            400,
            "invalid_multipart",
            f"the multipart body cannot be read ({exc.detail}) — send multipart/form-data"
            f" with one 'file' field per image (at most {MAX_FILES_PER_REQUEST}), or the image"
            " itself as the body",
        ) from None
    uploads: list[Upload] = []
    try:
        for key in ("file", "files"):
            for item in form.getlist(key):
                if not isinstance(item, UploadFile):
                    raise ApiError(422, "not_a_file", f"form field '{key}' must be a file upload")
                uploads.append(Upload(item.filename or key, item.content_type, await item.read()))
    finally:
        await form.close()
    return uploads


async def read_uploads(request: Request, limit: int) -> list[Upload]:
    """The images of a ``/predict`` request: multipart ``file`` fields, a raw body, or JSON.

    Args:
        request: The request.
        limit: Largest body in bytes.

    Returns:
        The uploads, in the order the client sent them.

    Raises:
        ApiError: 415 (not multipart, an image or JSON), 413 (body too large, too many
            files), 422 (bad JSON, bad base64, no image).
        ClientDisconnect: The client went away mid-body.
    """
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    raw = content_type.startswith(IMAGE_TYPES)
    if not raw and content_type not in {"multipart/form-data", "application/json"}:
        raise ApiError(
            415,
            "unsupported_media_type",
            f"content type '{content_type or 'none'}' is not accepted — {_ACCEPTED}",
        )
    body = await read_body(request, limit)
    if raw:
        uploads = [Upload(RAW_UPLOAD_NAME, content_type, body)] if body else []
    elif content_type == "application/json":
        uploads = _json_uploads(body)
    else:
        uploads = await _multipart_uploads(request, body, limit)
    if not uploads:
        raise ApiError(
            422,
            "no_image",
            "no image in the request — send multipart/form-data with a 'file' field"
            " (repeat it for a batch), the image itself as the body, or JSON"
            ' {"image": "<base64>"}',
        )
    return uploads
