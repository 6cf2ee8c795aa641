"""Every Kaggle seed recipe, end to end through the CLI, on a fake of its published layout.

For each recipe: ``visionops init --recipe NAME`` in an empty folder, then the user's tiny
edits to ``visionops.yaml`` (32 px, the smallest backbone without downloaded weights, one
epoch, CPU), then ``data fetch`` (from a pre-filled kagglehub cache, no network) →
``data preprocess`` → ``train`` → ``eval`` → ``export`` → ``visionops serve`` answering one
real HTTP request. The fakes (``recipe_fakes.py``) carry each layout's quirks; the checks
below are what a user of that recipe would look at.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from recipe_fakes import (
    EMOTIONS,
    FRUIT_CLASSES,
    KAGGLE_RECIPES,
    NUTRITION_TARGETS,
    POSTER_GENRES,
    FakeDataset,
    fill_kaggle_cache,
)
from test_cli_serve import start_server
from typer.testing import CliRunner

from visionops.artifacts import (
    BundleMeta,
    EvalMetrics,
    ParityRecord,
    PreparedManifest,
    RunRecord,
    SourceRecord,
)
from visionops.cli.app import app

TINY = {
    "device": "cpu",
    "data": {"image_size": 32, "workers": 1},
    # The recipes' backbones are ImageNet-pretrained (a download); the smallest one from
    # scratch exercises the same code paths offline.
    "model": {"name": "shufflenet_v2_x0_5", "pretrained": False},
    "train": {"epochs": 1, "batch_size": 16},
    "export": {"reference_samples": 16},
}


@pytest.fixture(scope="module")
def kaggle_cache(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, FakeDataset]]:
    """One kagglehub cache holding a completed download of every recipe's dataset."""
    cache = tmp_path_factory.mktemp("kagglehub-cache")
    fakes = {name: fill_kaggle_cache(cache, recipe) for name, recipe in KAGGLE_RECIPES.items()}
    return cache, fakes


@pytest.fixture
def offline(
    kaggle_cache: tuple[Path, dict[str, FakeDataset]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> dict[str, FakeDataset]:
    """Point kagglehub at the filled cache; any network call is refused at once."""
    cache, fakes = kaggle_cache
    monkeypatch.setenv("KAGGLEHUB_CACHE", str(cache))
    monkeypatch.setenv("KAGGLE_API_ENVIRONMENT", "TEST")  # localhost:7777, nothing listens
    monkeypatch.setenv("NO_PROXY", "*")
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path / "no-credentials"))
    for name in ("KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    project = tmp_path / "project"
    project.mkdir()
    monkeypatch.chdir(project)
    return fakes


def visionops(*args: str) -> str:
    """Run one visionops command in this process; fail the test with its output if it fails."""
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, f"visionops {' '.join(args)} failed:\n{result.output}"
    return result.output


def _merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in top.items():
        merged[key] = (
            _merge(merged[key], value)
            if isinstance(value, dict) and isinstance(merged.get(key), dict)
            else value
        )
    return merged


def _rejections(prepared: Path) -> list[dict[str, str]]:
    with (prepared / "rejected.csv").open(encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def check_fruits(manifest: PreparedManifest, prepared: Path, fake: FakeDataset) -> None:
    assert manifest.task == "classification"
    assert manifest.class_names == sorted(FRUIT_CLASSES)
    assert manifest.splits_from_source is True
    # The published set repeats test images in train: each copy is dropped from test.
    duplicates = [r for r in _rejections(prepared) if r["reason"].startswith("duplicate")]
    assert len(duplicates) == fake.facts["duplicates"]
    assert all(r["path"].startswith("test/") for r in duplicates)
    assert manifest.counts["duplicates_across_splits"] == fake.facts["duplicates"]


def check_posters(manifest: PreparedManifest, prepared: Path, fake: FakeDataset) -> None:
    assert manifest.task == "multilabel"
    assert manifest.class_names == list(POSTER_GENRES)
    missing = [r for r in _rejections(prepared) if r["reason"].startswith("missing file")]
    assert len(missing) == fake.facts["missing"]
    assert sum(manifest.counts[s] for s in ("train", "val", "test")) == fake.facts["posters"]


def check_nutrition(manifest: PreparedManifest, prepared: Path, fake: FakeDataset) -> None:
    assert manifest.task == "regression"
    assert manifest.target_names == list(NUTRITION_TARGETS)
    assert manifest.target_units == ["kcal", "g", "g", "g", "g"]
    reasons = [r["reason"] for r in _rejections(prepared)]
    assert sum(r.startswith("no metadata") for r in reasons) == fake.facts["without_metadata"]
    assert sum(r.startswith("no frame") for r in reasons) == fake.facts["without_camera"]
    kept = fake.facts["dishes"] - fake.facts["without_metadata"] - fake.facts["without_camera"]
    assert sum(manifest.counts[s] for s in ("train", "val", "test")) == kept


def check_fer(manifest: PreparedManifest, prepared: Path, fake: FakeDataset) -> None:
    assert manifest.task == "classification"
    assert manifest.class_names == list(EMOTIONS)
    assert manifest.channels == 1
    # FER-2013 has no validation folder: validation is carved out of train.
    assert manifest.counts["val"] > 0


CHECKS: dict[str, Callable[[PreparedManifest, Path, FakeDataset], None]] = {
    "fruits-vegetables": check_fruits,
    "movie-posters": check_posters,
    "nutrition5k": check_nutrition,
    "fer2013": check_fer,
}


def check_answer(task: str, answer: dict[str, Any], manifest: PreparedManifest) -> None:
    """The served prediction has the shape a client of that recipe relies on."""
    if task == "classification":
        assert answer["label"] in manifest.class_names
        assert 0.0 <= answer["probability"] <= 1.0
    elif task == "multilabel":
        assert {entry["label"] for entry in answer["labels"]} <= set(manifest.class_names)
        assert set(answer["probabilities"]) == set(manifest.class_names)
    else:
        assert [value["name"] for value in answer["values"]] == manifest.target_names
        assert [value["unit"] for value in answer["values"]] == manifest.target_units


@pytest.mark.slow
@pytest.mark.parametrize("recipe", list(KAGGLE_RECIPES))
def test_recipe_runs_end_to_end_offline(recipe: str, offline: dict[str, FakeDataset]) -> None:
    project = Path.cwd()
    fake = offline[recipe]
    visionops("init", "--recipe", recipe)
    settings_file = project / "visionops.yaml"
    written = yaml.safe_load(settings_file.read_text(encoding="utf-8"))
    assert written["recipe"] == recipe
    settings_file.write_text(yaml.safe_dump(_merge(written, TINY), sort_keys=False))

    visionops("data", "fetch")
    dataset = KAGGLE_RECIPES[recipe].dataset
    raw = project / "data" / "raw" / dataset
    assert SourceRecord.read(raw).version == "1"

    visionops("data", "preprocess", f"data/raw/{dataset}")
    prepared = project / "data" / "prepared" / dataset
    manifest = PreparedManifest.read(prepared)
    assert manifest.image_size == 32
    CHECKS[recipe](manifest, prepared, fake)

    visionops("train")
    run = (project / "runs" / "latest").resolve()
    run_record = RunRecord.read(run)
    assert run_record.status == "completed"
    assert run_record.dataset.name == dataset

    visionops("eval")
    assert EvalMetrics.read(run / "eval").task == manifest.task
    assert (run / "eval" / "report.html").is_file()

    visionops("export")
    bundle_meta = BundleMeta.read(run / "bundle")
    assert bundle_meta.input.channels == manifest.channels
    assert ParityRecord.model_validate_json((run / "bundle" / "parity.json").read_text()).passed

    server = start_server(project)
    try:
        response = httpx.post(
            f"{server.url}/predict",
            files={"file": (fake.sample.name, fake.sample.read_bytes(), "image/jpeg")},
            timeout=30,
        )
    finally:
        server.stop()
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["task"] == manifest.task
    assert body["model_version"] == bundle_meta.model_version
    check_answer(manifest.task, body["predictions"][0], manifest)


@pytest.mark.parametrize("recipe", list(KAGGLE_RECIPES))
def test_recipe_has_a_valid_example_sweep(recipe: str) -> None:
    from visionops.tracking.sweeps import load_sweep_file, sweep_config

    path = Path(__file__).resolve().parents[2] / "examples" / "sweeps" / f"{recipe}.yaml"
    config = sweep_config(load_sweep_file(path))  # every key checked like key=value
    assert config["metric"] == {"name": "best_metric", "goal": "maximize"}
    assert config["command"][:2] == ["visionops", "train"]
