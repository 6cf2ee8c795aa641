"""The OpenAPI document describes the model being served: its options, its answer, its auth."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from serve_helpers import colour_image, serving
from visionops.config import ServeSettings
from visionops.inference.bundle import load_bundle
from visionops.serve.app import create_app
from visionops.serve.schemas import ClassificationPredictResponse, MetadataResponse


def openapi(bundle_dir: Path, log_dir: Path, **settings: Any) -> dict[str, Any]:
    app = create_app(load_bundle(bundle_dir), ServeSettings(**settings), log_dir)
    return TestClient(app).get("/openapi.json").json()  # type: ignore[no-any-return]


def query_names(operation: dict[str, Any]) -> list[str]:
    return [p["name"] for p in operation.get("parameters", []) if p["in"] == "query"]


def ok_schema(operation: dict[str, Any]) -> str:
    return str(operation["responses"]["200"]["content"]["application/json"]["schema"]["$ref"])


def test_classification_without_a_key(classification_bundle: Path, tmp_path: Path) -> None:
    document = openapi(classification_bundle, tmp_path)
    predict = document["paths"]["/predict"]["post"]
    assert query_names(predict) == ["top_k"]  # no threshold, no heatmap
    assert ok_schema(predict).endswith("/ClassificationPredictResponse")
    assert "401" not in predict["responses"]
    assert {"408", "413", "415", "422", "503", "504"} <= set(predict["responses"])
    assert "securitySchemes" not in document.get("components", {})
    assert all("security" not in op for path in document["paths"].values() for op in path.values())
    prediction = document["components"]["schemas"]["ClassificationPrediction"]
    assert set(prediction["required"]) == {"file", "label", "probability", "top_k"}
    assert prediction["additionalProperties"] is False
    metadata = document["paths"]["/metadata"]["get"]
    assert ok_schema(metadata).endswith("/MetadataResponse")


def test_a_classifier_without_a_map_says_why_in_openapi_metadata_and_422(
    classification_bundle: Path, tmp_path: Path
) -> None:
    predict = openapi(classification_bundle, tmp_path)["paths"]["/predict"]["post"]
    assert "heatmap" not in query_names(predict)
    assert "No `heatmap` option: backbone.layer4's map is 1x1 at 32 px" in predict["description"]
    with serving(classification_bundle, tmp_path) as client:
        support = client.get("/metadata").json()["heatmap"]
        assert support["available"] is False and support["kind"] is None
        assert "1x1 at 32 px" in support["detail"]
        refused = client.post(
            "/predict?heatmap=true", files={"file": ("a.png", colour_image("red"), "image/png")}
        )
        assert refused.status_code == 422
        assert "class activation map" in refused.json()["error"]["message"]
        assert "1x1 at 32 px" in refused.json()["error"]["message"]


def test_multilabel_with_a_key(multilabel_bundle: Path, tmp_path: Path) -> None:
    document = openapi(multilabel_bundle, tmp_path, api_key="k")
    predict = document["paths"]["/predict"]["post"]
    assert query_names(predict) == ["top_k", "threshold"]
    assert ok_schema(predict).endswith("/MultilabelPredictResponse")
    assert "401" in predict["responses"]
    schemes = document["components"]["securitySchemes"]
    assert {s["type"] for s in schemes.values()} == {"apiKey", "http"}
    assert predict["security"]
    assert document["paths"]["/metadata"]["get"]["security"]
    for public in ("/health", "/ready", "/metrics"):
        assert "security" not in document["paths"][public]["get"]


def test_regression_takes_neither_option(regression_bundle: Path, tmp_path: Path) -> None:
    document = openapi(regression_bundle, tmp_path)
    predict = document["paths"]["/predict"]["post"]
    assert query_names(predict) == ["top_k"]
    assert ok_schema(predict).endswith("/RegressionPredictResponse")
    named = document["components"]["schemas"]["NamedValue"]
    assert set(named["properties"]) == {"name", "value", "unit"}


def test_answers_match_their_declared_models(classification_bundle: Path, tmp_path: Path) -> None:
    with serving(classification_bundle, tmp_path) as client:
        predicted = client.post(
            "/predict", files={"file": ("a.png", colour_image("green"), "image/png")}
        )
        metadata = client.get("/metadata")
        ready = client.get("/ready").json()
        health = client.get("/health").json()
    # Strict models (extra fields forbidden): the answers are exactly what the document says.
    answer = ClassificationPredictResponse.model_validate(predicted.json())
    assert answer.predictions[0].label == "green"
    assert predicted.headers["content-type"] == "application/json"
    described = MetadataResponse.model_validate(metadata.json())
    assert described.server.execution_providers == ["CPUExecutionProvider"]
    assert ready == {"status": "ready", "model_version": described.model_version}
    assert health == {"status": "ok"}


def test_options_a_task_does_not_take_are_refused_by_name(
    regression_bundle: Path, tmp_path: Path
) -> None:
    files = {"file": ("d.png", colour_image(), "image/png")}
    with serving(regression_bundle, tmp_path) as client:
        threshold = client.post("/predict", files=files, params={"threshold": "abc"})
        heatmap_off = client.post("/predict", files=files, params={"heatmap": "false"})
    assert threshold.status_code == 422
    message = threshold.json()["error"]["message"]
    assert message.startswith("'threshold' applies to")  # not "abc is not a number"
    assert "this one is regression" in message
    assert heatmap_off.status_code == 200  # asking for nothing is not an error
