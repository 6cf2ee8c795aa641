"""``visionops.bundle``: the torch-free reader serve and drift trust.

These tests build bundle folders by hand (the reader checks files and records, not the
graph), so every refusal path is exercised without an export.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from visionops._io import file_sha256
from visionops.bundle import find_bundle, load_bundle, write_bundle_manifest
from visionops.errors import ArtifactError

MANIFEST = {
    "task": "classification",
    "model_version": "run-001@abcdef12",
    "input": {
        "name": "pixels",
        "dtype": "uint8",
        "layout": "NCHW",
        "size": 32,
        "channels": 3,
        "resize": "crop",
        "max_image_pixels": 64_000_000,
    },
    "outputs": {"main": "probabilities", "embedding": "embedding"},
    "class_names": ["cat", "dog"],
    "target_names": None,
    "target_units": None,
    "thresholds": None,
    "quantized": None,
}


def _bundle(folder: Path, *, passed: bool | None = True, int8: bool = False) -> Path:
    folder.mkdir(parents=True)
    (folder / "model.onnx").write_bytes(b"graph bytes")
    (folder / "reference.npz").write_bytes(b"reference bytes")
    if passed is not None:
        (folder / "parity.json").write_text(json.dumps({"passed": passed}))
    manifest = dict(MANIFEST)
    if int8:
        (folder / "model.int8.onnx").write_bytes(b"int8 graph")
        manifest["quantized"] = {"accepted": True, "file": "model.int8.onnx"}
    write_bundle_manifest(folder, manifest)
    return folder


def test_manifest_records_every_file(tmp_path: Path) -> None:
    folder = _bundle(tmp_path / "bundle")
    (folder / ".hidden").write_text("ignored")
    manifest = json.loads((folder / "visionops.json").read_text())
    assert manifest["kind"] == "visionops.bundle"
    assert manifest["schema_version"] == 1
    assert manifest["files"] == {
        name: file_sha256(folder / name) for name in ("model.onnx", "parity.json", "reference.npz")
    }


def test_load_verified_bundle(tmp_path: Path) -> None:
    bundle = load_bundle(_bundle(tmp_path / "bundle", int8=True))
    assert bundle.task == "classification"
    assert bundle.labels == ["cat", "dog"]
    assert bundle.model_version == "run-001@abcdef12"
    assert bundle.input["size"] == 32
    assert bundle.model_path.name == "model.onnx"
    assert bundle.int8_model_path is not None
    assert bundle.int8_model_path.name == "model.int8.onnx"
    assert bundle.parity == {"passed": True}


def test_refused_int8_is_not_offered(tmp_path: Path) -> None:
    folder = tmp_path / "bundle"
    _bundle(folder)
    manifest = json.loads((folder / "visionops.json").read_text())
    manifest["quantized"] = {"accepted": False, "reason": "drop too large"}
    (folder / "visionops.json").write_text(json.dumps(manifest))
    assert load_bundle(folder).int8_model_path is None


@pytest.mark.parametrize("name", ["model.onnx", "reference.npz", "parity.json"])
def test_edited_file_is_refused(tmp_path: Path, name: str) -> None:
    folder = _bundle(tmp_path / "bundle")
    with (folder / name).open("ab") as handle:
        handle.write(b" ")
    with pytest.raises(ArtifactError, match=f"{name} was modified after export") as error:
        load_bundle(folder)
    assert "visionops export --force" in str(error.value)
    load_bundle(folder, verify=False, allow_unverified=True)


def test_missing_file_is_refused(tmp_path: Path) -> None:
    folder = _bundle(tmp_path / "bundle")
    (folder / "reference.npz").unlink()
    with pytest.raises(ArtifactError, match=r"reference\.npz is missing"):
        load_bundle(folder)


@pytest.mark.parametrize("passed", [False, None])
def test_no_passing_parity_needs_allow_unverified(tmp_path: Path, passed: bool | None) -> None:
    folder = _bundle(tmp_path / "bundle", passed=passed)
    with pytest.raises(ArtifactError, match=r"no passing parity record.*--allow-unverified"):
        load_bundle(folder)
    assert load_bundle(folder, allow_unverified=True).task == "classification"


def test_not_a_bundle(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match=r"not a bundle .*visionops export"):
        load_bundle(tmp_path)
    (tmp_path / "visionops.json").write_text("{not json")
    with pytest.raises(ArtifactError, match="not valid JSON"):
        load_bundle(tmp_path)
    (tmp_path / "visionops.json").write_text(json.dumps({"kind": "visionops.run"}))
    with pytest.raises(ArtifactError, match="not a visionops bundle manifest"):
        load_bundle(tmp_path)
    (tmp_path / "visionops.json").write_text(
        json.dumps({"kind": "visionops.bundle", "schema_version": 99})
    )
    with pytest.raises(ArtifactError, match="schema_version 99"):
        load_bundle(tmp_path)


def test_find_bundle_from_bundle_run_or_latest(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    run_dir = runs / "run-001"
    run_dir.mkdir(parents=True)
    (run_dir / "run.json").write_text(json.dumps({"kind": "visionops.run", "schema_version": 1}))
    with pytest.raises(ArtifactError, match=r"has no bundle .*visionops export"):
        find_bundle(run_dir, runs)
    bundle_dir = _bundle(run_dir / "bundle")
    (runs / "latest").symlink_to("run-001")
    assert find_bundle(bundle_dir, runs) == bundle_dir
    assert find_bundle(run_dir, runs) == bundle_dir
    assert find_bundle(Path("run-001"), runs) == bundle_dir
    assert find_bundle(None, runs).resolve() == bundle_dir.resolve()
