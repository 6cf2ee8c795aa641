"""``visionops.export.stage``: real exports of the hand-made runs, checked against PyTorch.

The session fixture copies the ``handmade_runs`` project (tests/conftest.py) and exports its
three runs once: colours (classification, with int8), tags (multilabel, NHWC input) and a
"self-consistent" regression run whose targets are its own fp32 predictions, so its fp32 R²
is 1 and any int8 error is a real, strictly positive drop.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from visionops.artifacts import BundleMeta, ParityRecord, RunRecord
from visionops.config import Settings, load_settings
from visionops.errors import (
    ArtifactError,
    ConcurrencyError,
    DatasetNotFoundError,
    DeviceError,
    ExportError,
)
from visionops.export.graph import export_onnx
from visionops.export.stage import ExportResult, export_run
from visionops.image_quality import colour_statistics
from visionops.imaging import image_statistics
from visionops.inference.bundle import load_bundle, read_onnx_metadata
from visionops.inference.runtime import CPU_PROVIDER, ort_session, verify_provider_parity
from visionops.runs import load_trained_model
from visionops.tasks import TASKS, task_for


def _settings(project: Path, *overrides: str) -> Settings:
    return load_settings(overrides=[f"runs_root={project / 'runs'}", *overrides], cwd=project)


def _copy_project(source: Path, target: Path) -> Path:
    shutil.copytree(source, target, symlinks=True)
    return target


def _dataset(project: Path, run: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    folder = project / RunRecord.read(project / "runs" / run).dataset.path
    return (
        np.load(folder / "images.npy"),
        np.load(folder / "targets.npy"),
        np.load(folder / "splits.npy"),
    )


def _torch_reference(project: Path, run: str, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """What `visionops eval` computes: the run's normalisation, model, task post-processing."""
    model, record = load_trained_model(project / "runs" / run)
    task = task_for(record)
    mean = torch.tensor(record.normalization.mean).view(1, -1, 1, 1)
    std = torch.tensor(record.normalization.std).view(1, -1, 1, 1)
    with torch.inference_mode():
        pixels = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
        raw, embedding = model((pixels - mean) / std)
        return task.postprocess(raw).numpy(), embedding.numpy()


def _make_self_consistent_regression(project: Path) -> None:
    """Give dishes-run a head that depends on the image; make the targets its own outputs.

    Batch-norm statistics are set from the images first (as training would), so embeddings
    and outputs vary over a realistic range.
    """
    run_dir = project / "runs" / "dishes-run"
    model, record = load_trained_model(run_dir)
    images, _, _ = _dataset(project, "dishes-run")
    mean = torch.tensor(record.normalization.mean).view(1, -1, 1, 1)
    std = torch.tensor(record.normalization.std).view(1, -1, 1, 1)
    torch.manual_seed(1)
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.momentum = None
            module.reset_running_stats()
    with torch.no_grad():
        model.train()(((torch.from_numpy(images).permute(0, 3, 1, 2) / 255) - mean) / std)
        model.eval()
        model.head.weight.normal_(0, 0.5)
    for which in ("best", "last"):
        path = run_dir / "checkpoints" / f"{which}.pt"
        checkpoint = torch.load(path, weights_only=True)
        checkpoint["model"] = model.state_dict()
        torch.save(checkpoint, path)
    values, _ = _torch_reference(project, "dishes-run", images)
    np.save(project / record.dataset.path / "targets.npy", values.astype(np.float32))


@pytest.fixture(scope="session")
def exported(
    handmade_runs: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, dict[str, ExportResult]]:
    project = _copy_project(handmade_runs, tmp_path_factory.mktemp("export") / "project")
    _make_self_consistent_regression(project)
    results = {
        "colours-run": export_run(_settings(project), "colours-run", quantize="int8"),
        "tags-run": export_run(_settings(project, "export.layout=NHWC"), "tags-run"),
        "dishes-run": export_run(
            _settings(project, "export.max_accuracy_drop=0"), "dishes-run", quantize="int8"
        ),
    }
    return project, results


RUNS = ["colours-run", "tags-run", "dishes-run"]
MAIN_OUTPUT = {"colours-run": "probabilities", "tags-run": "probabilities", "dishes-run": "values"}
GRAPH_OUTPUTS = {
    # At 32 px the last feature maps are 1x1: no class activation map (tests/integration/
    # test_cam_bundle.py exports one from a 64 px run).
    "colours-run": ["probabilities", "embedding"],
    "tags-run": ["probabilities", "embedding"],
    "dishes-run": ["values", "embedding"],
}


def _onnx_input(images: np.ndarray, layout: str) -> np.ndarray:
    return np.ascontiguousarray(images.transpose(0, 3, 1, 2) if layout == "NCHW" else images)


@pytest.mark.parametrize("run", RUNS)
def test_bundle_has_the_documented_files(exported: Any, run: str) -> None:
    project, results = exported
    bundle_dir = project / "runs" / run / "bundle"
    assert results[run].bundle_dir == bundle_dir
    names = {entry.name for entry in bundle_dir.iterdir()}
    assert {"model.onnx", "visionops.json", "parity.json", "reference.npz"} <= names
    assert set(BundleMeta.read(bundle_dir).files) == names - {"visionops.json"}
    assert not list(bundle_dir.parent.glob(".bundle.*.tmp"))


@pytest.mark.parametrize("run", RUNS)
def test_graph_takes_uint8_with_dynamic_batch_and_matches_pytorch(exported: Any, run: str) -> None:
    project, results = exported
    layout = results[run].meta.input.layout
    graph = onnx.load(str(project / "runs" / run / "bundle" / "model.onnx")).graph
    (pixels,) = graph.input
    assert pixels.name == "pixels"
    assert pixels.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    dims = pixels.type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch"
    expected = [3, 32, 32] if layout == "NCHW" else [32, 32, 3]
    assert [d.dim_value for d in dims[1:]] == expected
    assert [o.name for o in graph.output] == GRAPH_OUTPUTS[run]
    assert [o.type.tensor_type.shape.dim[0].dim_param for o in graph.output] == ["batch"] * len(
        GRAPH_OUTPUTS[run]
    )

    images, _, splits = _dataset(project, run)
    session = ort.InferenceSession(str(project / "runs" / run / "bundle" / "model.onnx"))
    for batch in (1, 5):
        chosen = images[splits == 1][:batch]
        main, embedding = session.run(
            [MAIN_OUTPUT[run], "embedding"], {"pixels": _onnx_input(chosen, layout)}
        )
        reference_main, reference_embedding = _torch_reference(project, run, chosen)
        assert main.shape[0] == embedding.shape[0] == batch
        scale = max(1.0, float(np.abs(reference_main).max()))
        assert np.abs(main - reference_main).max() <= 1e-4 * scale
        scale = max(1.0, float(np.abs(reference_embedding).max()))
        assert np.abs(embedding - reference_embedding).max() <= 1e-4 * scale


def test_classification_probabilities_are_a_softmax(exported: Any) -> None:
    project, _ = exported
    images, labels, splits = _dataset(project, "colours-run")
    session = ort.InferenceSession(str(project / "runs" / "colours-run" / "bundle" / "model.onnx"))
    probabilities, _ = session.run(
        ["probabilities", "embedding"], {"pixels": _onnx_input(images[splits == 2], "NCHW")}
    )
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    assert (probabilities.argmax(axis=1) == labels[splits == 2]).all()


@pytest.mark.parametrize("run", RUNS)
def test_metadata_in_onnx_and_manifest(exported: Any, run: str) -> None:
    project, _ = exported
    bundle_dir = project / "runs" / run / "bundle"
    record = RunRecord.read(project / "runs" / run)
    props = {p.key: p.value for p in onnx.load(str(bundle_dir / "model.onnx")).metadata_props}
    assert read_onnx_metadata(bundle_dir / "model.onnx") == props
    # The sealed copy is the file's JSON verbatim, less ``files``: compared as JSON on purpose.
    on_disk = json.loads((bundle_dir / "visionops.json").read_text())
    assert json.loads(props["visionops"]) == {k: v for k, v in on_disk.items() if k != "files"}
    meta = BundleMeta.read(bundle_dir)
    assert meta.kind == "visionops.bundle"
    assert meta.task == record.task
    assert meta.model_version == f"{run}@{record.config_hash[:8]}"
    assert meta.input.dtype == "uint8"
    assert meta.input.size == 32
    assert meta.input.channels == 3
    assert meta.input.resize == "crop"
    extras = {name: name for name in GRAPH_OUTPUTS[run][1:-1]}
    assert meta.outputs == {"main": MAIN_OUTPUT[run], "embedding": "embedding", **extras}
    assert meta.class_names == record.class_names
    assert meta.target_names == record.target_names
    assert meta.target_units == record.target_units
    assert meta.thresholds == record.thresholds
    assert meta.training_data_fingerprint == record.dataset.fingerprint
    assert meta.config_hash == record.config_hash
    assert {"visionops", "torch", "onnx", "onnxruntime"} <= set(meta.versions)
    assert meta.created_at
    monitor = TASKS[record.task].monitor
    assert isinstance(meta.metrics[monitor], float)


def test_a_classifier_without_a_map_says_why_and_regression_has_no_record(exported: Any) -> None:
    _, results = exported
    for run, layer in (("colours-run", "backbone.layer4"), ("tags-run", "backbone.conv5")):
        cam = results[run].meta.cam
        assert cam is not None and not cam.available
        assert cam.layer == layer and cam.feature_size == [1, 1]
        assert cam.reason is not None and "1x1 at 32 px" in cam.reason
    assert results["dishes-run"].meta.cam is None


def test_multilabel_thresholds_and_regression_units_travel(exported: Any) -> None:
    project, results = exported
    record = RunRecord.read(project / "runs" / "tags-run")
    assert record.thresholds
    assert results["tags-run"].meta.thresholds == record.thresholds
    assert results["tags-run"].meta.input.layout == "NHWC"
    assert results["dishes-run"].meta.target_units == ["kcal", "g"]


@pytest.mark.parametrize("run", RUNS)
def test_parity_record(exported: Any, run: str) -> None:
    project, results = exported
    text = (project / "runs" / run / "bundle" / "parity.json").read_text()
    # The file is the stage's record as written, key for key: compared as JSON on purpose.
    assert json.loads(text) == results[run].parity.model_dump(mode="json")
    parity = ParityRecord.model_validate_json(text)
    assert parity.passed is True
    assert parity.split == "val"
    _, _, splits = _dataset(project, run)
    assert parity.images == int((splits == 1).sum())
    for name, diff in parity.max_abs_diff.items():
        assert 0 <= diff <= parity.bound[name]
    assert parity.metric is not None and parity.metric.difference is not None
    if run == "dishes-run":
        assert parity.top1_agreement is None
        assert parity.metric.name == "r2"
    else:
        assert parity.top1_agreement == 1.0
        assert parity.bound["probabilities"] == pytest.approx(1e-4)
    assert abs(parity.metric.difference) < 1e-3


@pytest.mark.parametrize("run", RUNS)
def test_serve_side_loader_accepts_the_bundle(exported: Any, run: str) -> None:
    project, _ = exported
    bundle = load_bundle(project / "runs" / run / "bundle")
    assert bundle.parity is not None and bundle.parity.passed
    assert bundle.model_path.is_file()


def test_reference_is_computed_through_the_exported_graph(exported: Any) -> None:
    project, _ = exported
    bundle_dir = project / "runs" / "colours-run" / "bundle"
    with np.load(bundle_dir / "reference.npz", allow_pickle=False) as reference:
        arrays = {name: reference[name] for name in reference.files}
    images, _, splits = _dataset(project, "colours-run")
    indices = arrays["indices"]
    assert len(indices) == int((splits == 1).sum())  # held-out: every val image (< 512)
    assert (splits[indices] == 1).all()
    assert str(arrays["split"]) == "val"
    assert arrays["embeddings"].shape == (len(indices), 512)
    assert arrays["embeddings"].dtype == np.float32
    assert arrays["predictions"].shape == (len(indices), 4)
    names = list(arrays["stat_names"])
    # The hand-made run's raw files are not kept: no noise or JPEG statistics, colour ones yes.
    assert names == [*image_statistics(images[0]), *colour_statistics(images[0])]

    def value(image: np.ndarray, name: str) -> float:
        found = {**image_statistics(image), **colour_statistics(image)}[name]
        return np.nan if found is None else found

    expected = [[value(images[i], n) for n in names] for i in indices]
    np.testing.assert_allclose(arrays["stats"], expected, rtol=1e-6)
    session = ort.InferenceSession(str(bundle_dir / "model.onnx"))
    probabilities, embedding = session.run(
        ["probabilities", "embedding"], {"pixels": _onnx_input(images[indices], "NCHW")}
    )
    np.testing.assert_allclose(arrays["embeddings"], embedding, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(arrays["predictions"], probabilities, rtol=1e-5, atol=1e-6)


def test_int8_accepted_when_within_tolerance(exported: Any) -> None:
    project, results = exported
    quantized = results["colours-run"].quantized
    assert quantized is not None
    assert quantized.accepted is True, quantized.reason
    assert quantized.drop is not None and quantized.drop <= quantized.tolerance == 0.01
    assert quantized.speedup is not None and quantized.speedup > 0
    assert quantized.calibration is not None and quantized.calibration.split == "train"
    bundle = load_bundle(project / "runs" / "colours-run" / "bundle")
    assert bundle.int8_model_path is not None
    graph = onnx.load(str(bundle.int8_model_path)).graph
    assert {"QuantizeLinear", "DequantizeLinear"} <= {node.op_type for node in graph.node}
    images, labels, splits = _dataset(project, "colours-run")
    session = ort.InferenceSession(str(bundle.int8_model_path))
    probabilities, _ = session.run(
        ["probabilities", "embedding"], {"pixels": _onnx_input(images[splits == 2], "NCHW")}
    )
    assert (probabilities.argmax(axis=1) == labels[splits == 2]).mean() >= 0.99


def test_int8_refused_when_the_metric_drops(exported: Any) -> None:
    project, results = exported
    quantized = results["dishes-run"].quantized
    assert quantized is not None
    # The targets are the fp32 model's own outputs: fp32 R² is 1 and int8 can only be worse.
    assert quantized.fp32 is not None and quantized.fp32 > 0.9999
    assert quantized.drop is not None and quantized.drop > 0
    assert quantized.accepted is False
    assert "max_accuracy_drop=0" in (quantized.reason or "")
    bundle_dir = project / "runs" / "dishes-run" / "bundle"
    assert not (bundle_dir / "model.int8.onnx").exists()
    assert load_bundle(bundle_dir).int8_model_path is None
    written = BundleMeta.read(bundle_dir).quantized
    assert written is not None and written.accepted is False


def test_edited_bundle_is_refused(exported: Any, tmp_path: Path) -> None:
    project, _ = exported
    bundle_dir = shutil.copytree(project / "runs" / "colours-run" / "bundle", tmp_path / "b")
    with (bundle_dir / "reference.npz").open("ab") as handle:
        handle.write(b"\0")
    with pytest.raises(ArtifactError, match="modified after export"):
        load_bundle(bundle_dir)


def test_reversed_class_names_are_refused_on_load(exported: Any, tmp_path: Path) -> None:
    # Served, this bundle would label every red image "yellow" with no warning.
    project, _ = exported
    bundle_dir = shutil.copytree(project / "runs" / "colours-run" / "bundle", tmp_path / "b")
    meta = BundleMeta.read(bundle_dir)
    assert meta.class_names is not None
    meta.model_copy(update={"class_names": meta.class_names[::-1]}).write(bundle_dir)
    with pytest.raises(ArtifactError) as error:
        load_bundle(bundle_dir)
    message = str(error.value)
    assert "visionops.json was modified after export (class_names differ" in message
    assert "visionops export --force" in message
    assert "\n" not in message


@pytest.mark.parametrize("run", RUNS)
def test_parity_samples_reproduce_on_the_cpu(exported: Any, run: str) -> None:
    project, _ = exported
    bundle = load_bundle(project / "runs" / run / "bundle")
    assert bundle.parity is not None
    _, _, splits = _dataset(project, run)
    count = min(16, int((splits == 1).sum()))
    assert bundle.parity.samples == {"file": "parity.npz", "images": count}
    with np.load(bundle.path / "parity.npz", allow_pickle=False) as samples:
        assert (splits[samples["indices"]] == 1).all()  # validation images
        assert samples["pixels"].shape == (count, 32, 32, 3)
    record = verify_provider_parity(bundle, [CPU_PROVIDER])
    assert record.passed and record.images == count
    assert record.bound == bundle.parity.bound


def test_provider_parity_refuses_a_session_of_another_model(exported: Any) -> None:
    # The int8 graph stands in for a provider whose kernels answer differently.
    project, _ = exported
    bundle = load_bundle(project / "runs" / "colours-run" / "bundle")
    assert bundle.int8_model_path is not None
    with pytest.raises(DeviceError, match="does not reproduce its verified CPU outputs"):
        verify_provider_parity(bundle, session=ort_session(bundle.int8_model_path))


def test_exist_ok_returns_the_existing_bundle(exported: Any) -> None:
    project, results = exported
    manifest = project / "runs" / "tags-run" / "bundle" / "visionops.json"
    before = manifest.read_bytes()
    again = export_run(_settings(project), "tags-run", exist_ok=True)
    assert again.exported is False
    assert again.meta == results["tags-run"].meta
    assert again.parity == results["tags-run"].parity
    assert manifest.read_bytes() == before


def test_existing_bundle_needs_force(exported: Any) -> None:
    project, _ = exported
    manifest = project / "runs" / "colours-run" / "bundle" / "visionops.json"
    before = manifest.read_bytes()
    with pytest.raises(ArtifactError, match="already exists — pass --force"):
        export_run(_settings(project), "colours-run")
    assert manifest.read_bytes() == before


# --------------------------------------------------------------------------- failures


@pytest.fixture
def project(handmade_runs: Path, tmp_path: Path) -> Path:
    return _copy_project(handmade_runs, tmp_path / "project")


def _assert_no_bundle(project: Path, run: str) -> None:
    run_dir = project / "runs" / run
    assert not (run_dir / "bundle").exists()
    assert not list(run_dir.glob(".bundle.*.tmp"))


def test_missing_checkpoint(project: Path) -> None:
    (project / "runs" / "tags-run" / "checkpoints" / "best.pt").unlink()
    with pytest.raises(ArtifactError, match=r"no checkpoint at .*visionops train") as error:
        export_run(_settings(project), "tags-run")
    assert "\n" not in str(error.value)
    _assert_no_bundle(project, "tags-run")


# Seeds whose random bytes break the safe unpickler in different ways: UnpicklingError (0),
# IndexError (17), UnicodeDecodeError (54), KeyError (62) — each must read as "corrupt".
@pytest.mark.parametrize("seed", [0, 17, 54, 62])
def test_corrupt_checkpoint(project: Path, seed: int) -> None:
    garbage = np.random.default_rng(seed).bytes(4096)
    (project / "runs" / "tags-run" / "checkpoints" / "best.pt").write_bytes(garbage)
    with pytest.raises(ArtifactError) as error:
        export_run(_settings(project), "tags-run")
    message = str(error.value)
    assert "corrupt or truncated" in message or "safe load refuses" in message
    assert "best.pt" in message
    assert "\n" not in message
    _assert_no_bundle(project, "tags-run")


class _Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


def test_pickle_bomb_checkpoint_is_never_unpickled(project: Path, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = project / "runs" / "tags-run" / "checkpoints" / "best.pt"
    torch.save(
        {"format": "visionops.checkpoint", "x": _Exploit(marker)}, path, pickle_module=pickle
    )
    with pytest.raises(ArtifactError, match="safe load refuses") as error:
        export_run(_settings(project), "tags-run")
    assert "\n" not in str(error.value)
    assert not marker.exists()
    _assert_no_bundle(project, "tags-run")


def test_dataset_gone_names_preprocess(project: Path) -> None:
    shutil.rmtree(project / "data" / "prepared" / "tags")
    with pytest.raises(DatasetNotFoundError, match="visionops data preprocess"):
        export_run(_settings(project), "tags-run")
    _assert_no_bundle(project, "tags-run")


def test_run_of_an_unknown_task_is_refused_clearly(project: Path) -> None:
    run_dir = project / "runs" / "tags-run"
    RunRecord.read(run_dir).model_copy(update={"task": "segmentation"}).write(run_dir)
    with pytest.raises(ExportError, match="segmentation run"):
        export_run(_settings(project), "tags-run")


def test_failed_parity_writes_nothing_and_keeps_the_previous_bundle(project: Path) -> None:
    # Only the threshold is changed (1e-12 instead of 1e-4); the model and engines are real.
    bundle_dir = project / "runs" / "tags-run" / "bundle"
    bundle_dir.mkdir()
    (bundle_dir / "visionops.json").write_text("{}")
    with pytest.raises(ExportError, match=r"parity check failed .* no bundle was written") as error:
        export_run(_settings(project, "export.parity_atol=1e-12"), "tags-run", force=True)
    assert "\n" not in str(error.value)
    assert [p.name for p in bundle_dir.iterdir()] == ["visionops.json"]
    assert (bundle_dir / "visionops.json").read_text() == "{}"
    assert not list(bundle_dir.parent.glob(".bundle.*.tmp"))


@torch.library.custom_op("visionops_test::wobble", mutates_args=())
def _wobble(x: torch.Tensor) -> torch.Tensor:
    return x * 2


@_wobble.register_fake
def _(x: torch.Tensor) -> torch.Tensor:
    return torch.empty_like(x)


class Wobble(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _wobble(x)


class _Unexportable(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.block = nn.Sequential(nn.ReLU(), Wobble())

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.block(self.conv(pixels.float())).mean(dim=(2, 3))
        return features.softmax(dim=1), features


def test_unsupported_operator_is_named_with_its_layer(tmp_path: Path) -> None:
    with pytest.raises(ExportError) as error:
        export_onnx(_Unexportable(), tmp_path / "m.onnx", image_size=16, channels=3)
    message = str(error.value)
    assert "operator visionops_test.wobble in layer block.1 (Wobble)" in message
    assert "\n" not in message
    assert not (tmp_path / "m.onnx").exists()


def _wait_for(condition: Any, process: subprocess.Popen[bytes], what: str) -> None:
    """Wait until ``condition()`` holds while ``process`` runs (fail if it exits first)."""
    deadline = time.monotonic() + 300
    while not condition():
        if process.poll() is not None:
            pytest.fail(f"the export exited ({process.returncode}) before {what}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_second_export_is_refused_and_a_killed_ones_leftovers_are_cleaned(project: Path) -> None:
    run_dir = project / "runs" / "tags-run"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    first = subprocess.Popen(
        [sys.executable, "-m", "visionops", "export", "tags-run", "-q"],
        cwd=project,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for(lambda: any(run_dir.glob(".bundle.*.tmp")), first, "it staged its bundle")
        with pytest.raises(ConcurrencyError, match=f"being written by process {first.pid}"):
            export_run(_settings(project), "tags-run")
        first.send_signal(signal.SIGKILL)
        first.wait()
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    leftovers = list(run_dir.glob(".bundle.*.tmp"))
    assert leftovers, "kill -9 leaves the staged bundle behind"
    assert not (run_dir / "bundle").exists()

    result = export_run(_settings(project), "tags-run")
    assert result.parity.passed
    assert not [path for path in leftovers if path.exists()]
    assert load_bundle(run_dir / "bundle").task == "multilabel"
