"""The serving app against a real exported bundle: every endpoint and every error code."""

from __future__ import annotations

import base64
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from serve_helpers import (
    COLOURS,
    colour_image,
    expected_outputs,
    metric_value,
    png_bomb,
    serving,
    wait_ready,
)
from visionops.config import DriftSettings, ServeSettings
from visionops.inference.bundle import load_bundle
from visionops.inference.predlog import read_prediction_log
from visionops.inference.runtime import available_cores
from visionops.serve.app import create_app

CLASSES = list(COLOURS)
VERSION = "colours-run@00000000"


def png(name: str = "red") -> tuple[str, bytes, str]:
    return (f"{name}.png", colour_image(name), "image/png")


# ------------------------------------------------------------------ lifecycle endpoints


def test_not_ready_before_the_model_is_loaded(classification_bundle: Path, tmp_path: Path) -> None:
    app = create_app(load_bundle(classification_bundle), ServeSettings(), tmp_path)
    client = TestClient(app)  # no lifespan: the model is never loaded
    assert client.get("/health").json() == {"status": "ok"}
    ready = client.get("/ready")
    assert ready.status_code == 503
    assert ready.json()["status"] == "loading"
    assert ready.headers["retry-after"] == "1"
    refused = client.post("/predict", files={"file": png()})
    assert refused.status_code == 503
    assert refused.json()["error"]["kind"] == "not_ready"
    assert "retry-after" in refused.headers


def test_health_ready_metadata(classification_bundle: Path, tmp_path: Path) -> None:
    with serving(classification_bundle, tmp_path) as client:
        assert client.get("/health").json() == {"status": "ok"}
        assert client.get("/ready").json() == {"status": "ready", "model_version": VERSION}
        meta = client.get("/metadata").json()
    assert meta["task"] == "classification"
    assert meta["labels"] == CLASSES
    assert meta["input"]["size"] == 32
    assert meta["input"]["resize"] == "crop"
    assert meta["model_version"] == VERSION
    assert meta["thresholds"] is None
    assert meta["server"]["max_batch"] == 8
    assert meta["server"]["auth_required"] is False
    assert meta["server"]["precision"] == "fp32"


def test_upload_page_and_docs(classification_bundle: Path, tmp_path: Path) -> None:
    with serving(classification_bundle, tmp_path) as client:
        page = client.get("/")
        docs = client.get("/docs")
        schema = client.get("/openapi.json").json()
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert 'id="drop"' in page.text
    assert 'type="file" accept="image/*" multiple' in page.text
    assert "getUserMedia" in page.text
    # Nothing from elsewhere: the page works offline.
    lowered = page.text.lower()
    for external in ("http://", "https://", "//cdn", "@import", "<link", 'src="//'):
        assert external not in lowered, external
    assert "swagger" in docs.text.lower()
    body = schema["paths"]["/predict"]["post"]["requestBody"]["content"]
    assert {"multipart/form-data", "application/json"} <= set(body)
    assert {"/health", "/ready", "/metadata", "/metrics"} <= set(schema["paths"])


# ------------------------------------------------------------------ predictions


def test_prediction_is_right_and_equals_the_in_process_pipeline(
    classification_bundle: Path, tmp_path: Path
) -> None:
    payload = colour_image("blue", size=(60, 44), fmt="JPEG")
    probabilities, _ = expected_outputs(classification_bundle, [payload])
    with serving(classification_bundle, tmp_path) as client:
        response = client.post(
            "/predict",
            files={"file": ("sky.jpg", payload, "image/jpeg")},
            headers={"X-Request-ID": "my-request-1"},
        )
    assert response.status_code == 200
    body = response.json()
    assert body["request_id"] == "my-request-1"
    assert response.headers["x-request-id"] == "my-request-1"
    assert body["model_version"] == VERSION
    assert body["task"] == "classification"
    (prediction,) = body["predictions"]
    assert prediction["file"] == "sky.jpg"
    assert prediction["label"] == "blue"
    assert prediction["top_k"][0]["label"] == "blue"
    assert len(prediction["top_k"]) == 4  # default top_k 5, but only 4 classes
    shown = {e["label"]: e["probability"] for e in prediction["top_k"]}
    for index, name in enumerate(CLASSES):
        assert shown[name] == pytest.approx(float(probabilities[0, index]), abs=1e-5)
    assert body["timing"]["total_ms"] > 0


def test_several_files_are_one_batch_in_order(classification_bundle: Path, tmp_path: Path) -> None:
    names = ["yellow", "red", "green", "blue", "red"]
    files = [("file", png(name)) for name in names]
    with serving(classification_bundle, tmp_path, max_wait_ms=20.0) as client:
        body = client.post("/predict", files=files).json()
        metrics = client.get("/metrics").text
    assert [p["label"] for p in body["predictions"]] == names
    assert [p["file"] for p in body["predictions"]] == [f"{n}.png" for n in names]
    assert body["timing"]["batch_size"] == 5
    assert 'visionops_batch_size_bucket{le="4.0"} 0.0' in metrics
    assert 'visionops_batch_size_bucket{le="6.0"} 1.0' in metrics


def test_json_base64_images(classification_bundle: Path, tmp_path: Path) -> None:
    encoded = [
        base64.b64encode(colour_image(name, fmt=fmt)).decode()
        for name, fmt in (("green", "PNG"), ("yellow", "JPEG"))
    ]
    with serving(classification_bundle, tmp_path) as client:
        one = client.post("/predict", json={"image": "data:image/png;base64," + encoded[0]})
        many = client.post("/predict", json={"images": encoded}, params={"top_k": 2})
    assert one.status_code == 200
    assert one.json()["predictions"][0]["label"] == "green"
    assert one.json()["predictions"][0]["file"] == "image"
    assert many.status_code == 200
    predictions = many.json()["predictions"]
    assert [p["label"] for p in predictions] == ["green", "yellow"]
    assert [len(p["top_k"]) for p in predictions] == [2, 2]


def test_concurrent_requests_each_get_their_own_answer(
    classification_bundle: Path, tmp_path: Path
) -> None:
    names = [CLASSES[i % 4] for i in range(24)]
    payloads = [colour_image(n, size=(40 + i, 40), seed=i) for i, n in enumerate(names)]
    with serving(classification_bundle, tmp_path / "log", max_wait_ms=5.0) as client:

        def call(index: int) -> tuple[int, dict[str, Any]]:
            response = client.post(
                "/predict", files={"file": (f"{index}.png", payloads[index], "image/png")}
            )
            return response.status_code, response.json()

        with ThreadPoolExecutor(max_workers=12) as pool:
            results = list(pool.map(call, range(len(payloads))))
    for index, (status, body) in enumerate(results):
        assert status == 200
        assert body["predictions"][0]["file"] == f"{index}.png"
        assert body["predictions"][0]["label"] == names[index]
    log = read_prediction_log(tmp_path / "log")
    assert len(log.records) == len(payloads)
    assert {r.request_id for r in log.records} == {b["request_id"] for _, b in results}


def test_health_ready_metrics_answer_while_inference_waits(
    classification_bundle: Path, tmp_path: Path
) -> None:
    # A lone request waits up to max_wait for its batch to fill: while it is queued, the
    # operational endpoints must still answer.
    with serving(classification_bundle, tmp_path, max_wait_ms=1500.0) as client:
        result: dict[str, Any] = {}

        def predict() -> None:
            result["response"] = client.post("/predict", files={"file": png()})

        worker = threading.Thread(target=predict)
        worker.start()
        depth = 0.0
        for _ in range(200):
            depth = metric_value(client.get("/metrics").text, "visionops_queue_depth")
            if depth == 1.0:
                break
            time.sleep(0.005)
        assert depth == 1.0
        assert client.get("/health").status_code == 200
        assert client.get("/ready").status_code == 200
        assert "response" not in result  # the prediction is still waiting
        worker.join(timeout=30)
    assert result["response"].status_code == 200


# ------------------------------------------------------------------ error codes


def test_body_too_large_is_413(classification_bundle: Path, tmp_path: Path) -> None:
    big = colour_image(size=(300, 300), fmt="BMP")  # 270 kB
    with serving(classification_bundle, tmp_path, max_upload_mb=0.1) as client:
        declared = client.post("/predict", files={"file": ("big.bmp", big, "image/bmp")})
        chunked = client.post(
            "/predict",
            content=iter([big[:60_000], big[60_000:]]),  # no Content-Length: counted as read
            headers={"Content-Type": "multipart/form-data; boundary=x"},
        )
    assert declared.status_code == 413
    assert declared.json()["error"]["kind"] == "payload_too_large"
    assert "0.1 MB" in declared.json()["error"]["message"]
    assert chunked.status_code == 413


def test_wrong_types_are_415(classification_bundle: Path, tmp_path: Path) -> None:
    with serving(classification_bundle, tmp_path) as client:
        plain = client.post("/predict", content=b"hello", headers={"Content-Type": "text/plain"})
        disguised = client.post(
            "/predict", files={"file": ("cat.png", b"%PDF-1.7 not an image at all", "image/png")}
        )
        declared = client.post("/predict", files={"file": ("a.txt", colour_image(), "text/plain")})
        metrics = client.get("/metrics").text
    assert plain.status_code == 415
    assert "multipart/form-data" in plain.json()["error"]["message"]
    assert disguised.status_code == 415
    assert "not an image" in disguised.json()["error"]["message"]
    assert declared.status_code == 415
    assert 'visionops_errors_total{kind="unsupported_media_type"} 3.0' in metrics
    assert 'visionops_requests_total{endpoint="/predict",status="415"} 3.0' in metrics


def test_undecodable_and_missing_images_are_422(
    classification_bundle: Path, tmp_path: Path
) -> None:
    truncated = colour_image(size=(64, 64))[:120]
    with serving(classification_bundle, tmp_path) as client:
        broken = client.post("/predict", files={"file": ("cut.png", truncated, "image/png")})
        no_file = client.post("/predict", files={"other": ("x.png", b"", "image/png")})
        bad_base64 = client.post("/predict", json={"image": "***"})
        bad_top_k = client.post("/predict", files={"file": png()}, params={"top_k": 0})
        threshold = client.post("/predict", files={"file": png()}, params={"threshold": 0.3})
    assert broken.status_code == 422
    message = broken.json()["error"]["message"]
    assert message.startswith("cut.png:")
    assert "truncated" in message
    assert no_file.status_code == 422
    assert "no image" in no_file.json()["error"]["message"]
    assert bad_base64.status_code == 422
    assert "base64" in bad_base64.json()["error"]["message"]
    assert bad_top_k.status_code == 422
    assert "top_k" in bad_top_k.json()["error"]["message"]
    assert threshold.status_code == 422
    assert "multilabel" in threshold.json()["error"]["message"]


def test_decompression_bomb_is_refused_before_decoding(
    classification_bundle: Path, tmp_path: Path
) -> None:
    bomb = png_bomb(8100, 8000)  # 64.8 Mpx, just over the bundle's 64 Mpx cap
    assert len(bomb) < 100_000
    with serving(classification_bundle, tmp_path) as client:
        response = client.post("/predict", files={"file": ("bomb.png", bomb, "image/png")})
    assert response.status_code == 413
    error = response.json()["error"]
    assert error["kind"] == "decompression_bomb"
    assert "8100x8000" in error["message"]
    assert "64,000,000" in error["message"]


def test_api_key(classification_bundle: Path, tmp_path: Path) -> None:
    files = {"file": png()}
    with serving(classification_bundle, tmp_path, api_key="s3cret") as client:
        missing = client.post("/predict", files=files)
        wrong = client.post("/predict", files=files, headers={"X-API-Key": "nope"})
        header = client.post("/predict", files=files, headers={"X-API-Key": "s3cret"})
        bearer = client.post("/predict", files=files, headers={"Authorization": "Bearer s3cret"})
        metadata = client.get("/metadata")
        health = client.get("/health")
    assert missing.status_code == 401
    assert "X-API-Key" in missing.json()["error"]["message"]
    assert wrong.status_code == 401
    assert header.status_code == 200
    assert bearer.status_code == 200
    assert metadata.status_code == 401
    assert health.status_code == 200


def test_queue_full_is_503_with_retry_after(classification_bundle: Path, tmp_path: Path) -> None:
    files = [("file", png()) for _ in range(3)]
    with serving(classification_bundle, tmp_path, queue_size=2) as client:
        refused = client.post("/predict", files=files)
        fits = client.post("/predict", files=files[:2])
    assert refused.status_code == 503
    assert refused.json()["error"]["kind"] == "queue_full"
    assert int(refused.headers["retry-after"]) >= 1
    assert fits.status_code == 200


def test_deadline_is_504_and_the_work_is_dropped(
    classification_bundle: Path, tmp_path: Path
) -> None:
    # The batch waits 3 s to fill; the request's deadline is 0.3 s.
    settings = {"max_wait_ms": 3000.0, "timeout_s": 0.3}
    with serving(classification_bundle, tmp_path / "log", **settings) as client:
        response = client.post("/predict", files={"file": png()})
    assert response.status_code == 504
    assert response.json()["error"]["kind"] == "timeout"
    assert "0.3 s" in response.json()["error"]["message"]
    assert not list((tmp_path / "log").glob("*.jsonl"))  # nothing was predicted or logged


def test_internal_errors_never_leak_a_traceback(
    classification_bundle: Path, tmp_path: Path
) -> None:
    log_dir = tmp_path / "log"
    with serving(classification_bundle, log_dir) as client:
        # The log folder is replaced by a file under the running server: a real failure.
        log_dir.rmdir()
        log_dir.write_text("not a folder")
        response = client.post("/predict", files={"file": png()})
        log_dir.unlink()
    assert response.status_code == 500
    error = response.json()["error"]
    assert error["kind"] == "internal"
    assert response.json()["request_id"] in error["message"]
    assert "Traceback" not in response.text
    assert "NotADirectoryError" not in response.text


def test_unknown_paths_are_json_404(classification_bundle: Path, tmp_path: Path) -> None:
    with serving(classification_bundle, tmp_path) as client:
        missing = client.get("/nope")
        wrong_method = client.get("/predict")
        metrics = client.get("/metrics").text
    assert missing.status_code == 404
    assert missing.json()["error"]["kind"] == "not_found"
    assert wrong_method.status_code == 405
    assert 'visionops_requests_total{endpoint="other",status="404"} 1.0' in metrics


# ------------------------------------------------------------------ metrics and the log


def test_metrics_exposition(classification_bundle: Path, tmp_path: Path) -> None:
    with serving(classification_bundle, tmp_path) as client:
        client.post("/predict", files=[("file", png("red")), ("file", png("green"))])
        client.post("/predict", files={"file": png("red")})
        text = client.get("/metrics").text
    for name in (
        "visionops_requests_total",
        "visionops_request_latency_seconds_bucket",
        "visionops_queue_latency_seconds_bucket",
        "visionops_compute_latency_seconds_bucket",
        "visionops_batch_size_bucket",
        "visionops_queue_depth",
        "visionops_in_flight_requests",
        "visionops_errors_total",
        "visionops_model_info",
    ):
        assert name in text
    assert 'visionops_predictions_total{label="red"} 2.0' in text
    assert 'visionops_predictions_total{label="green"} 1.0' in text
    assert 'visionops_requests_total{endpoint="/predict",status="200"} 2.0' in text
    assert 'visionops_request_latency_seconds_count{endpoint="/predict"} 2.0' in text
    assert "visionops_queue_latency_seconds_count 3.0" in text
    assert "visionops_batch_size_count 2.0" in text
    assert f'model_version="{VERSION}"' in text
    assert 'onnxruntime_providers="CPUExecutionProvider"' in text
    assert "_created" not in text
    # Three uploads at no load: every one's drift statistics measured.
    assert metric_value(text, "visionops_image_statistics_probability") == 1.0
    assert 'visionops_image_statistics_uploads_total{measured="true"} 3.0' in text
    assert 'visionops_image_statistics_uploads_total{measured="false"} 0.0' in text
    assert 0 < metric_value(text, "visionops_image_statistics_cpu_seconds") < 1


def test_drift_shares_are_of_the_workers_cores(classification_bundle: Path, tmp_path: Path) -> None:
    app = create_app(
        load_bundle(classification_bundle),
        ServeSettings(workers=2),
        tmp_path,
        drift=DriftSettings(statistics_cpu_share=0.05),
    )
    state = app.state.serving
    cores = max(1, available_cores() // 2)
    assert state.statistics_budget.cpu_per_second == pytest.approx(0.05 * cores)
    assert state.drift is not None and state.drift.cores == cores  # the online tests' share
    with TestClient(app) as client:
        wait_ready(client.get)
        assert state.session.statistics_budget is state.statistics_budget


def test_prediction_log_records_and_embeddings(classification_bundle: Path, tmp_path: Path) -> None:
    payloads = [colour_image(name) for name in ("red", "green", "blue")]
    _, embeddings = expected_outputs(classification_bundle, payloads)
    log_dir = tmp_path / "predictions"
    with serving(classification_bundle, log_dir, log_images=True) as client:
        ids = []
        for index, payload in enumerate(payloads):
            response = client.post("/predict", files={"file": (f"{index}.png", payload)})
            ids.append(response.json()["request_id"])
    log = read_prediction_log(log_dir)
    assert [r.request_id for r in log.records] == ids
    assert [r.prediction["label"] for r in log.records] == ["red", "green", "blue"]
    record = log.records[0]
    assert record.model_version == VERSION
    assert record.latency_ms is not None and record.latency_ms > 0
    assert record.image is not None
    assert {"format", "width", "height", "mean", "std", "mean_c0"} <= record.image.model_fields_set
    assert record.image.width == 48
    assert log.embeddings is not None
    np.testing.assert_allclose(log.embeddings, embeddings, atol=1e-4)
    for record, payload in zip(log.records, payloads, strict=True):
        assert record.image_file is not None
        assert (log_dir / record.image_file).read_bytes() == payload


def test_images_are_not_kept_unless_asked(classification_bundle: Path, tmp_path: Path) -> None:
    with serving(classification_bundle, tmp_path / "log") as client:
        client.post("/predict", files={"file": png()})
    assert not (tmp_path / "log" / "images").exists()
    assert read_prediction_log(tmp_path / "log").records[0].image_file is None
