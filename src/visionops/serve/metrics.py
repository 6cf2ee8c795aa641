"""Prometheus metrics of one app, in its own registry (tests build several apps per process).

Exported series::

    visionops_requests_total{endpoint,status}          every HTTP request
    visionops_request_latency_seconds{endpoint}        wall time per request
    visionops_queue_latency_seconds                    submission -> batch start, per image
    visionops_compute_latency_seconds                  model call, per batch
    visionops_batch_size                               images per model call
    visionops_queue_depth                              images waiting for a batch
    visionops_in_flight_requests                       requests being handled
    visionops_errors_total{kind}                       refused or failed requests, by cause
    visionops_predictions_total{label}                 predicted labels (top-1, labels over
                                                       threshold, or anomaly verdict)
    visionops_model_info{task,model_version,...}       1, labelled with the bundle's identity
    visionops_image_statistics_probability             chance an upload's drift statistics are
                                                       measured (drift.statistics_cpu_share)
    visionops_image_statistics_uploads_total{measured} uploads with and without them
    visionops_image_statistics_cpu_seconds             their mean CPU time per measured upload

Several models in one server (``visionops serve runs/a runs/b``): every series of a model
carries ``model="<name>"``; requests that concern no model (``/health``, ``/models``,
``/metrics``, ``/docs``) are counted without it (:class:`HttpMetrics`, :func:`render_models`).

With a log URL (``--log-dir s3://...``), as of the uploader's last pass::

    visionops_log_upload_pending_bytes                 written locally, not in the bucket yet
    visionops_log_upload_pending_segments              segments waiting (the open one included)
    visionops_log_upload_failures_total                upload attempts that failed
    visionops_log_uploaded_segments_total              segments uploaded by this process
    visionops_log_uploaded_bytes_total                 their bytes
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from typing import Any

import prometheus_client
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from visionops.artifacts import BundleMeta
from visionops.inference.budget import BudgetStatus
from visionops.inference.predlog import UploadStatus

__all__ = [
    "KNOWN_ENDPOINTS",
    "HttpMetrics",
    "MetricsMiddleware",
    "ServeMetrics",
    "render_models",
    "route_of",
    "watch_log_uploads",
    "watch_statistics",
]

KNOWN_ENDPOINTS = frozenset(
    {
        "/",
        "/health",
        "/ready",
        "/metadata",
        "/predict",
        "/metrics",
        "/drift",
        "/models",
        "/docs",
        "/openapi.json",
    }
)
"""Paths counted under their own name; anything else is counted as ``other`` so that a
scanner probing random URLs cannot blow up the number of series."""

_LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75,
    1.0, 2.5, 5.0, 7.5, 10.0, 30.0,
)  # fmt: skip
_BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class HttpMetrics:
    """The HTTP series: requests, their latency, requests in flight, errors by cause.

    A server with several models keeps one of these for the requests that concern no model
    (each model's :class:`ServeMetrics` counts its own).
    """

    def __init__(self) -> None:
        # The *_created series double the output and no dashboard uses them.
        prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = CollectorRegistry(auto_describe=True)
        registry = self.registry
        self.requests = Counter(
            "visionops_requests",
            "HTTP requests by endpoint and status code.",
            ["endpoint", "status"],
            registry=registry,
        )
        self.latency = Histogram(
            "visionops_request_latency_seconds",
            "Wall time from request start to response end.",
            ["endpoint"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.in_flight = Gauge(
            "visionops_in_flight_requests", "Requests being handled.", registry=registry
        )
        # Touched only on the event loop, so a plain int needs no lock; read at scrape time.
        self.in_flight_count = 0
        self.in_flight.set_function(lambda: self.in_flight_count)
        # labels() takes the metric's lock and builds a key; look each child up once.
        self._request_children: dict[tuple[str, int], tuple[Any, Any]] = {}
        self.errors = Counter(
            "visionops_errors",
            "Refused or failed requests by cause.",
            ["kind"],
            registry=registry,
        )

    def observe_request(self, endpoint: str, status: int, seconds: float) -> None:
        """Count one finished HTTP request and its latency."""
        key = (endpoint, status)
        children = self._request_children.get(key)
        if children is None:
            children = self._request_children[key] = (
                self.requests.labels(endpoint, str(status)),
                self.latency.labels(endpoint),
            )
        children[0].inc()
        children[1].observe(seconds)

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)


class ServeMetrics(HttpMetrics):
    """Every metric of one served model (and, with one model, of the whole app).

    Args:
        meta: The served bundle's metadata (for ``visionops_model_info``).
        providers: ONNX Runtime execution providers in use.
    """

    def __init__(self, meta: BundleMeta, providers: list[str] | None = None) -> None:
        super().__init__()
        registry = self.registry
        self.queue_latency = Histogram(
            "visionops_queue_latency_seconds",
            "Time an image waited between submission and the start of its batch.",
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.compute_latency = Histogram(
            "visionops_compute_latency_seconds",
            "Time of one model call (a whole batch), post-processing and logging included.",
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.batch_size = Histogram(
            "visionops_batch_size",
            "Images per model call.",
            buckets=_BATCH_BUCKETS,
            registry=registry,
        )
        self.queue_depth = Gauge(
            "visionops_queue_depth", "Images waiting for a batch.", registry=registry
        )
        self._prediction_children: dict[str, Any] = {}
        self.predictions = Counter(
            "visionops_predictions",
            "Predicted labels (classification top-1, multilabel labels over threshold, anomaly"
            " verdict).",
            ["label"],
            registry=registry,
        )
        self.model_info = Info("visionops_model", "The served bundle.", registry=registry)
        self.set_model_info(meta, providers or [], "")

    def set_model_info(self, meta: BundleMeta, providers: list[str], precision: str) -> None:
        """Label ``visionops_model_info`` with the bundle's identity and how it runs."""
        self.model_info.info(
            {
                "task": meta.task,
                "model_version": meta.model_version,
                "input_size": str(meta.input.size),
                "labels": str(len(meta.labels)),
                "training_data_fingerprint": meta.training_data_fingerprint or "",
                "onnxruntime_providers": ",".join(providers),
                "precision": precision,
            }
        )

    def count_prediction(self, label: str) -> None:
        """Count one predicted label (the labelled child is looked up once per label)."""
        child = self._prediction_children.get(label)
        if child is None:
            child = self._prediction_children[label] = self.predictions.labels(label)
        child.inc()

    def observe_batch(self, batch_size: int, compute_s: float) -> None:
        """Record one model call."""
        self.batch_size.observe(batch_size)
        self.compute_latency.observe(compute_s)


class _UploadCollector(Collector):
    """The prediction-log uploader's counters, read from it at scrape time (no copy to sync)."""

    def __init__(self, status: Callable[[], UploadStatus | None]) -> None:
        self.status = status

    def collect(self) -> Iterator[Metric]:
        status = self.status()
        if status is None:
            return
        yield GaugeMetricFamily(
            "visionops_log_upload_pending_bytes",
            "Prediction-log bytes written locally and not in the log URL yet.",
            value=status.pending_bytes,
        )
        yield GaugeMetricFamily(
            "visionops_log_upload_pending_segments",
            "Prediction-log segments waiting for upload (the open one included).",
            value=status.pending_segments,
        )
        yield CounterMetricFamily(
            "visionops_log_upload_failures",
            "Prediction-log upload attempts that failed (retried with back-off).",
            value=status.failures,
        )
        yield CounterMetricFamily(
            "visionops_log_uploaded_segments",
            "Prediction-log segments uploaded to the log URL.",
            value=status.uploaded_segments,
        )
        yield CounterMetricFamily(
            "visionops_log_uploaded_bytes",
            "Bytes of the prediction-log segments uploaded (embeddings and images included).",
            value=status.uploaded_bytes,
        )


def watch_log_uploads(metrics: ServeMetrics, status: Callable[[], UploadStatus | None]) -> None:
    """Export the prediction-log uploader's counters (nothing while ``status`` gives None)."""
    metrics.registry.register(_UploadCollector(status))


class _StatisticsCollector(Collector):
    """How many uploads the image statistics' CPU budget measured, read at scrape time."""

    def __init__(self, status: Callable[[], BudgetStatus]) -> None:
        self.status = status

    def collect(self) -> Iterator[Metric]:
        status = self.status()
        yield GaugeMetricFamily(
            "visionops_image_statistics_probability",
            "Chance that an upload's image statistics (the drift input) are measured: 1 while"
            " their cost fits drift.statistics_cpu_share, a random share above it.",
            value=status.probability,
        )
        family = CounterMetricFamily(
            "visionops_image_statistics_uploads",
            "Uploads by whether their image statistics were measured.",
            labels=["measured"],
        )
        family.add_metric(["true"], status.admitted)
        family.add_metric(["false"], status.skipped)
        yield family
        if status.cost_ms is not None:
            yield GaugeMetricFamily(
                "visionops_image_statistics_cpu_seconds",
                "Mean CPU time of one upload's image statistics, recent uploads weighted most.",
                value=status.cost_ms / 1000.0,
            )


def watch_statistics(metrics: ServeMetrics, status: Callable[[], BudgetStatus]) -> None:
    """Export the image statistics' sampling (``visionops_image_statistics_*``)."""
    metrics.registry.register(_StatisticsCollector(status))


def route_of(path: str) -> tuple[str, str | None]:
    """The endpoint a path is counted under, and the model it names (``/models/{name}/...``).

    ``/models/a/predict`` is counted as ``/predict`` of model ``a``; an unknown path is
    ``other``, so that a scanner probing random URLs cannot blow up the number of series.
    """
    if path in KNOWN_ENDPOINTS:
        return path, None
    if path.startswith("/models/"):
        _, _, name, *rest = path.split("/")
        if len(rest) == 1 and f"/{rest[0]}" in KNOWN_ENDPOINTS and rest[0] != "models":
            return f"/{rest[0]}", name
    return "other", None


class MetricsMiddleware:
    """Pure ASGI middleware counting requests and timing them (cheaper than BaseHTTPMiddleware).

    Args:
        app: The wrapped ASGI app.
        metrics: Where to record.
        pick: With several models: the metrics a request is counted in, from its scope
            (the model it names, else ``metrics``); None: always ``metrics``.
    """

    def __init__(
        self,
        app: ASGIApp,
        metrics: HttpMetrics,
        pick: Callable[[Scope, str | None], HttpMetrics] | None = None,
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.pick = pick

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one ASGI call."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = str(scope.get("path", ""))
        endpoint, model = route_of(path)
        metrics = self.metrics if self.pick is None else self.pick(scope, model)
        status = 500
        started = time.perf_counter()

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        metrics.in_flight_count += 1
        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            metrics.in_flight_count -= 1
            metrics.observe_request(endpoint, status, time.perf_counter() - started)


class _ModelLabelled(Collector):
    """Several registries as one: each model's series labelled ``model="<name>"``.

    Families of the same name are merged into one (the exposition format allows a family
    once), so ``visionops_requests_total`` lists the server's requests and every model's.
    """

    def __init__(self, registries: list[tuple[str | None, CollectorRegistry]]) -> None:
        self.registries = registries

    def collect(self) -> Iterator[Metric]:
        merged: dict[str, Metric] = {}
        for name, registry in self.registries:
            for family in registry.collect():
                target = merged.get(family.name)
                if target is None:
                    target = merged[family.name] = Metric(
                        family.name, family.documentation, family.type, family.unit
                    )
                for sample in family.samples:
                    labels = sample.labels if name is None else {**sample.labels, "model": name}
                    target.add_sample(
                        sample.name, labels, sample.value, sample.timestamp, sample.exemplar
                    )
        yield from merged.values()


def render_models(server: HttpMetrics, models: list[tuple[str, HttpMetrics]]) -> bytes:
    """The exposition of a server with several models: each model's series labelled by it.

    Args:
        server: The requests that concern no model (unlabelled).
        models: ``(name, metrics)`` of every served model.
    """
    registry = CollectorRegistry(auto_describe=False)
    registry.register(
        _ModelLabelled([(None, server.registry), *((name, m.registry) for name, m in models)])
    )
    return generate_latest(registry)
