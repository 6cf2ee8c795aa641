"""The page at ``/`` in headless Chromium with a fake camera, against a real ``visionops serve``.

The camera is Chromium's fake capture device playing a y4m file this test writes from
``demo:shapes`` images; the server serves the trained shapes run (resnet18 at 64 px, with its
class activation map). The test drives the page by keyboard where a user would, and answers
some of the page's requests itself with ``503`` (DevTools' ``Fetch`` domain) to see the
camera back off and recover. With ``VISIONOPS_SCREENSHOTS=DIR`` it leaves the docs'
screenshot there (``camera-page.png``; ``docs/images`` holds the one from the last run).
"""

from __future__ import annotations

import base64
import io
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from browser_helpers import CHROMIUM, Chromium
from serve_helpers import wait_ready
from visionops.config import DemoSettings
from visionops.data.synthetic import SHAPE_CLASSES, shapes_image

pytestmark = [
    pytest.mark.slow,
    # CI installs chromium (.ci/run), so there a missing browser fails instead of skipping.
    pytest.mark.skipif(
        CHROMIUM is None and not os.environ.get("CI"),
        reason="needs Debian's chromium (apt-get install chromium)",
    ),
]

_FRAME = (320, 240)
_CAMERA_SHAPES = ("circle", "cross", "diamond", "square")
_UPLOAD_SHAPES = ("star", "ring", "triangle")
_UPLOAD_SIZES = ((300, 200), (180, 260), (400, 300))


def _demo(kind: str, index: int = 0) -> np.ndarray:
    pixels, _ = shapes_image(DemoSettings(image_size=64, seed=11), kind, index)
    return pixels


def _framed(pixels: np.ndarray, size: tuple[int, int]) -> Image.Image:
    """A demo image scaled into the middle of a grey picture of ``size`` (the centre crop)."""
    width, height = size
    side = min(width, height)
    picture = Image.new("RGB", size, (128, 128, 128))
    scaled = Image.fromarray(pixels).resize((side, side), Image.Resampling.BICUBIC)
    picture.paste(scaled, ((width - side) // 2, (height - side) // 2))
    return picture


def write_y4m(path: Path, frames: list[Image.Image], fps: int = 10) -> Path:
    """Frames as a YUV4MPEG2 file (4:2:0, full-range BT.601, as Chromium's fake camera reads)."""
    width, height = frames[0].size
    with path.open("wb") as handle:
        handle.write(f"YUV4MPEG2 W{width} H{height} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
        for frame in frames:
            y, cb, cr = (np.asarray(c, np.float32) for c in frame.convert("YCbCr").split())
            handle.write(b"FRAME\n")
            handle.write(y.astype(np.uint8).tobytes())
            for chroma in (cb, cr):
                quarter = chroma.reshape(height // 2, 2, width // 2, 2).mean(axis=(1, 3))
                handle.write(np.round(quarter).astype(np.uint8).tobytes())
    return path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def server(shapes_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`visionops serve` of the shapes bundle; drift tested every 5 predictions."""
    port = _free_port()
    logs = tmp_path_factory.mktemp("page-logs")
    process = subprocess.Popen(
        [
            sys.executable, "-m", "visionops", "serve", str(shapes_bundle), "--port", str(port),
            "--log-dir", str(logs), "drift.min_samples=5", "drift.every=5", "drift.window=40",
            "drift.max_cpu_share=1",
        ],
        env={**os.environ, "NO_COLOR": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(
            lambda path: httpx.get(f"{url}{path}", timeout=1.0),
            within=180,
            alive=lambda: process.poll() is None,
        )
        yield url
    finally:
        process.terminate()
        process.wait(timeout=60)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Chromium]:
    frames = [_framed(_demo(kind), _FRAME) for kind in _CAMERA_SHAPES for _ in range(5)]
    camera = write_y4m(tmp_path / "camera.y4m", frames)
    chromium = Chromium(
        CHROMIUM or "chromium",
        tmp_path / "profile",
        [
            "--use-fake-ui-for-media-stream",
            "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-video-capture={camera}",
        ],
    )
    try:
        yield chromium
    finally:
        chromium.close()


def _stats(browser: Chromium) -> dict[str, str]:
    stats: dict[str, str] = browser.evaluate(
        "Object.assign({}, document.getElementById('camstats').dataset)"
    )
    return stats


def _refuse_next_frames(browser: Chromium, count: int) -> list[float]:
    """Answer the page's next ``count`` predict requests with 503 + Retry-After: 1.

    Returns the seconds from each refusal to the next request.
    """
    body = json.dumps({"error": {"status": 503, "kind": "queue_full", "message": "busy"}})
    encoded = base64.b64encode(body.encode()).decode()
    waits: list[float] = []
    refused_at: float | None = None
    for _ in range(count + 1):
        paused = browser.next_event("Fetch.requestPaused")
        if refused_at is not None:
            waits.append(time.monotonic() - refused_at)
        if len(waits) == count:
            browser.call("Fetch.continueRequest", requestId=paused["requestId"])
            break
        refused_at = time.monotonic()
        browser.call(
            "Fetch.fulfillRequest",
            requestId=paused["requestId"],
            responseCode=503,
            responseHeaders=[
                {"name": "Retry-After", "value": "1"},
                {"name": "Content-Type", "value": "application/json"},
            ],
            body=encoded,
        )
    return waits


def _drawn(browser: Chromium, selector: str) -> dict[str, Any]:
    """Size of a heatmap canvas and whether the page drew on it."""
    values: dict[str, Any] = browser.evaluate(
        f"""(c => ({{width: c.width, height: c.height, drawn: c.dataset.drawn}}))
            (document.querySelector({json.dumps(selector)}))"""
    )
    return values


def _colours_on_a_row(browser: Chromium, width: int, height: int) -> int:
    """Distinct colours across the middle row when the page draws an 8x8 checkerboard map.

    Scaled up pixelated, a row holds two colours; smoothed, the ramp between them.
    """
    board = (np.indices((8, 8)).sum(axis=0) % 2 * 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(board).save(buffer, format="PNG")
    heatmap = {
        "png_base64": base64.b64encode(buffer.getvalue()).decode(),
        "width": 8, "height": 8, "min": 0.0, "max": 1.0, "label": "checkerboard",
    }  # fmt: skip
    count: int = browser.evaluate(
        f"""(async () => {{
            const canvas = document.createElement('canvas');
            await drawHeatmap(canvas, {width}, {height}, {json.dumps(heatmap)}, {{}});
            const row = canvas.getContext('2d').getImageData(0, {height // 2}, {width}, 1).data;
            const seen = new Set();
            for (let i = 0; i < row.length; i += 4) seen.add(row.slice(i, i + 4).join());
            return seen.size;
        }})()"""
    )
    return count


def test_camera_files_heatmap_and_drift_in_headless_chromium(
    server: str, browser: Chromium, tmp_path: Path
) -> None:
    browser.open(f"{server}/")
    browser.call(
        "Emulation.setDeviceMetricsOverride",
        width=1200,
        height=1100,
        deviceScaleFactor=1,
        mobile=False,
    )
    model_line = browser.wait_for(
        "(t => t.includes('classification') && t)(document.getElementById('model').textContent)"
    )
    assert "classification model" in model_line and "64 px" in model_line
    # One model, no GET /models: no picker. The bundle has a class activation map: heatmap.
    assert browser.evaluate("document.getElementById('pickbox').offsetParent") is None
    assert browser.evaluate("document.getElementById('heatbox').offsetParent !== null")

    # The camera, started from the keyboard: live answers over the video.
    browser.evaluate("document.getElementById('camstart').focus()")
    browser.press("Enter", "Enter", 13)
    browser.wait_for("Number(document.getElementById('camstats').dataset.answered) >= 3")
    answer = browser.wait_for("document.getElementById('camanswer').textContent")
    assert answer.split(" ")[0] in SHAPE_CLASSES, answer
    camera_heat = _drawn(browser, "#camheat")
    assert (camera_heat["width"], camera_heat["height"]) == _FRAME
    assert camera_heat["drawn"] == "1"

    # At most one frame in flight: while the server holds one, no other is sent.
    browser.call("Fetch.enable", patterns=[{"urlPattern": "*predict*", "requestStage": "Request"}])
    held = browser.next_event("Fetch.requestPaused")
    browser.wait_for("new Promise(done => setTimeout(() => done(true), 1500))")
    browser.call("Runtime.evaluate", expression="0")  # collect events that came meanwhile
    assert not [e for e in browser.events if e["method"] == "Fetch.requestPaused"]
    browser.call("Fetch.continueRequest", requestId=held["requestId"])

    # A busy server (503 + Retry-After: 1): the page waits at least that, then twice as long.
    before = _stats(browser)
    waits = _refuse_next_frames(browser, 3)
    assert waits[0] >= 1.0 and waits[1] >= 2.0 and waits[2] >= 4.0, waits
    refused = _stats(browser)
    assert int(refused["refused"]) >= int(before["refused"]) + 3
    assert int(refused["interval"]) >= 4000
    browser.call("Fetch.disable")
    # ...and speeds up again once frames are answered.
    browser.wait_for("Number(document.getElementById('camstats').dataset.interval) < 500", 120)
    assert _stats(browser)["maxInFlight"] == "1"

    # Three files at once: three answers, each heatmap at its image's own size, smooth.
    pictures = []
    for index, (kind, size) in enumerate(zip(_UPLOAD_SHAPES, _UPLOAD_SIZES, strict=True)):
        path = tmp_path / f"{index}-{kind}.jpg"
        _framed(_demo(kind, 1), size).save(path, quality=92)
        pictures.append(path)
    document = browser.call("DOM.getDocument")["root"]["nodeId"]
    node = browser.call("DOM.querySelector", nodeId=document, selector="#file")["nodeId"]
    browser.call("DOM.setFileInputFiles", files=[str(p) for p in pictures], nodeId=node)
    browser.wait_for(
        "[...document.querySelectorAll('#cards .card .headline')]"
        ".filter(e => !e.textContent.startsWith('predicting')).length === 3"
    )
    browser.wait_for("document.querySelectorAll('#cards canvas.heat[data-drawn]').length === 3")
    status = browser.evaluate("document.getElementById('status').textContent")
    assert status.startswith("3 images answered"), status
    titles = browser.evaluate("[...document.querySelectorAll('#cards .card h3')]"
                              ".map(e => e.textContent)")  # fmt: skip
    for place, path in enumerate(reversed(pictures), start=1):
        assert titles[place - 1] == path.name
        width, height = Image.open(path).size
        drawn = _drawn(browser, f"#cards .card:nth-child({place}) canvas.heat")
        assert drawn == {"width": width, "height": height, "drawn": "1"}
    # Smooth, not pixelated: the page's own drawing of a checkerboard map over 400x300 px.
    assert _colours_on_a_row(browser, 400, 300) > 20

    # Paste from the clipboard.
    pasted = base64.b64encode(pictures[0].read_bytes()).decode()
    browser.evaluate(
        f"""(() => {{
            const bytes = Uint8Array.from(atob("{pasted}"), c => c.charCodeAt(0));
            const data = new DataTransfer();
            data.items.add(new File([bytes], "clipboard.jpg", {{type: "image/jpeg"}}));
            document.dispatchEvent(new ClipboardEvent("paste", {{clipboardData: data}}));
            return true;
        }})()"""
    )
    browser.wait_for(
        "(c => c.querySelector('h3').textContent === 'clipboard.jpg' &&"
        " !c.querySelector('.headline').textContent.startsWith('predicting'))"
        "(document.querySelector('#cards .card'))"
    )

    # The drift panel: collecting first, then a verdict in words.
    state = browser.wait_for(
        "(s => (s === 'ok' || s === 'drift') && s)(document.getElementById('drift').dataset.state)",
        180,
    )
    text = browser.evaluate("document.getElementById('drifttext').textContent")
    if state == "drift":
        assert text.startswith("strongest signal: ") and len(text) > len("strongest signal: ")
    else:
        assert "look like the reference" in text

    shots = Path(os.environ.get("VISIONOPS_SCREENSHOTS") or tmp_path)
    shot = browser.screenshot(shots / "camera-page.png")
    assert Image.open(shot).size[0] == 1200

    # Stop, from the keyboard (focus moved to the stop button).
    assert browser.evaluate("document.activeElement.id") == "camstop"
    browser.press("Enter", "Enter", 13)
    browser.wait_for("document.getElementById('camstats').dataset.running === 'false'")
    assert browser.evaluate("document.activeElement.id") == "camstart"


def test_the_model_picker_follows_get_models(server: str, browser: Chromium) -> None:
    """With GET /models listing two models (as a several-model server answers), a picker
    appears and the chosen model's own paths are used; they are answered by this server."""
    listing = {
        "default": "shapes",
        "models": [
            {"name": "shapes", "default": True, "task": "classification"},
            {"name": "shapes-b", "default": False, "task": "classification"},
        ],
    }
    asked: list[str] = []
    browser.open("about:blank", ready="true")
    browser.call("Fetch.enable", patterns=[{"urlPattern": f"{server}/models*"}])
    browser.call("Page.navigate", url=f"{server}/")

    def answer_until(expression: str) -> Any:
        for _ in range(600):
            while any(e["method"] == "Fetch.requestPaused" for e in browser.events):
                paused = browser.next_event("Fetch.requestPaused")
                path = paused["request"]["url"].removeprefix(server)
                asked.append(f"{paused['request']['method']} {path}")
                if path == "/models":
                    body = base64.b64encode(json.dumps(listing).encode()).decode()
                    browser.call(
                        "Fetch.fulfillRequest",
                        requestId=paused["requestId"],
                        responseCode=200,
                        responseHeaders=[{"name": "Content-Type", "value": "application/json"}],
                        body=body,
                    )
                else:  # /models/<name>/<route> is this one-model server's /<route>
                    route = path.split("/", 3)[3]
                    browser.call(
                        "Fetch.continueRequest",
                        requestId=paused["requestId"],
                        url=f"{server}/{route}",
                    )
            value = browser.evaluate(expression)
            if value:
                return value
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {expression}")

    answer_until("document.getElementById('model')?.textContent.includes('classification')")
    assert answer_until("document.getElementById('pickbox').offsetParent !== null")
    assert "GET /models/shapes/metadata" in asked
    browser.evaluate(
        """(() => { const pick = document.getElementById('modelpick');
                    pick.value = 'shapes-b';
                    pick.dispatchEvent(new Event('change')); return true; })()"""
    )
    answer_until("document.getElementById('camstart').disabled === false")
    picture = base64.b64encode(_framed_bytes()).decode()
    browser.evaluate(
        f"""(() => {{
            const bytes = Uint8Array.from(atob("{picture}"), c => c.charCodeAt(0));
            const data = new DataTransfer();
            data.items.add(new File([bytes], "picked.jpg", {{type: "image/jpeg"}}));
            document.dispatchEvent(new ClipboardEvent("paste", {{clipboardData: data}}));
            return true;
        }})()"""
    )
    answer_until(
        "(h => h && !h.textContent.startsWith('predicting'))"
        "(document.querySelector('#cards .card .headline'))"
    )
    assert "GET /models/shapes-b/metadata" in asked
    assert any(a.startswith("POST /models/shapes-b/predict") for a in asked), asked


def _framed_bytes() -> bytes:
    buffer = io.BytesIO()
    _framed(_demo("circle", 2), (200, 150)).save(buffer, format="JPEG", quality=92)
    return buffer.getvalue()
