"""The `mvtec` recipe offline: a miniature MVTec AD download in a pre-filled kagglehub cache,
then fetch → preprocess → train → eval → export → serve one image."""

from __future__ import annotations

import base64
import io
import shutil
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from serve_helpers import wait_ready
from visionops.anomaly.categories import select_category
from visionops.config import DemoSettings, ServeSettings, load_settings
from visionops.data.synthetic import generate_demo
from visionops.errors import DatasetNotFoundError
from visionops.evaluate.stage import evaluate_run
from visionops.export.stage import export_run
from visionops.inference.bundle import load_bundle
from visionops.serve.app import create_app
from visionops.train import train


def _fake_mvtec_download(cache: Path) -> Path:
    """The Kaggle MVTec AD tree in miniature: two categories, masks under ground_truth/."""
    dataset = cache / "datasets" / "ipythonx" / "mvtec-ad"
    root = dataset / "versions" / "1" / "mvtec_anomaly_detection"
    generate_demo("demo:anomaly", root.parent / "gen", DemoSettings(images_per_class=16))
    shutil.move(root.parent / "gen" / "carpet", root / "carpet")
    shutil.copytree(root / "carpet", root / "bottle")
    shutil.rmtree(root.parent / "gen")
    (root / "license.txt").write_text("CC BY-NC-SA 4.0\n")
    (dataset / "1.complete").touch()
    return root


@pytest.fixture
def offline_kaggle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A kagglehub cache holding the fake download; any network call fails at once."""
    cache = tmp_path / "kagglehub-cache"
    monkeypatch.setenv("KAGGLEHUB_CACHE", str(cache))
    monkeypatch.setenv("KAGGLE_API_ENVIRONMENT", "TEST")
    monkeypatch.setenv("NO_PROXY", "*")
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path / "no-credentials"))
    for name in ("KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    _fake_mvtec_download(cache)
    return cache


def test_recipe_runs_every_stage_offline(
    offline_kaggle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = tmp_path / "project"
    project.mkdir()
    monkeypatch.chdir(project)
    settings = load_settings(
        recipe="mvtec",
        overrides=[
            # Small and offline: no pretrained download, 64 px, the demo's layers.
            "model.name=resnet18",
            "model.pretrained=false",
            "data.image_size=64",
            "anomaly.layers=[layer1,layer2]",
            "anomaly.coreset_ratio=0.1",
            "device=cpu",
        ],
        cwd=project,
    )
    assert settings.anomaly.category == "carpet"
    result = train(settings)
    assert result.task == "anomaly"
    assert Path("data/prepared/carpet/masks.npy").is_file()
    evaluated = evaluate_run(settings, None)
    assert evaluated.metrics["pixel_auroc"] is not None
    bundle = export_run(settings, None).bundle_dir
    raw = next(Path("data/raw").iterdir())
    defect = next((select_category(raw, "carpet") / "test" / "hole").glob("*.png"))
    app = create_app(load_bundle(bundle), ServeSettings(), tmp_path / "log")
    with TestClient(app) as client:
        wait_ready(client.get)
        files = {"file": ("hole.png", defect.read_bytes(), "image/png")}
        answer = client.post("/predict", files=files, params={"heatmap": True}).json()
    prediction = answer["predictions"][0]
    assert prediction["verdict"] in {"good", "defect"} and prediction["heatmap"] is not None
    heatmap = Image.open(io.BytesIO(base64.b64decode(prediction["heatmap"]["png_base64"])))
    assert np.asarray(heatmap).shape == (64, 64)


def test_unknown_category_names_the_ones_present(offline_kaggle: Path) -> None:
    root = offline_kaggle / "datasets" / "ipythonx" / "mvtec-ad" / "versions" / "1"
    with pytest.raises(DatasetNotFoundError, match=r"did you mean 'carpet'.*bottle, carpet"):
        select_category(root, "carpets")
