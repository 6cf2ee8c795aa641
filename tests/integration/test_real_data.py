"""Real images and real ImageNet weights (the cache of ``scripts/real-data``).

Small on purpose (a few hundred images, two epochs): each test shows what a user of
pretrained weights relies on, not the benchmark's figures (``benchmarks/quality.py``).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from visionops.artifacts import BundleMeta, RunRecord
from visionops.cli.app import app
from visionops.models import build_model, weights_source

runner = CliRunner()
BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
MOBILENET_V1_SHA256 = "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889"


def _fashion_subset(real_data: Path, out: Path, train: int, test: int) -> Path:
    for split, source, count in (("train", "train", train), ("test", "test", test)):
        for folder in sorted((real_data / "fashion-mnist" / source).iterdir()):
            target = out / split / folder.name
            target.mkdir(parents=True)
            for file in sorted(folder.glob("*.png"))[:count]:
                shutil.copyfile(file, target / file.name)
    return out


@pytest.mark.slow
def test_imagenet_weights_beat_random_init_on_real_images(
    real_weights: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Same 300 Fashion-MNIST images, same two epochs: ImageNet MobileNetV2 far ahead."""
    monkeypatch.chdir(tmp_path)
    data = _fashion_subset(real_weights, tmp_path / "fashion", train=30, test=30)
    prepared = runner.invoke(app, ["data", "preprocess", str(data), "--size", "64", "--json"])
    assert prepared.exit_code == 0, prepared.output
    path = json.loads(prepared.stdout)["path"]
    fast = ["--model", "mobilenet_v2", "--epochs", "2", "--batch-size", "32", "--device", "cpu"]
    accuracy = {}
    for name, flag in (("imagenet", "--pretrained"), ("random", "--no-pretrained")):
        trained = runner.invoke(app, ["train", path, *fast, flag, "--name", name, "--json"])
        assert trained.exit_code == 0, trained.output
        scored = runner.invoke(app, ["eval", f"runs/{name}", "--split", "test", "--json"])
        assert scored.exit_code == 0, scored.output
        accuracy[name] = json.loads(scored.stdout)["metrics"]["accuracy"]
    assert accuracy["imagenet"] >= accuracy["random"] + 0.15, accuracy
    # The run and its bundle name the exact ImageNet file the network started from.
    record = RunRecord.read(tmp_path / "runs" / "imagenet" / "run.json")
    assert record.model.weights_source is not None
    assert record.model.weights_source.name == "MobileNet_V2_Weights.IMAGENET1K_V1"
    assert record.model.weights_source.sha256 == MOBILENET_V1_SHA256
    exported = runner.invoke(app, ["export", "runs/imagenet", "--json"])
    assert exported.exit_code == 0, exported.output
    meta = BundleMeta.read(tmp_path / "runs" / "imagenet" / "bundle" / "visionops.json")
    assert meta.run is not None and meta.run.weights_source == record.model.weights_source


def test_converted_timm_caches_load_offline_and_see_real_photos(real_weights: Path) -> None:
    """timm's own loader reads the converted files with HF_HUB_OFFLINE=1; they are ImageNet's.

    timm runs in a fresh interpreter: huggingface_hub reads HF_HOME and HF_HUB_OFFLINE once, at
    import, so an earlier test of the same worker would otherwise fix another cache.
    """
    check = f"""
import numpy as np, timm, torch, torchvision
from PIL import Image
from safetensors.torch import load_file

def photo(name, mean, std):
    image = Image.open({str(real_weights / "photos")!r} + "/" + name).convert("RGB")
    pixels = torch.tensor(np.asarray(image.resize((224, 224))) / 255.0, dtype=torch.float32)
    pixels = pixels.permute(2, 0, 1)
    return ((pixels - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None])[None]

mobilenet = timm.create_model("mobilenetv2_100", pretrained=True).eval()
lite = timm.create_model("tf_efficientnet_lite0", pretrained=True).eval()
reference = torchvision.models.mobilenet_v2(
    weights=torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V1
).eval()
with torch.no_grad():
    for network in (mobilenet, lite):
        cfg = network.pretrained_cfg
        # ImageNet's baboon (372) and fox squirrel (335): two opencv-doc photographs.
        for name, label in (("opencv-baboon.jpg", 372), ("opencv-squirrel_cls.jpg", 335)):
            assert int(network(photo(name, cfg["mean"], cfg["std"])).argmax()) == label, name
    probe = torch.randn(2, 3, 224, 224)
    assert torch.allclose(mobilenet(probe), reference(probe), atol=1e-4)
print("ok", tuple(lite.pretrained_cfg["mean"]))
"""
    done = subprocess.run(
        [sys.executable, "-c", check], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["ok", "(0.5,", "0.5,", "0.5)"]
    # visionops' own build takes them too, with the cached config's normalisation.
    from visionops.models.timm_family import normalization

    assert normalization("timm:tf_efficientnet_lite0") == ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    model = build_model("timm:tf_efficientnet_lite0", num_outputs=3, pretrained=True)
    source = weights_source("timm:tf_efficientnet_lite0", pretrained=True, weights=None)
    assert source is not None and source.name == "timm/tf_efficientnet_lite0.in1k"
    stored = load_file(source.file)
    assert torch.equal(model.backbone.conv_stem.weight, stored["conv_stem.weight"])


@pytest.mark.slow
def test_quality_benchmark_runs_at_a_tiny_size(real_data: Path, tmp_path: Path) -> None:
    """``benchmarks/quality.py``'s own rows, tiny, so the script cannot rot (no figure checked)."""
    tiny = [
        "--rows", "transfer,grey,multilabel,regression", "--per-class", "10",
        "--test-per-class", "4", "--models", "mobilenet_v2", "--size", "32", "--epochs", "1",
        "--batch", "16", "--grey-per-class", "8", "--grey-epochs", "1", "--canvases", "40",
        "--canvas-test", "12", "--canvas-size", "32", "--canvas-epochs", "1", "--threads", "1",
        "--real-data", str(real_data), "--out", str(tmp_path / "rows.json"),
    ]  # fmt: skip
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / "quality.py"), *tiny],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rows = json.loads((tmp_path / "rows.json").read_text())
    assert [row["row"] for row in rows] == ["transfer", "grey", "multilabel", "regression"]
    for row in rows[1:]:
        assert set(row["visionops"]) == {"metric", "last", "seconds"}
        assert np.isfinite(row["reference"]["metric"])
    assert "| transfer | Fashion-MNIST 10/class" in done.stdout
