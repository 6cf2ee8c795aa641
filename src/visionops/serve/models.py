"""The models one server serves, by name: which one a request is for, and what they all are.

Each model is a :class:`~visionops.serve.state.ServingState` of its own (session,
micro-batcher, pools, prediction log, online drift, metrics), so a slow model only fills its
own queue. :class:`ModelSet` routes ``/models/{name}/...`` and ``?model=NAME`` to one of them
(the first is the default), answers ``GET /models``, and starts and stops them together.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from visionops.errors import ServeError
from visionops.inference.bundle import Bundle
from visionops.serve.http_errors import ApiError
from visionops.serve.metrics import HttpMetrics, render_models
from visionops.serve.predict import PredictEndpoint, model_in_query, takes_options
from visionops.serve.state import ServingState

__all__ = ["ModelSet", "ServedModel"]


@dataclass(frozen=True)
class ServedModel:
    """One model to serve.

    Attributes:
        name: Its name (``/models/{name}/predict``, ``?model=``, the metrics' ``model``).
        bundle: The verified bundle.
        log_dir: Its prediction log folder or URL (None: ``<bundle>/../predictions``).
        source: Where it came from, as given (a folder, run, URL or ``wandb:`` reference).
    """

    name: str
    bundle: Bundle
    log_dir: str | Path | None = None
    source: str = ""


class ModelSet:
    """The served models by name, the first the default.

    Args:
        states: Each model's serving state, in the order given (the first is the default).

    Raises:
        ServeError: No models, or two with the same name.
    """

    def __init__(self, states: Sequence[ServingState]) -> None:
        if not states:
            raise ServeError("no model to serve — name a bundle or a run")
        self.states: dict[str, ServingState] = {}
        for state in states:
            if state.name in self.states:
                raise ServeError(
                    f"two models are named '{state.name}' ({self.states[state.name].source} and"
                    f" {state.source}) — name them: visionops serve a={state.source} ..."
                )
            self.states[state.name] = state
        self.default = states[0]
        self.endpoints = {name: PredictEndpoint(state) for name, state in self.states.items()}
        self.server_metrics: HttpMetrics = self.default.metrics if self.single else HttpMetrics()

    @property
    def single(self) -> bool:
        """One model: the server behaves (and counts) exactly as a one-bundle server."""
        return len(self.states) == 1

    @property
    def names(self) -> list[str]:
        """The models' names, the default first."""
        return list(self.states)

    def __iter__(self) -> Iterator[ServingState]:
        return iter(self.states.values())

    def get(self, name: str | None) -> ServingState:
        """The model called ``name`` (None: the default).

        Raises:
            ApiError: 404 naming the models served.
        """
        if name is None:
            return self.default
        state = self.states.get(name)
        if state is None:
            raise ApiError(
                404,
                "unknown_model",
                f"no model named '{name[:64]}' — this server serves {', '.join(self.names)}"
                " (GET /models lists them)",
            )
        return state

    def endpoint(self, name: str | None) -> PredictEndpoint:
        """The ``/predict`` endpoint of the model called ``name`` (None: the default)."""
        return self.endpoints[self.get(name).name]

    def metrics_for(self, scope: Any, name: str | None) -> HttpMetrics:
        """Where a request is counted: the model it names (path or ``?model=``), else the server.

        With one model, always its metrics (as a one-bundle server counts).
        """
        if self.single:
            return self.server_metrics
        if name is None:
            name = model_in_query(scope)
            if name is None and scope.get("path") in _DEFAULT_MODEL_PATHS:
                return self.default.metrics
        state = self.states.get(name) if name is not None else None
        return state.metrics if state is not None else self.server_metrics

    @property
    def ready(self) -> bool:
        """Every model loaded and warmed up."""
        return all(state.ready for state in self)

    def describe(self) -> dict[str, Any]:
        """``GET /models``: the default's name and each model's task, status and endpoints."""
        models = []
        for name, state in self.states.items():
            threshold, heatmap = takes_options(state)
            models.append(
                {
                    "name": name,
                    "default": state is self.default,
                    "task": state.meta.task,
                    "model_version": state.meta.model_version,
                    "status": state.status,
                    "source": state.source,
                    "labels": state.bundle.labels,
                    "options": {"top_k": True, "threshold": threshold, "heatmap": heatmap},
                    **{
                        route: f"/models/{name}/{route}"
                        for route in ("predict", "metadata", "ready", "drift")
                    },
                }
            )
        return {"default": self.default.name, "models": models}

    def render_metrics(self) -> bytes:
        """``/metrics``: with several models, every model's series labelled ``model``."""
        if self.single:
            return self.default.metrics.render()
        models: list[tuple[str, HttpMetrics]] = [(n, s.metrics) for n, s in self.states.items()]
        return render_models(self.server_metrics, models)

    async def startup(self) -> None:
        """Start every model (each loads in the background; ``/ready`` says when)."""
        for state in self:
            await state.startup()

    async def shutdown(self) -> None:
        """Stop every model: finish queued work, flush the prediction logs (side by side)."""
        await asyncio.gather(*(state.shutdown() for state in self))


_DEFAULT_MODEL_PATHS = frozenset({"/predict", "/metadata", "/drift"})
"""Paths that, without ``?model=``, are about the default model (counted in its metrics)."""
