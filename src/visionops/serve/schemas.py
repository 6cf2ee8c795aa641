"""What the server answers, as pydantic models the routes declare (so ``/openapi.json`` is exact).

Every model forbids fields it does not name: an answer that drifts from its schema fails the
test suite instead of reaching clients undocumented. ``/predict`` declares the response model
of the served bundle's task only (:func:`predict_response_model`), so the document describes
the model being served.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "AnomalyPredictResponse",
    "AnomalyPrediction",
    "ClassificationPredictResponse",
    "ClassificationPrediction",
    "ErrorBody",
    "ErrorResponse",
    "HealthResponse",
    "Heatmap",
    "HeatmapSupport",
    "InputSpec",
    "LabelProbability",
    "MetadataResponse",
    "MultilabelPredictResponse",
    "MultilabelPrediction",
    "NamedValue",
    "PredictJSON",
    "PredictQuery",
    "PredictQueryAll",
    "PredictQueryHeatmap",
    "PredictQueryThreshold",
    "PredictResponse",
    "ReadyResponse",
    "RegressionPredictResponse",
    "RegressionPrediction",
    "ServerInfo",
    "Timing",
    "predict_query_model",
    "predict_response_model",
]


class _Schema(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ------------------------------------------------------------------ errors


class ErrorBody(_Schema):
    """What went wrong."""

    status: int
    kind: str = Field(description="Machine-readable cause, e.g. unsupported_media_type.")
    message: str = Field(description="What is wrong and what to do about it.")


class ErrorResponse(_Schema):
    """Every error response has this shape."""

    error: ErrorBody
    request_id: str | None = None


# ------------------------------------------------------------------ operations


class HealthResponse(_Schema):
    """Liveness: the process answers."""

    status: Literal["ok"] = "ok"


class ReadyResponse(_Schema):
    """Readiness: ``ready`` with the model version, or why not (``loading``, ``failed``, ...)."""

    status: str
    model_version: str | None = None
    reason: str | None = Field(None, description="Why the model could not be loaded.")
    models: dict[str, ReadyResponse] | None = Field(
        None, description="Several models: each one's readiness, by name."
    )


# ------------------------------------------------------------------ metadata


class InputSpec(_Schema):
    """What the model takes: every upload is decoded and resized to this."""

    size: int
    channels: int
    layout: str
    resize: str
    dtype: str


class ServerInfo(_Schema):
    """How this server runs the model and what it accepts."""

    visionops: str
    ready: bool
    precision: str | None = Field(description="fp32 or int8; null until the model is loaded.")
    execution_providers: list[str] = Field(description="ONNX Runtime providers in use.")
    max_batch: int
    max_wait_ms: float
    queue_size: int
    timeout_s: float
    max_upload_mb: float
    max_files_per_request: int
    max_image_pixels: int
    auth_required: bool


class HeatmapSupport(_Schema):
    """Whether ``heatmap=true`` gives a map with this model, which one, or why not."""

    available: bool
    kind: Literal["anomaly_map", "class_activation_map"] | None = Field(
        description="anomaly_map: patch distances; class_activation_map: where the top class's"
        " evidence lies (backbones with global pooling and a linear head)."
    )
    detail: str = Field(description="Where the map comes from, or why this model has none.")


class MetadataResponse(_Schema):
    """Task, labels, input size, version, thresholds and server limits."""

    task: str
    model_version: str
    labels: list[str]
    target_units: list[str] | None
    input: InputSpec
    thresholds: list[float] | float | None = Field(
        description="Multilabel: one per label; anomaly: the score threshold; else null."
    )
    default_top_k: int
    heatmap: HeatmapSupport
    metrics: dict[str, float | None]
    training_data_fingerprint: str | None
    created_at: str | None
    versions: dict[str, str]
    server: ServerInfo


# ------------------------------------------------------------------ predictions


class Timing(_Schema):
    """Where the request's time went, in milliseconds."""

    total_ms: float
    queue_ms: float = Field(description="Longest wait of the request's images for a batch.")
    compute_ms: float = Field(description="Longest model call the request's images ran in.")
    batch_size: int = Field(description="Largest batch the request's images ran in.")


class LabelProbability(_Schema):
    """A label and its probability."""

    label: str
    probability: float


class _Prediction(_Schema):
    file: str = Field(description="The upload's file name (or its place in the JSON body).")


class ClassificationPrediction(_Prediction):
    """One image's answer from a classification model."""

    label: str = Field(description="The most probable class.")
    probability: float
    top_k: list[LabelProbability] = Field(description="The most probable classes, best first.")
    heatmap: Heatmap | None = Field(
        None, description="Only when asked with heatmap=true: the top class's activation map."
    )


class MultilabelPrediction(_Prediction):
    """One image's answer from a multi-label model."""

    labels: list[LabelProbability] = Field(description="Labels at or over their threshold.")
    probabilities: dict[str, float] = Field(description="Every label's probability.")
    thresholds: dict[str, float] = Field(description="The threshold each label was held to.")
    heatmap: Heatmap | None = Field(
        None,
        description="Only when asked with heatmap=true: the most probable label's activation map.",
    )


class NamedValue(_Schema):
    """One regression target."""

    name: str
    value: float | None = Field(description="In the target's unit; null if not finite.")
    unit: str


class RegressionPrediction(_Prediction):
    """One image's answer from a regression model."""

    values: list[NamedValue]


class Heatmap(_Schema):
    """A map as PNGs at the model's input size: the anomaly map, or a class activation map."""

    width: int
    height: int
    min: float = Field(
        description="Smallest value in the map (anomaly: a patch distance; class activation"
        " map: 0..1, already stretched in the model)."
    )
    max: float = Field(description="Largest value in the map.")
    png_base64: str = Field(description="8-bit greyscale, min..max stretched to 0..255.")
    overlay_png_base64: str | None = Field(
        None,
        description="The map in colour over the model-sized image; anomaly colours on the"
        " threshold's scale (mid-ramp at the threshold, brightest at twice it), class"
        " activation maps from 0 to 1.",
    )
    label: str | None = Field(
        None, description="The class the map explains (class activation maps: the top class)."
    )


class AnomalyPrediction(_Prediction):
    """One image's answer from an anomaly-detection model."""

    score: float
    threshold: float
    is_anomaly: bool
    verdict: Literal["good", "defect"]
    heatmap: Heatmap | None = Field(None, description="Only when asked with heatmap=true.")


class PredictResponse(_Schema):
    """The answer to ``POST /predict``: one prediction per uploaded image, in order."""

    request_id: str
    model_version: str
    task: str
    predictions: list[dict[str, Any]]
    timing: Timing


class ClassificationPredictResponse(PredictResponse):
    """``POST /predict`` of a classification model."""

    predictions: list[ClassificationPrediction]  # type: ignore[assignment]


class MultilabelPredictResponse(PredictResponse):
    """``POST /predict`` of a multilabel model."""

    predictions: list[MultilabelPrediction]  # type: ignore[assignment]


class RegressionPredictResponse(PredictResponse):
    """``POST /predict`` of a regression model."""

    predictions: list[RegressionPrediction]  # type: ignore[assignment]


class AnomalyPredictResponse(PredictResponse):
    """``POST /predict`` of a anomaly model."""

    predictions: list[AnomalyPrediction]  # type: ignore[assignment]


_RESPONSES: dict[str, type[PredictResponse]] = {
    "classification": ClassificationPredictResponse,
    "multilabel": MultilabelPredictResponse,
    "regression": RegressionPredictResponse,
    "anomaly": AnomalyPredictResponse,
}


def predict_response_model(task: str) -> type[PredictResponse]:
    """The ``/predict`` response model of ``task``.

    A task without its own model gets :class:`PredictResponse`, whose predictions are objects.
    """
    return _RESPONSES.get(task, PredictResponse)


class PredictJSON(_Schema):
    """JSON body for clients without multipart: base64 images (a ``data:`` URL prefix is ok)."""

    image: str | None = Field(None, description="One base64-encoded image file.")
    images: list[str] | None = Field(
        None, description="Several, predicted as one batch.", max_length=64
    )


# ------------------------------------------------------------------ /predict's query options
# Not strict: a name the task does not take is ignored here and refused by name elsewhere
# (``'threshold' applies to ...``), so the client learns why rather than "extra field".


_HEATMAP_OPTION = (
    "Return the heatmap as PNGs: the anomaly map, or the top class's activation map"
    " (GET /metadata says which)."
)


class PredictQuery(BaseModel):
    """``/predict``'s query options for a task that takes neither threshold nor heatmap."""

    top_k: int | None = Field(
        None, ge=1, le=1000, description="Labels to return (default: the server's)."
    )


class PredictQueryThreshold(PredictQuery):
    """``top_k`` and ``threshold`` (multilabel)."""

    threshold: float | None = Field(
        None, ge=0.0, le=1.0e9, description="One threshold for every label, or the anomaly score's."
    )


class PredictQueryHeatmap(PredictQuery):
    """``top_k`` and ``heatmap``."""

    heatmap: bool = Field(False, description=_HEATMAP_OPTION)


class PredictQueryAll(PredictQueryThreshold):
    """``top_k``, ``threshold`` and ``heatmap`` (anomaly detection)."""

    heatmap: bool = Field(False, description=_HEATMAP_OPTION)


_QUERIES: dict[tuple[bool, bool], type[PredictQuery]] = {
    (False, False): PredictQuery,
    (True, False): PredictQueryThreshold,
    (False, True): PredictQueryHeatmap,
    (True, True): PredictQueryAll,
}


def predict_query_model(threshold: bool, heatmap: bool) -> type[PredictQuery]:
    """The query options ``/predict`` takes for a task that does (or not) take each option.

    Args:
        threshold: The task takes ``threshold``.
        heatmap: The task takes ``heatmap``.

    Returns:
        The model that both documents the options (OpenAPI) and validates them.
    """
    return _QUERIES[(threshold, heatmap)]
