"""``visionops.inference.bundle``: the torch-free reader serve and drift trust.

The bundles here are tiny but real (bundle_helpers.py: an ONNX graph made with onnx.helper,
sealed by the real writer), so every refusal path is exercised without an export.
"""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest

from bundle_helpers import CLASS_NAMES, make_bundle, tiny_graph
from visionops._io import file_sha256
from visionops.artifacts import BundleMeta
from visionops.errors import ArtifactError
from visionops.inference.bundle import find_bundle, load_bundle, read_onnx_metadata

BUNDLE_FILES = ("model.onnx", "parity.json", "parity.npz", "reference.npz")


def _edit_manifest(folder: Path, **changes: object) -> None:
    # Raw JSON on purpose: it edits the file by hand, as a user could, which the reader must catch.
    path = folder / "visionops.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}, indent=2))


def test_manifest_records_every_file(tmp_path: Path) -> None:
    folder = make_bundle(tmp_path / "bundle")
    (folder / ".hidden").write_text("ignored")
    meta = BundleMeta.read(folder)
    assert meta.kind == "visionops.bundle"
    assert meta.schema_version == 1
    assert meta.files == {name: file_sha256(folder / name) for name in BUNDLE_FILES}


def test_manifest_is_sealed_in_the_graph(tmp_path: Path) -> None:
    folder = make_bundle(tmp_path / "bundle", int8=True)
    # The sealed copy is the file's JSON verbatim, less ``files``: compared as JSON on purpose.
    manifest = json.loads((folder / "visionops.json").read_text())
    del manifest["files"]
    for graph in ("model.onnx", "model.int8.onnx"):
        props = {p.key: p.value for p in onnx.load(str(folder / graph)).metadata_props}
        assert json.loads(props["visionops"]) == manifest


def test_metadata_is_read_without_loading_the_graph(tmp_path: Path) -> None:
    folder = make_bundle(tmp_path / "bundle")
    proto = onnx.load(str(folder / "model.onnx"))
    entry = proto.metadata_props.add()
    entry.key, entry.value = "author", "ünïcode ✓"
    onnx.save_model(proto, str(tmp_path / "m.onnx"))
    expected = {p.key: p.value for p in proto.metadata_props}
    assert read_onnx_metadata(tmp_path / "m.onnx") == expected
    (tmp_path / "junk.onnx").write_bytes(b"\xff" * 12)
    with pytest.raises(ArtifactError, match="not a readable ONNX model"):
        read_onnx_metadata(tmp_path / "junk.onnx")


def test_load_verified_bundle(tmp_path: Path) -> None:
    bundle = load_bundle(make_bundle(tmp_path / "bundle", int8=True))
    assert bundle.task == bundle.meta.task == "classification"
    assert bundle.labels == CLASS_NAMES
    assert bundle.model_version == "tiny-run@abcdef12"
    assert bundle.meta.input.size == 4
    assert bundle.meta.input.layout == "NCHW"
    assert bundle.model_path.name == "model.onnx"
    assert bundle.int8_model_path is not None
    assert bundle.int8_model_path.name == "model.int8.onnx"
    assert bundle.parity is not None and bundle.parity.passed


def test_refused_int8_is_not_offered(tmp_path: Path) -> None:
    folder = make_bundle(tmp_path / "bundle", quantized={"accepted": False, "reason": "drop"})
    assert load_bundle(folder).int8_model_path is None


@pytest.mark.parametrize("name", BUNDLE_FILES)
def test_edited_file_is_refused(tmp_path: Path, name: str) -> None:
    folder = make_bundle(tmp_path / "bundle")
    with (folder / name).open("ab") as handle:
        handle.write(b" ")
    with pytest.raises(ArtifactError, match=f"{name} was modified after export") as error:
        load_bundle(folder)
    assert "visionops export --force" in str(error.value)
    load_bundle(folder, verify=False, allow_unverified=True)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("class_names", CLASS_NAMES[::-1]),
        ("thresholds", [0.9, 0.9, 0.9]),
        ("input", {"name": "pixels", "size": 4, "channels": 3, "max_image_pixels": 10**9}),
        ("task", "multilabel"),
    ],
)
def test_edited_manifest_is_refused(tmp_path: Path, field: str, value: object) -> None:
    # The reversed class names would give every answer the wrong label with no other sign.
    folder = make_bundle(tmp_path / "bundle")
    _edit_manifest(folder, **{field: value})
    with pytest.raises(ArtifactError) as error:
        load_bundle(folder)
    message = str(error.value)
    assert f"visionops.json was modified after export ({field} differ" in message
    assert "visionops export --force" in message
    assert "\n" not in message


def test_added_manifest_field_is_refused(tmp_path: Path) -> None:
    folder = make_bundle(tmp_path / "bundle")
    _edit_manifest(folder, target_units=["kcal"])
    with pytest.raises(ArtifactError, match=r"\(target_units differ"):
        load_bundle(folder)


def test_graph_checksum_dropped_from_the_manifest_is_refused(tmp_path: Path) -> None:
    # Without its checksum the graph (and the manifest copy sealed in it) could be swapped.
    folder = make_bundle(tmp_path / "bundle")
    meta = BundleMeta.read(folder)
    del meta.files["model.onnx"]
    meta.write(folder)
    with pytest.raises(ArtifactError, match=r"records no checksum for model\.onnx"):
        load_bundle(folder)


def test_graph_without_sealed_manifest_is_refused(tmp_path: Path) -> None:
    folder = make_bundle(tmp_path / "bundle")
    tiny_graph(folder / "model.onnx")  # an unsealed graph with its checksum recorded
    _edit_manifest(folder, files={"model.onnx": file_sha256(folder / "model.onnx")})
    with pytest.raises(ArtifactError, match="carries no visionops metadata"):
        load_bundle(folder)


def test_missing_file_is_refused(tmp_path: Path) -> None:
    folder = make_bundle(tmp_path / "bundle")
    (folder / "reference.npz").unlink()
    with pytest.raises(ArtifactError, match=r"reference\.npz is missing"):
        load_bundle(folder)


@pytest.mark.parametrize("passed", [False, None])
def test_no_passing_parity_needs_allow_unverified(tmp_path: Path, passed: bool | None) -> None:
    folder = make_bundle(tmp_path / "bundle", passed=passed)
    with pytest.raises(ArtifactError, match=r"no passing parity record.*--allow-unverified"):
        load_bundle(folder)
    assert load_bundle(folder, allow_unverified=True).task == "classification"


def test_not_a_bundle(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match=r"visionops\.json does not exist .*visionops export"):
        load_bundle(tmp_path)
    (tmp_path / "visionops.json").write_text("{not json")
    with pytest.raises(ArtifactError, match="not readable JSON"):
        load_bundle(tmp_path)
    (tmp_path / "visionops.json").write_text(json.dumps({"kind": "visionops.run"}))
    with pytest.raises(ArtifactError, match=r"'visionops\.run' manifest, not 'visionops\.bundle'"):
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
    bundle_dir = make_bundle(run_dir / "bundle")
    (runs / "latest").symlink_to("run-001")
    assert find_bundle(bundle_dir, runs) == bundle_dir
    assert find_bundle(run_dir, runs) == bundle_dir
    assert find_bundle(Path("run-001"), runs) == bundle_dir
    assert find_bundle(None, runs).resolve() == bundle_dir.resolve()
