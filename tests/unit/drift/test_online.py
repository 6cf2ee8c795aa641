"""Online drift in serve: rolling window, background tests, GET /drift, gauges; then the
offline report on the log the server wrote."""

from __future__ import annotations

import io
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from serve_helpers import wait_ready
from visionops.config import DriftSettings, ServeSettings, load_settings
from visionops.drift.report import drift_report
from visionops.inference.bundle import load_bundle
from visionops.serve.app import create_app

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220),
           "yellow": (220, 220, 40)}  # fmt: skip
SMALL = {"min_samples": 5, "window": 20, "every": 20, "permutations": 99}


def _png(colour: str, seed: int) -> bytes:
    noise = np.random.default_rng(seed).normal(0, 8, (32, 32, 3))
    pixels = np.clip(np.array(COLOURS[colour]) + noise, 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _app(bundle: Path, tmp_path: Path, **drift: Any) -> Any:
    """A serving app with small online-drift settings (``drift`` overrides them)."""
    return create_app(
        load_bundle(bundle), ServeSettings(), tmp_path / "log",
        drift=DriftSettings(**{**SMALL, **drift}),
    )  # fmt: skip


def _wait_for_run(client: TestClient, runs: int) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        status: dict[str, Any] = client.get("/drift").json()
        if status["runs"] >= runs:
            return status
        time.sleep(0.05)
    raise AssertionError(f"no drift run #{runs} within 60 s: {status}")


def test_serve_runs_drift_tests_on_a_rolling_window(
    classification_bundle: Path, tmp_path: Path
) -> None:
    app = _app(classification_bundle, tmp_path)
    with TestClient(app) as client:
        wait_ready(client.get)
        assert client.get("/drift").json()["status"] == "collecting"
        mixed = [_png(c, i) for i in range(5) for c in COLOURS]
        for start in range(0, 20, 4):
            files = [
                ("file", (f"{i}.png", p, "image/png"))
                for i, p in enumerate(mixed[start : start + 4])
            ]
            assert client.post("/predict", files=files).status_code == 200
        first = _wait_for_run(client, 1)
        assert first["status"] == "ok" and first["current_n"] == 20
        assert first["reference_split"] == "val"
        assert set(first["families"]) == {"embeddings", "outputs", "images"}

        reds = [_png("red", 100 + i) for i in range(20)]
        for start in range(0, 20, 4):
            files = [
                ("file", (f"{i}.png", p, "image/png"))
                for i, p in enumerate(reds[start : start + 4])
            ]
            assert client.post("/predict", files=files).status_code == 200
        second = _wait_for_run(client, 2)
        assert second["drifted"] is True
        assert second["families"]["outputs"]["drifted"] is True
        metrics = client.get("/metrics").text
        assert "visionops_drift_detected 1.0" in metrics
        assert 'visionops_drift_p_value{family="overall"}' in metrics

    # The log the server wrote holds full outputs, so the offline report can test them.
    settings = load_settings(overrides=[f"drift.{k}={v}" for k, v in SMALL.items()])
    report = drift_report(
        settings, classification_bundle, current=tmp_path / "log", last=20, out=tmp_path / "r"
    )
    assert report.result.current_count == 20  # the red images only
    assert len(report.payload["windows"]) == 4
    outputs = report.result.family("outputs")
    assert outputs is not None
    assert [row.name for row in outputs.tests][:4] == [
        "p(red)",
        "p(green)",
        "p(blue)",
        "p(yellow)",
    ]
    assert report.result.drifted
    assert report.html_path.read_text().count("data:image/png;base64,") >= 4


def test_online_drift_can_be_switched_off(classification_bundle: Path, tmp_path: Path) -> None:
    app = _app(classification_bundle, tmp_path, online=False)
    with TestClient(app) as client:
        status = client.get("/drift").json()
        assert status == {"status": "off", "reason": "switched off (drift.online=false)"}
        assert "visionops_drift_p_value" not in client.get("/metrics").text


def test_online_tests_keep_to_their_cpu_share(classification_bundle: Path, tmp_path: Path) -> None:
    # A share so small that the pause after the first run outlasts the test.
    app = _app(classification_bundle, tmp_path, max_cpu_share=1e-9)
    images = [("file", (f"{i}.png", _png("red", i), "image/png")) for i in range(20)]
    with TestClient(app) as client:
        wait_ready(client.get)
        assert client.post("/predict", files=images).status_code == 200
        first = _wait_for_run(client, 1)
        assert first["runs"] == 1
        deadline = time.monotonic() + 60
        while client.get("/drift").json()["paused_s"] == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        # Due again, but the pause holds the second run back.
        assert client.post("/predict", files=images).status_code == 200
        status = client.get("/drift").json()
        assert status["runs"] == 1 and status["paused_s"] > 60
        assert status["predictions_seen"] == 40


def test_the_model_loads_after_the_drift_libraries_are_imported(
    classification_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """scikit-learn's import sets environment variables; ONNX Runtime reads them from its own
    thread. Both at once crashed a server at start-up (glibc's getenv against setenv), so the
    session is built only once the libraries are in."""
    from visionops.drift.online import OnlineDriftMonitor
    from visionops.serve.state import ServingState

    order: list[str] = []
    import_libraries = OnlineDriftMonitor.import_libraries
    make_session = ServingState._make_session

    def libraries() -> None:
        order.append("libraries")
        import_libraries()

    def session(self: ServingState) -> Any:
        order.append("session")
        return make_session(self)

    monkeypatch.setattr(OnlineDriftMonitor, "import_libraries", staticmethod(libraries))
    monkeypatch.setattr(ServingState, "_make_session", session)
    app = _app(classification_bundle, tmp_path)
    with TestClient(app) as client:
        wait_ready(client.get)
    assert order == ["libraries", "session"]
