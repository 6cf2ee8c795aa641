"""The FastAPI app that serves one bundle: a small factory over the routes and the state.

:mod:`~visionops.serve.routes` declares the endpoints, :mod:`~visionops.serve.state` owns
the model session, batcher and prediction log, :mod:`~visionops.serve.http_errors` turns
every failure into one JSON error shape. The event loop only parses HTTP and moves bytes, so
``/health``, ``/ready`` and ``/metrics`` answer at once however busy the model is. Never
imports torch.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI

from visionops import __version__
from visionops.config import DriftSettings, ServeSettings
from visionops.inference.bundle import Bundle
from visionops.serve.http_errors import ApiError, InternalErrorMiddleware, install_error_handlers
from visionops.serve.metrics import MetricsMiddleware
from visionops.serve.models import ModelSet, ServedModel
from visionops.serve.predict import PredictShortcut
from visionops.serve.routes import build_router
from visionops.serve.sources import model_name
from visionops.serve.state import ServingState, default_log_dir

__all__ = [
    "API_KEY_ENV",
    "ApiError",
    "ServedModel",
    "ServingState",
    "create_app",
    "create_models_app",
    "default_log_dir",
]

API_KEY_ENV = "VISIONOPS_API_KEY"


def create_app(
    bundle: Bundle,
    settings: ServeSettings,
    log_dir: str | Path | None = None,
    *,
    decode_threads: int | None = None,
    device: str = "auto",
    drift: DriftSettings | None = None,
) -> FastAPI:
    """Build the serving app for one bundle.

    The model loads and warms up in the background once the app starts (``/ready`` answers
    503 until then); shutdown finishes queued work and flushes the prediction log.

    Args:
        bundle: A bundle from :func:`visionops.inference.bundle.load_bundle`.
        settings: Server settings (batching, limits, API key, ...).
        log_dir: Prediction log folder or URL; None means ``<bundle>/../predictions``.
        decode_threads: Threads that decode uploads (None: one per core; 0: on the event
            loop, for measurements only).
        device: ``--device`` (``auto`` serves on the CPU; ``cuda`` re-checks the bundle's
            parity on the GPU at load; see
            :func:`visionops.inference.runtime.execution_providers`).
        drift: Online drift settings (``drift.window``, ``drift.every``; None: defaults).

    Returns:
        The FastAPI app; ``app.state.serving`` is its :class:`ServingState`.

    Raises:
        DeviceError: A device that cannot serve the bundle with checked answers.

    Examples:
        >>> bundle = load_bundle(Path("runs/run-001/bundle"))  # doctest: +SKIP
        >>> app = create_app(bundle, ServeSettings())  # doctest: +SKIP
        >>> uvicorn.run(app, port=8000)  # doctest: +SKIP
    """
    served = ServedModel(model_name(str(bundle.path)), bundle, log_dir, str(bundle.path))
    return create_models_app(
        [served], settings, decode_threads=decode_threads, device=device, drift=drift
    )


def create_models_app(
    models: Sequence[ServedModel],
    settings: ServeSettings,
    *,
    decode_threads: int | None = None,
    device: str = "auto",
    drift: DriftSettings | None = None,
) -> FastAPI:
    """Build the serving app for one or several models, the first the default.

    Each model gets its own session, micro-batcher, prediction log and online drift, and
    ``1/len(models)`` of the CPU budget (:func:`~visionops.serve.state.compute_plan`).
    With one model the app is exactly :func:`create_app`'s.

    Args:
        models: The models, by name (unique), the default first.
        settings: Server settings (batching, limits, API key, ...), shared by the models.
        decode_threads: Threads that decode each model's uploads (None: its share of the
            cores; 0: on the event loop, for measurements only).
        device: ``--device``.
        drift: Online drift settings (None: defaults).

    Returns:
        The FastAPI app; ``app.state.models`` is its :class:`ModelSet`, ``app.state.serving``
        the default model's :class:`ServingState`.

    Raises:
        DeviceError: A device that cannot serve a bundle with checked answers.
        ServeError: No models, or two with the same name.
    """
    states = [
        ServingState(
            model.bundle,
            settings,
            model.log_dir,
            decode_threads,
            device,
            drift,
            name=model.name,
            source=model.source,
            models=len(models),
        )
        for model in models
    ]
    served = ModelSet(states)
    default = served.default

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await served.startup()
        try:
            yield
        finally:
            await served.shutdown()

    if served.single:
        summary = f"{default.bundle.task} model {default.bundle.model_version}"
    else:
        summary = "models " + ", ".join(f"{s.name} ({s.meta.task})" for s in served)
    app = FastAPI(
        title="visionops",
        version=__version__,
        summary=summary,
        description=(
            "Predictions from a visionops bundle. `POST /predict` takes one or more images"
            " (multipart `file` fields, or JSON with base64); `GET /` is a page for the camera"
            " and uploads."
            + (
                ""
                if served.single
                else " Several models: `GET /models` lists them; `POST /models/{name}/predict`"
                f" or `POST /predict?model=NAME` chooses one (default: {default.name})."
            )
        ),
        lifespan=lifespan,
        redoc_url=None,
    )
    app.state.serving = default
    app.state.models = served
    server_metrics = served.server_metrics
    install_error_handlers(app, server_metrics)
    # Added last = outermost: the metrics see the 500 that the error middleware answers, and
    # both wrap the /predict shortcut (innermost: the hot path skips only FastAPI's layers).
    app.add_middleware(PredictShortcut, router=served)
    app.add_middleware(InternalErrorMiddleware, metrics=server_metrics, scrub=default.scrub)
    app.add_middleware(
        MetricsMiddleware,
        metrics=server_metrics,
        pick=None if served.single else served.metrics_for,
    )
    app.include_router(build_router(served))
    return app
