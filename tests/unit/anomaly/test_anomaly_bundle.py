"""`visionops export` and `serve` of an anomaly run: bank in the graph, parity, verdicts."""

from __future__ import annotations

import base64
import io
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from serve_helpers import wait_ready
from visionops.artifacts import BundleMeta, ParityRecord, RunRecord
from visionops.config import ServeSettings, load_settings
from visionops.data.prepared import PreparedDataset
from visionops.export.stage import export_run
from visionops.inference.bundle import load_bundle
from visionops.serve.app import create_app


@pytest.fixture(scope="module")
def anomaly_bundle(
    trained_anomaly_run: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, PreparedDataset]:
    project = tmp_path_factory.mktemp("anomaly-export") / "project"
    shutil.copytree(trained_anomaly_run.parent.parent, project, symlinks=True)
    run_dir = project / "runs" / trained_anomaly_run.name
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(project)
        result = export_run(load_settings(cwd=project), run_dir, quantize="int8")
    record = RunRecord.read(run_dir)
    return result.bundle_dir, PreparedDataset.open(project / record.dataset.path)


def test_bank_and_distances_are_in_the_graph(anomaly_bundle: tuple[Path, PreparedDataset]) -> None:
    bundle_dir, _ = anomaly_bundle
    graph = onnx.load(str(bundle_dir / "model.onnx")).graph
    assert [output.name for output in graph.output] == ["score", "heatmap", "embedding"]
    operators = {node.op_type for node in graph.node}
    assert {"MatMul", "ReduceMin", "Sqrt"} <= operators
    parity = ParityRecord.model_validate_json((bundle_dir / "parity.json").read_text())
    assert parity.passed and set(parity.max_abs_diff) == {"score", "heatmap", "embedding"}
    meta = BundleMeta.read(bundle_dir)
    assert meta.task == "anomaly" and meta.main_output == "score"
    auroc = meta.metrics["image_auroc"]
    assert auroc is not None and auroc >= 0.95


def test_int8_gate_judges_image_auroc(anomaly_bundle: tuple[Path, PreparedDataset]) -> None:
    bundle_dir, _ = anomaly_bundle
    quantized = BundleMeta.read(bundle_dir).quantized
    assert quantized is not None
    assert quantized.metric == "image_auroc" and quantized.quantized_ops == ["Conv"]
    # Kept exactly when the AUROC drop is within the tolerance, and then the file is there.
    assert quantized.drop is not None and quantized.tolerance is not None
    assert quantized.accepted == (quantized.drop <= quantized.tolerance)
    assert (bundle_dir / "model.int8.onnx").is_file() == quantized.accepted
    graph = onnx.load(str(bundle_dir / "model.int8.onnx")).graph if quantized.accepted else None
    if graph is not None:
        quantized_inputs = {n.input[0] for n in graph.node if n.op_type == "DequantizeLinear"}
        assert quantized_inputs and "bank" not in " ".join(quantized_inputs)


def _png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def test_serve_answers_verdicts_and_a_heatmap(
    anomaly_bundle: tuple[Path, PreparedDataset], tmp_path: Path
) -> None:
    bundle_dir, dataset = anomaly_bundle
    test = dataset.indices("test")
    labels = np.asarray(dataset.targets[test])
    good, defect = test[labels == 0][0], test[labels == 1][0]
    thresholds = BundleMeta.read(bundle_dir).thresholds
    assert isinstance(thresholds, list)
    threshold = thresholds[0]
    app = create_app(load_bundle(bundle_dir), ServeSettings(), tmp_path)
    with TestClient(app) as client:
        wait_ready(client.get)
        answers = {}
        for name, index in (("good", good), ("defect", defect)):
            files = {"file": (f"{name}.png", _png(np.asarray(dataset.images[index])), "image/png")}
            response = client.post("/predict", files=files, params={"heatmap": True})
            assert response.status_code == 200, response.text
            answers[name] = response.json()["predictions"][0]
    assert answers["good"]["verdict"] == "good" and answers["defect"]["verdict"] == "defect"
    assert answers["good"]["score"] < threshold <= answers["defect"]["score"]
    heatmap = answers["defect"]["heatmap"]
    image = Image.open(io.BytesIO(base64.b64decode(heatmap["png_base64"])))
    assert image.size == (dataset.image_size, dataset.image_size)
    mask = np.asarray(dataset.masks[defect]) > 0
    pixels = np.asarray(image, dtype=np.float64)
    assert pixels[mask].mean() > pixels[~mask].mean()
    # The overlay the upload page shows: colour over the image, covering it more where the
    # map is hotter (the defect), on the threshold's scale rather than stretched per image.
    changed = {}
    for name, index in (("good", good), ("defect", defect)):
        encoded = answers[name]["heatmap"]["overlay_png_base64"]
        overlay = np.asarray(Image.open(io.BytesIO(base64.b64decode(encoded))), np.float64)
        assert overlay.shape == (dataset.image_size, dataset.image_size, 3)
        changed[name] = np.abs(overlay - np.asarray(dataset.images[index], np.float64)).sum(-1)
    assert changed["defect"][mask].mean() > changed["defect"][~mask].mean()
    assert changed["defect"][mask].mean() > changed["good"].mean()


def test_drift_report_tests_scores_and_embeddings(
    anomaly_bundle: tuple[Path, PreparedDataset], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from visionops.drift.report import drift_report

    bundle_dir, dataset = anomaly_bundle
    test = dataset.indices("test")
    labels = np.asarray(dataset.targets[test]).reshape(-1)
    folders = {}
    for name, rows in (("good", test[labels == 0]), ("defect", test[labels == 1])):
        folders[name] = tmp_path / name
        folders[name].mkdir()
        for index in rows:
            Image.fromarray(np.asarray(dataset.images[index])).save(folders[name] / f"{index}.png")
    monkeypatch.chdir(bundle_dir.parent.parent.parent)
    settings = load_settings(overrides=["drift.min_samples=5", "drift.permutations=199"])
    reports = {
        name: drift_report(settings, bundle_dir, current=folder, out=tmp_path / f"report-{name}")
        for name, folder in folders.items()
    }
    good = reports["good"].payload
    # The reference is held-out good images (the bank's own images score near zero).
    assert good["reference"]["split"] in {"val", "test"}
    assert {f["name"] for f in good["families"]} == {"embeddings", "outputs", "images"}
    outputs = next(f for f in good["families"] if f["name"] == "outputs")
    assert {row["name"] for row in outputs["tests"]} == {"score", "predicted class"}
    assert good["verdict"]["drifted"] is False
    # A batch of defects moves the score distribution: the output family says so.
    defect = reports["defect"].payload
    assert defect["verdict"]["drifted"] is True
    outputs = next(f for f in defect["families"] if f["name"] == "outputs")
    assert outputs["p_value"] < defect["verdict"]["alpha"]
