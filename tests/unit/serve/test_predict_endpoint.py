"""``POST /predict`` as a plain endpoint: raw image bodies, and the rules FastAPI used to apply.

The endpoint validates its options, reads the API key and answers errors itself (no FastAPI
dependencies on the hot path); these tests pin that it still does what the declared
OpenAPI operation says, and that a raw image body is one more way in, not a different answer.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from serve_helpers import colour_image, expected_outputs, png_bomb, serving
from visionops.config import ServeSettings
from visionops.inference.predlog import read_prediction_log
from visionops.inference.runtime import available_cores
from visionops.serve.schemas import ClassificationPredictResponse
from visionops.serve.state import compute_plan

CLASSES = ["red", "green", "blue", "yellow"]


def test_a_raw_image_body_is_answered_like_the_same_file_in_multipart(
    classification_bundle: Path, tmp_path: Path
) -> None:
    payload = colour_image("blue", size=(60, 44), fmt="JPEG")
    probabilities, _ = expected_outputs(classification_bundle, [payload])
    with serving(classification_bundle, tmp_path / "log") as client:
        raw = client.post(
            "/predict",
            content=payload,
            headers={"Content-Type": "image/jpeg", "X-Request-ID": "raw-1"},
            params={"top_k": 2},
        )
        octet = client.post(
            "/predict", content=payload, headers={"Content-Type": "application/octet-stream"}
        )
        form = client.post(
            "/predict", files={"file": ("b.jpg", payload, "image/jpeg")}, params={"top_k": 2}
        )
    assert raw.status_code == 200, raw.text
    answer = ClassificationPredictResponse.model_validate(raw.json())
    assert answer.request_id == "raw-1"
    (prediction,) = answer.predictions
    assert prediction.file == "image"  # a raw body has no file name
    assert prediction.label == "blue"
    assert prediction.probability == pytest.approx(float(probabilities[0, 2]), abs=1e-5)
    assert [e.label for e in prediction.top_k] == [
        e["label"] for e in form.json()["predictions"][0]["top_k"]
    ]
    assert octet.status_code == 200
    assert octet.json()["predictions"][0]["label"] == "blue"
    records = read_prediction_log(tmp_path / "log").records
    assert records[0].request_id == "raw-1"
    assert records[0].image is not None and records[0].image.format == "jpeg"


def test_raw_bodies_are_refused_like_uploads(classification_bundle: Path, tmp_path: Path) -> None:
    big = colour_image(size=(300, 300), fmt="BMP")  # 270 kB
    with serving(classification_bundle, tmp_path, max_upload_mb=0.1) as client:
        not_an_image = client.post(
            "/predict", content=b"%PDF-1.7 not an image", headers={"Content-Type": "image/png"}
        )
        empty = client.post("/predict", content=b"", headers={"Content-Type": "image/png"})
        too_large = client.post("/predict", content=big, headers={"Content-Type": "image/bmp"})
        bomb = client.post(
            "/predict", content=png_bomb(8100, 8000), headers={"Content-Type": "image/png"}
        )
        truncated = client.post(
            "/predict",
            content=colour_image(size=(64, 64))[:120],
            headers={"Content-Type": "image/png"},
        )
        text = client.post("/predict", content=b"hello", headers={"Content-Type": "text/plain"})
    assert not_an_image.status_code == 415
    assert "not an image" in not_an_image.json()["error"]["message"]
    assert empty.status_code == 422
    assert empty.json()["error"]["kind"] == "no_image"
    assert too_large.status_code == 413
    assert too_large.json()["error"]["kind"] == "payload_too_large"
    assert bomb.status_code == 413
    assert bomb.json()["error"]["kind"] == "decompression_bomb"
    assert truncated.status_code == 422
    assert truncated.json()["error"]["message"].startswith("image:")
    assert text.status_code == 415
    assert "Content-Type: image/jpeg" in text.json()["error"]["message"]


def test_options_are_validated_as_the_document_declares(
    classification_bundle: Path, tmp_path: Path
) -> None:
    image = {"content": colour_image("green"), "headers": {"Content-Type": "image/png"}}
    with serving(classification_bundle, tmp_path) as client:
        document = client.get("/openapi.json").json()
        answers = {
            query: client.post(f"/predict?{query}", **image)  # type: ignore[arg-type]
            for query in (
                "top_k=abc",
                "top_k=1001",
                "top_k=",
                "top_k=3&top_k=1",  # the last one wins, as FastAPI read it
                "top_k=2&unknown=1",  # names no task takes are ignored
                "heatmap=maybe",  # an option this model cannot honour: refused with why
            )
        }
    declared = document["paths"]["/predict"]["post"]["parameters"]
    assert [(p["name"], p["in"]) for p in declared] == [("top_k", "query")]
    assert {"image/*", "multipart/form-data", "application/json"} == set(
        document["paths"]["/predict"]["post"]["requestBody"]["content"]
    )
    for query in ("top_k=abc", "top_k=1001", "top_k="):
        error = answers[query].json()["error"]
        assert answers[query].status_code == 422, query
        assert error["kind"] == "invalid_parameter"
        assert error["message"].startswith("top_k: "), error
    assert "less than or equal to 1000" in answers["top_k=1001"].json()["error"]["message"]
    assert len(answers["top_k=3&top_k=1"].json()["predictions"][0]["top_k"]) == 1
    assert len(answers["top_k=2&unknown=1"].json()["predictions"][0]["top_k"]) == 2
    refused = answers["heatmap=maybe"]
    assert refused.status_code == 422
    assert refused.json()["error"]["message"].startswith(
        "'heatmap' needs the model's class activation map"
    )


def test_multilabel_threshold_and_the_key_in_either_header(
    multilabel_bundle: Path, tmp_path: Path
) -> None:
    image = colour_image("red")
    raw = {"Content-Type": "image/png"}
    with serving(multilabel_bundle, tmp_path, api_key="k") as client:
        no_key = client.post("/predict?threshold=abc", content=image, headers=raw)
        empty_key_bearer = client.post(
            "/predict", content=image, headers={**raw, "X-API-Key": "", "Authorization": "Bearer k"}
        )
        basic = client.post("/predict", content=image, headers={**raw, "Authorization": "Basic k"})
        bad = client.post(
            "/predict?threshold=nan", content=image, headers={**raw, "X-API-Key": "k"}
        )
        low = client.post("/predict?threshold=0", content=image, headers={**raw, "X-API-Key": "k"})
        metrics = client.get("/metrics").text
    assert no_key.status_code == 401  # the key is checked before the options, as before
    assert no_key.headers["www-authenticate"] == "Bearer"
    assert empty_key_bearer.status_code == 200
    assert basic.status_code == 401
    assert bad.status_code == 422
    assert bad.json()["error"]["message"].startswith("threshold: ")
    assert low.status_code == 200
    labels = low.json()["predictions"][0]["labels"]
    assert len(labels) == len(low.json()["predictions"][0]["probabilities"])  # all over 0
    assert 'visionops_errors_total{kind="unauthorized"} 2.0' in metrics
    assert 'visionops_requests_total{endpoint="/predict",status="422"} 1.0' in metrics


def test_a_body_that_is_not_multipart_is_a_400_in_the_error_shape(
    classification_bundle: Path, tmp_path: Path
) -> None:
    with serving(classification_bundle, tmp_path) as client:
        no_boundary = client.post(
            "/predict", content=b"--x\r\n", headers={"Content-Type": "multipart/form-data"}
        )
        too_many = client.post(
            "/predict", files=[("file", ("a.png", colour_image(), "image/png"))] * 65
        )
    for answer in (no_boundary, too_many):
        assert answer.status_code == 400
        assert set(answer.json()) == {"error", "request_id"}
        assert answer.json()["error"]["kind"] == "invalid_multipart"
    assert "boundary" in no_boundary.json()["error"]["message"]
    assert "64" in too_many.json()["error"]["message"]


def test_the_compute_plan_puts_one_single_thread_batch_on_each_core() -> None:
    cores = available_cores()
    assert compute_plan(ServeSettings(), cpu=True) == (cores, 1)
    assert compute_plan(ServeSettings(workers=2), cpu=True) == (max(1, cores // 2), 1)
    assert compute_plan(ServeSettings(threads=3), cpu=True) == (1, 3)  # lowest lone latency
    assert compute_plan(ServeSettings(), cpu=False) == (1, cores)  # a GPU: one batch at a time
