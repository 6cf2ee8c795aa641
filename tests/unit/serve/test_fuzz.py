"""Fuzz the server from its own OpenAPI document: no 5xx but a deliberate 503 or 504.

Neither schemathesis nor hypothesis is installed, so the requests come from a seeded
generator that reads ``/openapi.json`` — every declared path, method and query parameter,
the declared bodies (multipart and JSON) — and mixes valid values with boundary values,
wrong types, broken encodings, hostile headers and undeclared paths. ``VISIONOPS_FUZZ_CASES``
sets the number of requests per served model (default 150); ``VISIONOPS_FUZZ_SEED`` the seed.
"""

from __future__ import annotations

import base64
import json
import os
import random
import string
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from serve_helpers import colour_image, png_bomb, serving

CASES = int(os.environ.get("VISIONOPS_FUZZ_CASES", "150"))
SEED = int(os.environ.get("VISIONOPS_FUZZ_SEED", "20261201"))
ALLOWED_5XX = {503, 504}


@dataclass
class Case:
    method: str
    path: str
    params: list[tuple[str, str]] = field(default_factory=list)
    headers: dict[str, str | bytes] = field(default_factory=dict)
    content: bytes | None = None


def _text(rng: random.Random, limit: int = 40) -> str:
    alphabet = string.printable + "äß€\u202e\x00\ud7ff"
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, limit)))


def _number(rng: random.Random, schema: dict[str, Any]) -> str:
    low, high = schema.get("minimum", -(10**6)), schema.get("maximum", 10**6)
    choices = [
        str(low),
        str(high),
        str(low - 1),
        str(high + 1),
        str(rng.uniform(low, high)),
        "nan",
        "inf",
        "-inf",
        "1e400",
        "-0",
        "0x10",
        "",
        "9" * 400,
        _text(rng, 8),
    ]
    if schema.get("type") == "integer":
        choices.append(str(rng.randint(int(low), int(min(high, 10**6)))))
    return rng.choice(choices)


def _value(rng: random.Random, schema: dict[str, Any]) -> str:
    options = schema.get("anyOf", [schema])
    chosen = rng.choice(options)
    kind = chosen.get("type")
    if kind in {"integer", "number"}:
        return _number(rng, chosen)
    if kind == "boolean":
        return rng.choice(["true", "false", "1", "0", "yes", "off", "maybe", ""])
    return _text(rng)


def _image(rng: random.Random) -> bytes:
    choice = rng.randrange(7)
    if choice == 0:
        return colour_image(rng.choice(["red", "green", "blue"]), size=(rng.randint(1, 64), 8))
    if choice == 1:
        return colour_image(fmt=rng.choice(["JPEG", "BMP", "GIF", "TIFF", "WEBP"]))
    if choice == 2:
        return colour_image()[: rng.randint(0, 200)]  # truncated
    if choice == 3:
        return png_bomb(9000, 8000)
    if choice == 4:
        good = bytearray(colour_image(fmt="JPEG"))
        for _ in range(rng.randint(1, 30)):
            good[rng.randrange(len(good))] = rng.randrange(256)
        return bytes(good)
    return rng.randbytes(rng.randint(0, 3000))


def _json_value(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(8 if depth < 4 else 5)
    if kind == 0:
        return None
    if kind == 1:
        return rng.choice([True, False, 0, -1, 10**30, 1.5e308, "", _text(rng)])
    if kind == 2:
        return base64.b64encode(_image(rng)).decode()
    if kind == 3:
        return "data:image/png;base64," + base64.b64encode(_image(rng)).decode()
    if kind == 4:
        return _text(rng, 200)
    if kind == 5:
        return [_json_value(rng, depth + 1) for _ in range(rng.randint(0, 5))]
    return {_text(rng, 6): _json_value(rng, depth + 1) for _ in range(rng.randint(0, 4))}


def _json_body(rng: random.Random, schema: dict[str, Any]) -> bytes:
    declared = list(schema.get("properties", {}))
    body: dict[str, Any] = {}
    for name in declared:
        if rng.random() < 0.6:
            count = rng.choice([1, 2, 65])
            value = [_json_value(rng) for _ in range(min(count, 3))] * (count // 3 or 1)
            body[name] = value if name == "images" and rng.random() < 0.7 else _json_value(rng)
    if rng.random() < 0.2:
        body[_text(rng, 5)] = _json_value(rng)
    text = json.dumps(body)
    mutation = rng.randrange(6)
    if mutation == 0:
        return text[: rng.randint(0, len(text))].encode()
    if mutation == 1:
        depth = rng.choice([50, 300, 5000])
        return ("[" * depth + "]" * depth).encode()
    if mutation == 2:
        return json.dumps(_json_value(rng)).encode()
    return text.encode()


def _multipart(rng: random.Random) -> tuple[bytes, str]:
    boundary = "".join(rng.choice(string.ascii_letters) for _ in range(rng.randint(1, 30)))
    parts = []
    for _ in range(rng.choice([0, 1, 2, 3, 65])):
        name = rng.choice(["file", "files", "other", "", _text(rng, 5).replace('"', "")])
        filename = rng.choice(['; filename="a.png"', "", '; filename=""', '; filename="../../x"'])
        kind = rng.choice(["image/png", "text/plain", "application/octet-stream", "", "image/"])
        header = f'Content-Disposition: form-data; name="{name}"{filename}\r\n'
        if kind:
            header += f"Content-Type: {kind}\r\n"
        parts.append(
            f"--{boundary}\r\n{header}\r\n".encode("utf-8", "surrogatepass") + _image(rng) + b"\r\n"
        )
    body = b"".join(parts) + (f"--{boundary}--\r\n".encode() if rng.random() < 0.9 else b"")
    declared = rng.choice([boundary, boundary[:-1] or "x", "", '"' + boundary + '"'])
    return body, f"multipart/form-data; boundary={declared}"


def generate(document: dict[str, Any], rng: random.Random, count: int) -> Iterator[Case]:
    """``count`` requests built from ``document`` (an OpenAPI document)."""
    operations = [
        (method.upper(), path, operation)
        for path, methods in document["paths"].items()
        for method, operation in methods.items()
    ]
    for _ in range(count):
        if rng.random() < 0.05:
            method = rng.choice(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
            path = rng.choice(["/", "/predict/", "/../etc/passwd", "/docs", "/%00", "/x" * 50])
            yield Case(method, path)
            continue
        method, path, operation = rng.choice(operations)
        case = Case(method, path)
        for parameter in operation.get("parameters", []):
            if rng.random() < 0.5:
                case.params.append((parameter["name"], _value(rng, parameter["schema"])))
        if rng.random() < 0.2:  # options the document does not offer, and repeats
            name = rng.choice(["threshold", "heatmap", "top_k", _text(rng, 6)])
            case.params.append((name, _value(rng, {"type": "number"})))
        if rng.random() < 0.3:
            case.headers["X-API-Key"] = rng.choice(["k", "", _text(rng, 20)]).encode(
                "latin-1", "replace"
            )
        if rng.random() < 0.2:
            case.headers["Authorization"] = rng.choice(["Bearer k", "Bearer ", "Basic x", "k"])
        if rng.random() < 0.3:
            case.headers["X-Request-ID"] = rng.choice(["ok-id", "x" * 500, "bad id\t"])
        body = operation.get("requestBody", {}).get("content", {})
        if method == "POST" or rng.random() < 0.1:
            choice = rng.randrange(5)
            if choice < 2 and "multipart/form-data" in body:
                case.content, case.headers["Content-Type"] = _multipart(rng)
            elif choice < 4 and "application/json" in body:
                case.content = _json_body(rng, body["application/json"]["schema"])
                case.headers["Content-Type"] = rng.choice(
                    ["application/json", "application/json; charset=latin-1", "APPLICATION/JSON"]
                )
            else:
                case.content = rng.randbytes(rng.randint(0, 2000))
                case.headers["Content-Type"] = rng.choice(
                    ["text/plain", "", "multipart/form-data", "image/png", _text(rng, 12)]
                ).encode("latin-1", "replace")
        yield case


@pytest.mark.parametrize(
    ("fixture", "settings"),
    [("classification_bundle", {}), ("multilabel_bundle", {"api_key": "k"})],
)
def test_no_request_from_the_openapi_document_gets_a_5xx(
    fixture: str, settings: dict[str, Any], request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    bundle: Path = request.getfixturevalue(fixture)
    rng = random.Random(f"{SEED}-{fixture}")
    failures: list[str] = []
    statuses: dict[int, int] = {}
    with serving(bundle, tmp_path, max_upload_mb=1.0, **settings) as client:
        document = client.get("/openapi.json").json()
        for case in generate(document, rng, CASES):
            response = client.request(
                case.method, case.path, params=case.params, headers=case.headers,
                content=case.content,
            )  # fmt: skip
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
            if response.status_code >= 500 and response.status_code not in ALLOWED_5XX:
                failures.append(f"{case.method} {case.path} {case.params} -> {response.text}")
            elif response.status_code >= 400 and case.path == "/predict":
                assert set(response.json()) == {"error", "request_id"}
    assert not failures, "\n".join(failures[:5])
    assert sum(statuses.values()) == CASES
    assert statuses.get(200, 0) > 0  # some requests were valid predictions
