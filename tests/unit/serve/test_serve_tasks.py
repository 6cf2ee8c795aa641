"""Multilabel and regression answers from real exported bundles with known outputs."""

from __future__ import annotations

from pathlib import Path

import pytest

from serve_helpers import colour_image, expected_outputs, serving
from visionops.artifacts import BundleMeta


def test_multilabel_thresholds_and_overrides(multilabel_bundle: Path, tmp_path: Path) -> None:
    # The tags model gives the same probabilities to every image (0.8 for "cat", ...) and its
    # run tuned one threshold per label.
    meta = BundleMeta.read(multilabel_bundle)
    labels, thresholds = meta.labels, meta.thresholds
    assert isinstance(thresholds, list)  # one tuned threshold per label
    payload = colour_image("green")
    probabilities = expected_outputs(multilabel_bundle, [payload])[0][0].tolist()
    by_probability = sorted(labels, key=lambda name: -probabilities[labels.index(name)])

    def over(threshold: list[float]) -> list[str]:
        return [
            n
            for n in by_probability
            if probabilities[labels.index(n)] >= threshold[labels.index(n)]
        ]

    files = {"file": ("x.png", payload, "image/png")}
    with serving(multilabel_bundle, tmp_path) as client:
        tuned = client.post("/predict", files=files).json()["predictions"][0]
        half = client.post("/predict", files=files, params={"threshold": 0.5}).json()
        capped = client.post("/predict", files=files, params={"threshold": 0.0, "top_k": 2})
        nothing = client.post("/predict", files=files, params={"threshold": 0.99}).json()
        too_high = client.post("/predict", files=files, params={"threshold": 1.5})
        meta = client.get("/metadata").json()
        metrics = client.get("/metrics").text
    assert [e["label"] for e in tuned["labels"]] == over(thresholds) == ["cat"]
    assert list(tuned["probabilities"]) == labels
    assert list(tuned["probabilities"].values()) == pytest.approx(probabilities, abs=1e-5)
    assert tuned["thresholds"] == dict(zip(labels, thresholds, strict=True))
    assert [e["label"] for e in half["predictions"][0]["labels"]] == over([0.5] * len(labels))
    assert [e["label"] for e in capped.json()["predictions"][0]["labels"]] == by_probability[:2]
    assert nothing["predictions"][0]["labels"] == []
    assert too_high.status_code == 422
    assert meta["task"] == "multilabel"
    assert meta["thresholds"] == thresholds
    assert 'visionops_predictions_total{label="cat"} 3.0' in metrics


def test_regression_values_with_names_and_units(regression_bundle: Path, tmp_path: Path) -> None:
    # The dishes model says 220 kcal and 40 g for every image.
    with serving(regression_bundle, tmp_path) as client:
        body = client.post(
            "/predict", files={"file": ("d.jpg", colour_image(fmt="JPEG"), "image/jpeg")}
        ).json()
        meta = client.get("/metadata").json()
        heatmap = client.post(
            "/predict",
            files={"file": ("d.png", colour_image(), "image/png")},
            params={"heatmap": True},
        )
    assert body["task"] == "regression"
    values = body["predictions"][0]["values"]
    assert [(v["name"], v["unit"]) for v in values] == [("energy", "kcal"), ("mass", "g")]
    assert [v["value"] for v in values] == pytest.approx([220.0, 40.0], rel=1e-4)
    assert meta["labels"] == ["energy", "mass"]
    assert meta["target_units"] == ["kcal", "g"]
    assert heatmap.status_code == 422
