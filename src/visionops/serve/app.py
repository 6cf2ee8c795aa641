"""The FastAPI app that serves one bundle: a small factory over the routes and the state.

:mod:`~visionops.serve.routes` declares the endpoints, :mod:`~visionops.serve.state` owns
the model session, batcher and prediction log, :mod:`~visionops.serve.http_errors` turns
every failure into one JSON error shape. The event loop only parses HTTP and moves bytes, so
``/health``, ``/ready`` and ``/metrics`` answer at once however busy the model is. Never
imports torch.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI

from visionops import __version__
from visionops.config import DriftSettings, ServeSettings
from visionops.inference.bundle import Bundle
from visionops.serve.http_errors import ApiError, InternalErrorMiddleware, install_error_handlers
from visionops.serve.metrics import MetricsMiddleware
from visionops.serve.predict import PredictEndpoint, PredictShortcut
from visionops.serve.routes import build_router
from visionops.serve.state import ServingState, default_log_dir

__all__ = ["API_KEY_ENV", "ApiError", "ServingState", "create_app", "default_log_dir"]

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
    state = ServingState(bundle, settings, log_dir, decode_threads, device, drift)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await state.startup()
        try:
            yield
        finally:
            await state.shutdown()

    app = FastAPI(
        title="visionops",
        version=__version__,
        summary=f"{bundle.task} model {bundle.model_version}",
        description=(
            "Predictions from a visionops bundle. `POST /predict` takes one or more images"
            " (multipart `file` fields, or JSON with base64); `GET /` is a page for the camera"
            " and uploads."
        ),
        lifespan=lifespan,
        redoc_url=None,
    )
    app.state.serving = state
    install_error_handlers(app, state.metrics)
    predict = PredictEndpoint(state)
    # Added last = outermost: the metrics see the 500 that the error middleware answers, and
    # both wrap the /predict shortcut (innermost: the hot path skips only FastAPI's layers).
    app.add_middleware(PredictShortcut, endpoint=predict)
    app.add_middleware(InternalErrorMiddleware, metrics=state.metrics, scrub=state.scrub)
    app.add_middleware(MetricsMiddleware, metrics=state.metrics)
    app.include_router(build_router(state, predict))
    return app
