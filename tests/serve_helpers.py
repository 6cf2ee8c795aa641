"""Helpers for the serve tests: images the hand-made colour model knows, bombs, a client,
and :func:`wait_ready`, the one way a test waits for a server's model to load."""

from __future__ import annotations

import io
import struct
import time
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnxruntime as ort
from fastapi.testclient import TestClient
from PIL import Image

from visionops.config import ServeSettings
from visionops.imaging import load_image
from visionops.inference.bundle import load_bundle
from visionops.serve.app import create_app

COLOURS = {
    "red": (220, 30, 30),
    "green": (30, 200, 30),
    "blue": (30, 30, 220),
    "yellow": (220, 220, 40),
}
"""The classes of ``handmade_runs``' colours-run (tests/conftest.py) and their colours."""


def colour_image(
    name: str = "red", size: tuple[int, int] = (48, 40), fmt: str = "PNG", seed: int = 0
) -> bytes:
    """A real image file of one class's colour with a little noise."""
    width, height = size
    noise = np.random.default_rng(seed).normal(0, 8, (height, width, 3))
    array = np.clip(np.array(COLOURS[name])[None, None, :] + noise, 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt)
    return buffer.getvalue()


def png_bomb(width: int, height: int) -> bytes:
    """A valid 1-bit PNG of ``width`` x ``height`` black pixels: tiny file, huge image."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    row = b"\x00" + b"\x00" * ((width + 7) // 8)
    compressor = zlib.compressobj(9)
    data = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")
    )


READY_WITHIN_S = 60.0
"""How long a test waits for a model to load and warm up (a few seconds on a busy CPU)."""


def wait_ready(
    get: Callable[[str], httpx.Response],
    *,
    within: float = READY_WITHIN_S,
    alive: Callable[[], bool] = lambda: True,
) -> None:
    """Return once ``GET /ready`` answers 200; fail at the deadline or when loading failed.

    Args:
        get: Sends a GET for a path: a ``TestClient``'s ``get``, or one that prefixes a live
            server's URL.
        within: The deadline, in seconds.
        alive: False once the server process has exited (stop waiting at once).

    Raises:
        AssertionError: Not ready within ``within`` seconds, the model failed to load, or
            the server exited.
    """
    deadline = time.monotonic() + within
    body: Any = "no answer yet"
    while time.monotonic() < deadline:
        if not alive():
            raise AssertionError("the server exited before it was ready")
        try:
            response = get("/ready")
        except httpx.TransportError:  # a live server that is not listening yet
            response = None
        if response is not None:
            if response.status_code == 200:
                return
            body = response.json()
            if body.get("status") == "failed":
                raise AssertionError(f"the model failed to load: {body}")
        time.sleep(0.02)
    raise AssertionError(f"/ready did not answer 200 within {within:.0f} s (last: {body})")


@contextmanager
def serving(bundle_dir: Path, log_dir: Path, **settings: Any) -> Iterator[TestClient]:
    """A client of a started app whose model is loaded and warmed up."""
    app = create_app(load_bundle(bundle_dir), ServeSettings(**settings), log_dir)
    with TestClient(app, raise_server_exceptions=False) as client:
        wait_ready(client.get)
        yield client


def expected_outputs(bundle_dir: Path, payloads: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """The in-process pipeline — load_image + ONNX Runtime, no server — for comparison."""
    pixels = np.stack([load_image(p, size=32) for p in payloads]).transpose(0, 3, 1, 2)
    session = ort.InferenceSession(str(bundle_dir / "model.onnx"))
    names = [session.get_outputs()[0].name, "embedding"]
    main, embedding = session.run(names, {"pixels": np.ascontiguousarray(pixels)})
    return main, embedding


def metric_value(text: str, name: str) -> float:
    """The value of an unlabelled series in a Prometheus exposition."""
    for line in text.splitlines():
        if line.split(" ")[0] == name:
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in metrics")
