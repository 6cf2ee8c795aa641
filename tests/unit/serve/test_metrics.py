"""Prometheus metrics: the per-app registry and the ASGI middleware that counts requests."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from visionops.artifacts import BundleInput, BundleMeta
from visionops.serve.metrics import MetricsMiddleware, ServeMetrics

META = BundleMeta(
    task="classification",
    model_version="run-7@cafe0123",
    input=BundleInput(size=32, channels=3, max_image_pixels=1_000_000),
    outputs={"main": "probabilities", "embedding": "embedding"},
    class_names=["cat", "dog"],
    training_data_fingerprint="f" * 64,
)


def value(metrics: ServeMetrics, line_start: str) -> float:
    for line in metrics.render().decode().splitlines():
        if line.startswith(line_start + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{line_start} not exported")


def call(middleware: MetricsMiddleware, path: str) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        sent.append(dict(message))

    scope = {"type": "http", "path": path, "method": "GET", "headers": []}
    asyncio.run(middleware(scope, receive, send))
    return sent


def responding(status: int) -> Any:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b"x"})

    return app


def test_requests_are_counted_by_endpoint_and_status() -> None:
    metrics = ServeMetrics(META)
    ok = MetricsMiddleware(responding(200), metrics)
    missing = MetricsMiddleware(responding(404), metrics)
    call(ok, "/predict")
    call(ok, "/predict")
    for probe in ("/admin", "/wp-login.php", "/x/y/z"):
        call(missing, probe)
    assert value(metrics, 'visionops_requests_total{endpoint="/predict",status="200"}') == 2
    # A scanner's random paths share one series instead of creating one each.
    assert value(metrics, 'visionops_requests_total{endpoint="other",status="404"}') == 3
    assert value(metrics, 'visionops_request_latency_seconds_count{endpoint="/predict"}') == 2
    assert value(metrics, "visionops_in_flight_requests") == 0


def test_a_crashing_app_counts_as_500_and_leaves_nothing_in_flight() -> None:
    async def crash(scope: Any, receive: Any, send: Any) -> None:
        raise RuntimeError("boom")

    metrics = ServeMetrics(META)
    with pytest.raises(RuntimeError):
        call(MetricsMiddleware(crash, metrics), "/predict")
    assert value(metrics, 'visionops_requests_total{endpoint="/predict",status="500"}') == 1
    assert value(metrics, "visionops_in_flight_requests") == 0


def test_model_info_batches_and_no_created_series() -> None:
    metrics = ServeMetrics(META)
    metrics.set_model_info(META, ["CPUExecutionProvider"], "int8")
    metrics.observe_batch(3, 0.02)
    metrics.observe_batch(8, 0.04)
    text = metrics.render().decode()
    info = next(line for line in text.splitlines() if line.startswith("visionops_model_info{"))
    for label in (
        'task="classification"',
        'model_version="run-7@cafe0123"',
        'input_size="32"',
        'labels="2"',
        'precision="int8"',
        'onnxruntime_providers="CPUExecutionProvider"',
        f'training_data_fingerprint="{"f" * 64}"',
    ):
        assert label in info
    assert value(metrics, "visionops_batch_size_count") == 2
    assert value(metrics, "visionops_batch_size_sum") == 11
    assert value(metrics, 'visionops_batch_size_bucket{le="3.0"}') == 1
    assert value(metrics, "visionops_compute_latency_seconds_sum") == pytest.approx(0.06)
    assert "_created" not in text


def test_each_app_has_its_own_registry() -> None:
    first, second = ServeMetrics(META), ServeMetrics(META)
    first.errors.labels("queue_full").inc()
    assert value(first, 'visionops_errors_total{kind="queue_full"}') == 1
    assert 'kind="queue_full"' not in second.render().decode()
