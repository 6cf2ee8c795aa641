"""Several models in one app: routing by name, each model's own log, drift and metrics."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from serve_helpers import colour_image, wait_ready
from visionops.config import DriftSettings, ServeSettings
from visionops.errors import ConfigError, ServeError
from visionops.inference.bundle import load_bundle
from visionops.inference.predlog import read_prediction_log
from visionops.inference.runtime import available_cores
from visionops.serve.app import ServedModel, create_models_app
from visionops.serve.sources import model_name, public_source, split_model_args, split_source
from visionops.serve.state import compute_plan

SETTING_KEYS = ["device", "runs_root", "serve", "drift"]
DRIFT = DriftSettings(min_samples=5, every=1000, window=20, permutations=19)


@pytest.fixture
def two_models(
    classification_bundle: Path, regression_bundle: Path, tmp_path: Path
) -> Iterator[TestClient]:
    """colours (classification, the default) and dishes (regression) in one app."""
    served = [
        ServedModel("colours", load_bundle(classification_bundle), tmp_path / "colours-log"),
        ServedModel("dishes", load_bundle(regression_bundle), tmp_path / "dishes-log"),
    ]
    app = create_models_app(served, ServeSettings(max_wait_ms=0), drift=DRIFT)
    with TestClient(app, raise_server_exceptions=False) as client:
        wait_ready(client.get)
        yield client


def png(name: str = "red", seed: int = 0) -> dict[str, tuple[str, bytes, str]]:
    return {"file": (f"{name}.png", colour_image(name, seed=seed), "image/png")}


def test_each_model_answers_by_path_and_by_query(two_models: TestClient) -> None:
    by_path = two_models.post("/models/colours/predict", files=png("green"))
    default = two_models.post("/predict", files=png("green"))
    dishes = two_models.post("/predict", files=png("green"), params={"model": "dishes"})
    dishes_path = two_models.post("/models/dishes/predict", files=png("green"))
    assert by_path.status_code == default.status_code == dishes.status_code == 200
    assert by_path.json()["task"] == default.json()["task"] == "classification"
    assert by_path.json()["predictions"][0]["label"] == "green"
    assert dishes.json()["task"] == dishes_path.json()["task"] == "regression"
    values = {v["name"]: v["value"] for v in dishes.json()["predictions"][0]["values"]}
    assert values == pytest.approx({"energy": 220.0, "mass": 40.0}, rel=1e-3)
    # The options are the chosen model's own.
    top_two = two_models.post("/predict", files=png(), params={"model": "colours", "top_k": "2"})
    assert len(top_two.json()["predictions"][0]["top_k"]) == 2
    threshold = two_models.post("/models/dishes/predict", files=png(), params={"threshold": "1"})
    assert threshold.status_code == 422


def test_an_unknown_model_is_404_with_the_list(two_models: TestClient) -> None:
    for response in (
        two_models.post("/models/nope/predict", files=png()),
        two_models.post("/predict", files=png(), params={"model": "nope"}),
        two_models.get("/models/nope/metadata"),
        two_models.get("/drift", params={"model": "nope"}),
    ):
        assert response.status_code == 404
        error = response.json()["error"]
        assert error["kind"] == "unknown_model"
        assert "'nope'" in error["message"] and "colours, dishes" in error["message"]


def test_models_lists_tasks_options_and_endpoints(two_models: TestClient) -> None:
    listed = two_models.get("/models").json()
    assert listed["default"] == "colours"
    colours, dishes = listed["models"]
    assert (colours["name"], colours["task"], colours["default"]) == (
        "colours",
        "classification",
        True,
    )
    assert (dishes["name"], dishes["task"], dishes["default"]) == ("dishes", "regression", False)
    assert colours["status"] == dishes["status"] == "ready"
    assert colours["labels"] == ["red", "green", "blue", "yellow"]
    assert dishes["options"] == {"top_k": True, "threshold": False, "heatmap": False}
    assert colours["predict"] == "/models/colours/predict"
    assert dishes["drift"] == "/models/dishes/drift"


def test_ready_is_per_model_and_overall(two_models: TestClient) -> None:
    overall = two_models.get("/ready").json()
    assert overall["status"] == "ready"
    assert set(overall["models"]) == {"colours", "dishes"}
    assert two_models.get("/models/dishes/ready").json()["model_version"].startswith("dishes-run")
    assert two_models.get("/ready", params={"model": "colours"}).json()["status"] == "ready"
    assert two_models.get("/metadata", params={"model": "dishes"}).json()["task"] == "regression"


def test_each_model_has_its_own_log_drift_and_labelled_metrics(
    two_models: TestClient, tmp_path: Path
) -> None:
    for seed in range(6):
        assert two_models.post("/predict", files=png("red", seed)).status_code == 200
    for seed in range(7):
        response = two_models.post("/models/dishes/predict", files=png("blue", seed))
        assert response.status_code == 200
    models = two_models.app.state.models  # type: ignore[attr-defined]
    for name in ("colours", "dishes"):
        models.get(name).drift.run_now()  # a verdict now, not after drift.every predictions
    colours_drift = two_models.get("/models/colours/drift").json()
    dishes_drift = two_models.get("/drift", params={"model": "dishes"}).json()
    assert colours_drift["status"] == dishes_drift["status"] == "ok"
    assert (colours_drift["predictions_seen"], dishes_drift["predictions_seen"]) == (6, 7)
    assert isinstance(dishes_drift["drifted"], bool)

    metrics = two_models.get("/metrics").text
    assert (
        'visionops_requests_total{endpoint="/predict",model="colours",status="200"} 6.0' in metrics
    )
    assert (
        'visionops_requests_total{endpoint="/predict",model="dishes",status="200"} 7.0' in metrics
    )
    assert 'visionops_predictions_total{label="red",model="colours"} 6.0' in metrics
    info = [line for line in metrics.splitlines() if line.startswith("visionops_model_info{")]
    assert len(info) == 2
    assert any('model="dishes"' in line and 'task="regression"' in line for line in info)
    assert 'visionops_drift_detected{model="colours"}' in metrics
    assert 'visionops_requests_total{endpoint="/models",status="200"}' not in metrics  # not yet
    two_models.get("/models")
    assert 'visionops_requests_total{endpoint="/models",status="200"} 1.0' in (
        two_models.get("/metrics").text
    )
    assert metrics.count("# TYPE visionops_requests_total counter") == 1  # one family

    colours_log = read_prediction_log(tmp_path / "colours-log")
    dishes_log = read_prediction_log(tmp_path / "dishes-log")
    assert [r.task for r in colours_log.records] == ["classification"] * 6
    assert [r.task for r in dishes_log.records] == ["regression"] * 7


def test_openapi_lists_each_models_task_and_options(two_models: TestClient) -> None:
    document = two_models.get("/openapi.json").json()
    paths = document["paths"]

    def ok(path: str) -> str:
        schema = paths[path]["post"]["responses"]["200"]["content"]["application/json"]
        return str(schema["schema"]["$ref"])

    assert ok("/models/colours/predict").endswith("/ClassificationPredictResponse")
    assert ok("/models/dishes/predict").endswith("/RegressionPredictResponse")
    assert "classification" in paths["/models/colours/predict"]["post"]["summary"]
    assert "regression" in paths["/models/dishes/predict"]["post"]["summary"]
    model = next(p for p in paths["/predict"]["post"]["parameters"] if p["name"] == "model")
    assert model["schema"]["enum"] == ["colours", "dishes"]
    assert model["schema"]["default"] == "colours"
    assert "/models" in paths
    named = paths["/models/{name}/drift"]["get"]["parameters"]
    assert [(p["name"], p["in"]) for p in named] == [("name", "path")]


def test_the_cpu_budget_is_split_not_multiplied() -> None:
    cores = available_cores()
    assert compute_plan(ServeSettings(), cpu=True, models=2) == (max(1, cores // 2), 1)
    assert compute_plan(ServeSettings(threads=4), cpu=True, models=2) == (1, 2)
    assert compute_plan(ServeSettings(threads=1), cpu=True, models=3) == (1, 1)  # at least one


def test_two_models_of_one_name_are_refused(classification_bundle: Path, tmp_path: Path) -> None:
    bundle = load_bundle(classification_bundle)
    twice = [ServedModel("a", bundle, tmp_path / "1"), ServedModel("a", bundle, tmp_path / "2")]
    with pytest.raises(ServeError, match="two models are named 'a'"):
        create_models_app(twice, ServeSettings())


def test_model_arguments_and_their_names(tmp_path: Path) -> None:
    args = ["runs/a", "b=s3://m/b/bundle", "serve.port=9", "device=cpu", "https://h/x?v=1"]
    models, overrides = split_model_args(args, SETTING_KEYS)
    assert models == ["runs/a", "b=s3://m/b/bundle", "https://h/x?v=1"]
    assert overrides == ["serve.port=9", "device=cpu"]
    assert split_source("b=s3://m/b/bundle") == ("b", "s3://m/b/bundle")
    assert split_source("https://h/x?v=1") == (None, "https://h/x?v=1")
    assert split_source("wandb:e/p/fruit-bundle:v3") == (None, "wandb:e/p/fruit-bundle:v3")
    assert model_name("s3://models/runs/fruit-run/bundle") == "fruit-run"
    assert model_name("wandb:team/proj/run-007-bundle:latest") == "run-007"
    (tmp_path / "runs" / "run.v2" / "bundle").mkdir(parents=True)
    assert model_name(str(tmp_path / "runs" / "run.v2" / "bundle")) == "run-v2"


# ------------------------------------------------------------------ what `serve` is given


def test_plan_names_models_and_gives_each_its_own_log(
    classification_bundle: Path, regression_bundle: Path, tmp_path: Path
) -> None:
    from visionops.config import load_settings
    from visionops.serve.runner import plan_models

    settings = load_settings(overrides=[f"runs_root={tmp_path / 'runs'}"], cwd=tmp_path)
    colours, dishes = str(classification_bundle), str(regression_bundle)
    plans = plan_models([colours, f"food={dishes}"], settings)
    assert [(p.name, p.bundle.task) for p in plans] == [
        ("colours-run", "classification"),
        ("food", "regression"),
    ]
    assert [p.log_dir for p in plans] == [
        str(classification_bundle.parent / "predictions"),
        str(regression_bundle.parent / "predictions"),
    ]
    # One run under two names: a log folder each, below the run's.
    twice = plan_models([f"a={colours}", f"b={colours}"], settings)
    assert [p.log_dir for p in twice] == [
        str(classification_bundle.parent / "predictions" / name) for name in ("a", "b")
    ]
    # --log-dir with several models: one folder (or URL prefix) per model.
    logged = plan_models([colours, dishes], settings, tmp_path / "logs")
    assert [p.log_dir for p in logged] == [
        str(tmp_path / "logs" / "colours-run"),
        str(tmp_path / "logs" / "dishes-run"),
    ]
    in_bucket = plan_models([colours, dishes], settings, "s3://b/logs")
    assert [p.log_dir for p in in_bucket] == ["s3://b/logs/colours-run", "s3://b/logs/dishes-run"]
    # One model keeps --log-dir as it is (as a one-bundle server always did).
    assert plan_models([colours], settings, tmp_path / "one")[0].log_dir == str(tmp_path / "one")
    # serve.models when the command line names none.
    configured = settings.model_copy(
        update={"serve": settings.serve.model_copy(update={"models": [f"x={dishes}"]})}
    )
    assert [p.name for p in plan_models([], configured)] == ["x"]
    with pytest.raises(ConfigError, match="two models are named 'colours-run'"):
        plan_models([colours, colours], settings)
    with pytest.raises(ConfigError, match="cannot name the model"):
        plan_models([f"-bad={colours}"], settings)


def test_workers_build_every_model_from_the_spec(
    classification_bundle: Path,
    regression_bundle: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from visionops.serve import runner

    spec = runner.WorkerSpec(
        settings=ServeSettings(),
        models=[
            runner.WorkerModel(
                name="c", bundle=classification_bundle, log_dir=str(tmp_path / "c"), source="c"
            ),
            runner.WorkerModel(
                name="d", bundle=regression_bundle, log_dir=str(tmp_path / "d"), source="d"
            ),
        ],
    )
    monkeypatch.setenv(runner.ENV_SPEC, spec.model_dump_json())
    models = runner.app_from_environment().state.models
    assert models.names == ["c", "d"]
    assert models.get("d").log_dir == tmp_path / "d"
    assert models.get("c").batches_at_once == max(1, available_cores() // 2)


def test_sources_are_shown_without_secrets() -> None:
    signed = "https://h.example/b/bundle?X-Amz-Signature=abc&X-Amz-Credential=k"
    assert public_source(signed) == "https://h.example/b/bundle"
    assert public_source("https://me:secret@h.example/b") == "https://h.example/b"
    assert public_source("s3://models/runs/a/bundle") == "s3://models/runs/a/bundle"
    assert public_source("runs/a") == "runs/a"
