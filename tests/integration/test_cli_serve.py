"""``visionops serve`` as a user runs it: real uvicorn processes on loopback ports.

Covers what only a real server shows: the port-in-use error, SIGTERM with a request in
flight (answered, logged, then a clean exit), exporting a run that has no bundle before
serving it (with the same settings), and the upload page in headless Chromium.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from browser_helpers import CHROMIUM, Chromium
from serve_helpers import wait_ready
from visionops.artifacts import BundleMeta
from visionops.cli.app import app
from visionops.inference.predlog import read_prediction_log

runner = CliRunner()
COLOURS = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220)}


def colour_png(path: Path, name: str) -> Path:
    noise = np.random.default_rng(0).normal(0, 8, (40, 48, 3))
    pixels = np.clip(np.array(COLOURS[name]) + noise, 0, 255).astype(np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    process: subprocess.Popen[str]
    url: str
    port: int
    project: Path

    def stop(self, sig: int = signal.SIGTERM) -> str:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            output, _ = self.process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            output, _ = self.process.communicate()
        return output


def start_server(
    project: Path, *args: str, ready_within: float = 120.0, env: dict[str, str] | None = None
) -> Server:
    """Start `visionops serve` in ``project`` and wait (bounded) until /ready says 200.

    ``env`` adds to (or replaces) variables of this process's environment.
    """
    port = free_port()
    env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "200", **(env or {})}
    process = subprocess.Popen(
        [sys.executable, "-m", "visionops", "serve", *args, "--port", str(port)],
        cwd=project,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    server = Server(process, f"http://127.0.0.1:{port}", port, project)
    try:
        wait_ready(
            lambda path: httpx.get(f"{server.url}{path}", timeout=1.0),
            within=ready_within,
            alive=lambda: process.poll() is None,
        )
    except AssertionError as error:
        raise AssertionError(f"{error}:\n{server.stop()}") from None
    return server


@pytest.fixture(scope="module")
def project(classification_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private copy of the hand-made project; colours-run (runs/latest) is exported."""
    source = classification_bundle.parents[2]
    return Path(shutil.copytree(source, tmp_path_factory.mktemp("serve-cli") / "p", symlinks=True))


@pytest.fixture(scope="module")
def server(project: Path) -> Iterator[Server]:
    """`visionops serve` with no arguments: runs/latest's bundle."""
    live = start_server(project)
    yield live
    live.stop()


def test_print_config_shows_serve_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["serve", "--port", "9123", "--max-batch", "4", "--print-config"])
    assert result.exit_code == 0
    assert "port: 9123" in result.stdout
    assert "max_batch: 4" in result.stdout


def test_nothing_to_serve_says_how_to_get_a_model(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "visionops", "serve"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "visionops train" in result.stderr
    assert "Traceback" not in result.stderr


def test_port_in_use_is_a_one_line_error(server: Server) -> None:
    bundle = server.project / "runs" / "colours-run" / "bundle"
    result = subprocess.run(
        [sys.executable, "-m", "visionops", "serve", str(bundle), "--port", str(server.port)],
        cwd=server.project,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "400"},
    )
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.startswith("error")]
    assert len(lines) == 1
    assert f"port {server.port} on 127.0.0.1 is already in use" in lines[0]
    assert f"--port {server.port + 1}" in lines[0]
    assert "Traceback" not in result.stderr


def test_concurrent_clients(server: Server, tmp_path: Path) -> None:
    images = {name: colour_png(tmp_path / f"{name}.png", name).read_bytes() for name in COLOURS}
    order = [name for _ in range(8) for name in COLOURS]
    answers: list[tuple[str, int, str]] = []
    lock = threading.Lock()

    def client(names: list[str]) -> None:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            for name in names:
                response = http.post("/predict", files={"file": (name, images[name], "image/png")})
                label = response.json()["predictions"][0]["label"] if response.is_success else ""
                with lock:
                    answers.append((name, response.status_code, label))

    threads = [threading.Thread(target=client, args=(order[i::8],)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert len(answers) == len(order)
    assert all(status == 200 for _, status, _ in answers)
    assert all(name == label for name, _, label in answers)
    metrics = httpx.get(f"{server.url}/metrics").text
    assert 'visionops_requests_total{endpoint="/predict",status="200"}' in metrics


def test_sigterm_finishes_the_request_in_flight_and_flushes_the_log(
    project: Path, tmp_path: Path
) -> None:
    log_dir = tmp_path / "predictions"
    # A lone request waits 2 s for its batch to fill: SIGTERM arrives while it is in flight.
    live = start_server(project, "--max-wait-ms", "2000", "--log-dir", str(log_dir))
    payload = colour_png(tmp_path / "red.png", "red").read_bytes()
    result: dict[str, Any] = {}

    def predict() -> None:
        result["response"] = httpx.post(
            f"{live.url}/predict", files={"file": ("red.png", payload, "image/png")}, timeout=30
        )

    worker = threading.Thread(target=predict)
    worker.start()
    for _ in range(300):
        if "visionops_queue_depth 1.0" in httpx.get(f"{live.url}/metrics").text:
            break
        time.sleep(0.01)
    else:
        pytest.fail("the request never reached the queue")
    live.process.send_signal(signal.SIGTERM)
    worker.join(timeout=60)
    output = live.stop()
    # uvicorn re-raises the signal after its clean shutdown, so supervisors see it.
    assert live.process.returncode == -signal.SIGTERM, output
    response = result["response"]
    assert response.status_code == 200
    assert response.json()["predictions"][0]["label"] == "red"
    records = read_prediction_log(log_dir).records
    assert [r.request_id for r in records] == [response.json()["request_id"]]
    assert "1 predictions logged" in output
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{live.url}/health", timeout=2)


def _raw_exchange(sock: socket.socket, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send one HTTP/1.1 request on ``sock`` and read exactly one response."""
    sock.sendall(request)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError(f"connection closed mid-response: {data!r}")
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:])}
    while len(body) < int(headers.get("content-length", "0")):
        body += sock.recv(65536)
    return int(lines[0].split()[1]), headers, body


def _post(path: str, body: bytes, content_type: str, extra: str = "") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n{extra}\r\n"
    ).encode() + body


def test_deep_json_is_a_4xx_and_the_connection_survives(server: Server, tmp_path: Path) -> None:
    deep = b"[" * 1000 + b"]" * 1000
    image = base64.b64encode(colour_png(tmp_path / "red.png", "red").read_bytes())
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        status, headers, body = _raw_exchange(sock, _post("/predict", deep, "application/json"))
        assert status == 422
        assert json.loads(body)["error"]["kind"] == "invalid_json"
        assert headers.get("connection", "keep-alive") != "close"
        # The same keep-alive connection answers the next request.
        valid = b'{"image": "' + image + b'"}'
        status, _, body = _raw_exchange(sock, _post("/predict", valid, "application/json"))
    assert status == 200
    assert json.loads(body)["predictions"][0]["label"] == "red"


SECRET = "sk-live-0123456789abcdef"


@pytest.fixture(scope="module")
def guarded_log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("guarded") / "predictions"


@pytest.fixture(scope="module")
def guarded(project: Path, guarded_log_dir: Path) -> Iterator[Server]:
    """A server with an API key and a 2 s deadline, logging to a folder a test can break."""
    live = start_server(
        project, "--api-key", SECRET, "--timeout", "2", "--log-dir", str(guarded_log_dir)
    )
    yield live
    if live.process.returncode is None:
        live.stop()


def test_a_stalled_upload_is_a_408_not_overload(guarded: Server) -> None:
    head = _post("/predict", b"", "application/json", f"X-API-Key: {SECRET}\r\n")
    head = head.replace(b"Content-Length: 0", b"Content-Length: 5000")
    with socket.create_connection(("127.0.0.1", guarded.port), timeout=30) as sock:
        status, _, body = _raw_exchange(sock, head + b'{"image": "iVBO')  # then nothing
    error = json.loads(body)["error"]
    assert status == 408
    assert error["kind"] == "request_body_incomplete"
    assert "incomplete" in error["message"]
    assert "overloaded" not in error["message"]


def test_the_api_key_never_reaches_the_server_log(
    guarded: Server, guarded_log_dir: Path, tmp_path: Path
) -> None:
    log_dir = guarded_log_dir
    payload = colour_png(tmp_path / "red.png", "red").read_bytes()
    files = {"file": ("red.png", payload, "image/png")}
    with httpx.Client(base_url=guarded.url, timeout=30) as http:
        # No segment is open yet: the first prediction fails inside the server.
        shutil.rmtree(log_dir)
        log_dir.write_text("not a folder")
        try:
            failed = http.post(
                "/predict", files=files, headers={"Authorization": f"Bearer {SECRET}"}
            )
            deep = http.post(
                "/predict",
                content=b"[" * 1000 + b"]" * 1000,
                headers={"X-API-Key": SECRET, "Content-Type": "application/json"},
            )
        finally:
            log_dir.unlink()
        bodies = [failed.text, deep.text, http.get("/metrics").text]
    assert failed.status_code == 500
    assert deep.status_code == 422
    output = guarded.stop()
    assert "request" in output and "failed" in output  # the failure is logged...
    assert SECRET not in output  # ...without the key
    for body in bodies:
        assert SECRET not in body


@pytest.mark.slow
def test_a_run_without_bundle_is_exported_first_with_the_same_settings(
    project: Path,
) -> None:
    assert not (project / "runs" / "dishes-run" / "bundle").exists()
    # An export setting as an override: the export must see it (a `python -m visionops
    # export` child process used to drop every setting).
    live = start_server(project, "dishes-run", "export.layout=NHWC", ready_within=600)
    try:
        meta = httpx.get(f"{live.url}/metadata").json()
    finally:
        output = live.stop(signal.SIGINT)
    assert live.process.returncode == 130, output  # Ctrl-C: "interrupted"
    assert BundleMeta.read(project / "runs" / "dishes-run" / "bundle").input.layout == "NHWC"
    assert meta["input"]["layout"] == "NHWC"
    assert meta["task"] == "regression"
    assert meta["model_version"].startswith("dishes-run@")
    assert "exporting it first" in output


# ------------------------------------------------------------------ the upload page


# CI installs chromium (.ci/run), so there a missing browser fails instead of skipping.
@pytest.mark.skipif(
    CHROMIUM is None and not os.environ.get("CI"),
    reason="needs Debian's chromium (apt-get install chromium)",
)
def test_upload_page_in_headless_chromium(server: Server, tmp_path: Path) -> None:
    assert CHROMIUM is not None, "chromium is not installed: apt-get install chromium"
    blue = colour_png(tmp_path / "blue.png", "blue")
    green = base64.b64encode(colour_png(tmp_path / "green.png", "green").read_bytes()).decode()
    browser = Chromium(CHROMIUM, tmp_path / "profile")
    try:
        browser.open(f"{server.url}/")
        model_line = browser.wait_for(
            "document.getElementById('model').textContent.includes('colours-run')"
            " && document.getElementById('model').textContent"
        )
        assert "classification model colours-run@" in model_line

        # Choosing a file with the file picker uploads it and shows the answer.
        document = browser.call("DOM.getDocument")["root"]["nodeId"]
        node = browser.call("DOM.querySelector", nodeId=document, selector="#file")["nodeId"]
        browser.call("DOM.setFileInputFiles", files=[str(blue)], nodeId=node)
        headline = browser.wait_for(
            "(t => t && t.startsWith('blue') && t)"
            "(document.querySelector('#cards .card .headline')?.textContent)"
        )
        assert "%" in headline
        status = browser.wait_for("document.getElementById('status').textContent")
        assert "colours-run@" in status
        rows = browser.evaluate(
            "[...document.querySelectorAll('#cards .card .row .name')].map(e => e.textContent)"
        )
        assert rows[0] == "blue"
        assert sorted(rows) == ["blue", "green", "red", "yellow"]

        # Dropping a file on the drop zone does the same.
        browser.evaluate(
            f"""(async () => {{
                const bytes = Uint8Array.from(atob("{green}"), c => c.charCodeAt(0));
                const data = new DataTransfer();
                data.items.add(new File([bytes], "green.png", {{type: "image/png"}}));
                const drop = document.getElementById("drop");
                drop.dispatchEvent(new DragEvent("dragover", {{dataTransfer: data,
                                                               bubbles: true}}));
                drop.dispatchEvent(new DragEvent("drop", {{dataTransfer: data, bubbles: true}}));
                return true;
            }})()"""
        )
        headline = browser.wait_for(
            "(t => t && t.startsWith('green') && t)"
            "(document.querySelector('#cards .card .headline')?.textContent)"
        )
        assert browser.evaluate("document.querySelectorAll('#cards .card').length") == 2
        # Without GET /models (one model) there is no picker; 32 px has no heatmap to offer.
        assert browser.evaluate("document.getElementById('pickbox').offsetParent") is None
        assert browser.evaluate("document.getElementById('heatbox').offsetParent") is None
    finally:
        browser.close()
    metrics = httpx.get(f"{server.url}/metrics").text
    assert 'visionops_predictions_total{label="blue"}' in metrics
    assert 'visionops_predictions_total{label="green"}' in metrics
