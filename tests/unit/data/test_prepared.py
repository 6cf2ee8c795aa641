"""Reading prepared datasets: validation messages, metadata, split indices, find_prepared."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from preprocess_trees import class_tree, mvtec_tree, regression_csv, settings_for

from visionops.artifacts import PreparedManifest
from visionops.data.prepared import PreparedDataset, find_prepared
from visionops.data.preprocess import prepare_dataset
from visionops.errors import ArtifactError, DatasetNotFoundError


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("prepared")
    raw = class_tree(tmp / "shapes", splits={"train": 6, "val": 2, "test": 2})
    return prepare_dataset(raw, settings_for(tmp)).path


@pytest.fixture
def copy(prepared: Path, tmp_path: Path) -> Path:
    target = tmp_path / "shapes"
    shutil.copytree(prepared, target)
    return target


def _edit_manifest(folder: Path, **changes: object) -> None:
    # Raw JSON on purpose: it damages the file on disk (kind, schema_version) the way a user could.
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    manifest.update(changes)
    (folder / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")


def test_open_exposes_arrays_and_metadata(prepared: Path) -> None:
    dataset = PreparedDataset.open(prepared)
    assert len(dataset) == 30
    assert dataset.task == "classification"
    assert dataset.class_names == ["blue", "green", "red"]
    assert dataset.num_outputs == 3
    assert dataset.target_names is None
    assert (dataset.image_size, dataset.channels, dataset.resize) == (16, 3, "crop")
    assert len(dataset.mean) == 3
    assert len(dataset.std) == 3
    assert isinstance(dataset.images, np.memmap)
    assert not dataset.images.flags.writeable
    assert dataset.masks is None
    assert dataset.fingerprint == dataset.manifest.fingerprint
    assert dataset.name == "shapes"
    assert len(dataset.read_items()) == 30
    assert dataset.read_rejected() == []


def test_items_are_typed_rows_and_give_the_sizes_before_resizing(copy: Path) -> None:
    dataset = PreparedDataset.open(copy)
    items = dataset.read_items()
    assert [item.index for item in items] == list(range(30))
    assert {item.split for item in items} == {"train", "val", "test"}
    assert (items[0].width, items[0].height) == (40, 30)
    sizes = dataset.original_sizes(np.array([0, 29]))
    assert sizes is not None and sizes.tolist() == [[40.0, 30.0], [40.0, 30.0]]
    # Datasets prepared before sizes were kept have no width/height: no sizes, no error.
    lines = (copy / "items.csv").read_text(encoding="utf-8").splitlines()
    old = [",".join(line.split(",")[:5]) for line in lines]
    (copy / "items.csv").write_text("\n".join(old) + "\n", encoding="utf-8")
    assert dataset.read_items()[0].width is None
    assert dataset.original_sizes(np.array([0])) is None


def test_indices_partition_the_dataset(prepared: Path) -> None:
    dataset = PreparedDataset.open(prepared)
    parts = [dataset.indices(split) for split in ("train", "val", "test")]
    assert [len(p) for p in parts] == [18, 6, 6]
    assert parts[0].dtype == np.int64
    np.testing.assert_array_equal(np.sort(np.concatenate(parts)), np.arange(30))
    with pytest.raises(ValueError, match=r"unknown split 'dev'"):
        dataset.indices("dev")


def test_regression_and_anomaly_metadata(tmp_path: Path) -> None:
    regression = PreparedDataset.open(
        prepare_dataset(regression_csv(tmp_path / "reg", rows=20), settings_for(tmp_path)).path
    )
    assert regression.class_names is None
    assert regression.target_names == ["weight", "height"]
    assert regression.num_outputs == 2
    assert regression.target_mean is not None
    assert regression.target_std is not None
    assert all(s > 0 for s in regression.target_std)
    anomaly = PreparedDataset.open(
        prepare_dataset(mvtec_tree(tmp_path / "carpet"), settings_for(tmp_path)).path
    )
    assert anomaly.masks is not None
    assert anomaly.masks.shape == (20, 16, 16)
    assert anomaly.num_outputs == 1


def test_missing_folder_names_the_command(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match=r"visionops data preprocess data/raw/shapes"):
        PreparedDataset.open(tmp_path / "shapes")


def test_raw_folder_is_not_a_prepared_dataset(tmp_path: Path) -> None:
    raw = class_tree(tmp_path / "raw", per_class=1)
    with pytest.raises(DatasetNotFoundError, match=f"run `visionops data preprocess {raw}`"):
        PreparedDataset.open(raw)


def test_corrupt_manifest(copy: Path) -> None:
    (copy / "manifest.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(ArtifactError, match=r"not readable JSON .*visionops data preprocess"):
        PreparedDataset.open(copy)


def test_foreign_manifest(copy: Path) -> None:
    _edit_manifest(copy, kind="visionops.run")
    with pytest.raises(ArtifactError, match=r"'visionops.run' manifest, not 'visionops.prepared'"):
        PreparedDataset.open(copy)


def test_newer_schema(copy: Path) -> None:
    _edit_manifest(copy, schema_version=99)
    with pytest.raises(ArtifactError, match=r"schema_version 99; this visionops reads 1"):
        PreparedDataset.open(copy)


def test_missing_array(copy: Path) -> None:
    (copy / "targets.npy").unlink()
    with pytest.raises(ArtifactError, match=r"missing targets.npy — re-run"):
        PreparedDataset.open(copy)


def test_truncated_array(copy: Path) -> None:
    data = (copy / "images.npy").read_bytes()
    (copy / "images.npy").write_bytes(data[: len(data) // 2])
    with pytest.raises(ArtifactError, match=r"unreadable array"):
        PreparedDataset.open(copy)


def test_inconsistent_shapes(copy: Path) -> None:
    np.save(copy / "targets.npy", np.zeros(7, dtype=np.int64))
    with pytest.raises(ArtifactError, match=r"inconsistent: targets.npy is int64 \(7,\)"):
        PreparedDataset.open(copy)
    np.save(copy / "targets.npy", np.zeros(30, dtype=np.int64))
    _edit_manifest(copy, image_size=32)
    with pytest.raises(ArtifactError, match=r"images.npy is uint8 \(30, 16, 16, 3\)"):
        PreparedDataset.open(copy)


def test_edited_counts(copy: Path) -> None:
    manifest = PreparedManifest.read(copy)
    manifest.counts["train"] = 1
    manifest.write(copy)
    with pytest.raises(ArtifactError, match=r"manifest counts 1 train images, found 18"):
        PreparedDataset.open(copy)


def test_find_prepared_picks_the_newest(prepared: Path, tmp_path: Path) -> None:
    settings = settings_for(tmp_path, prepared_root=str(tmp_path / "root"))
    assert find_prepared(settings) is None
    older = tmp_path / "root" / "older"
    newer = tmp_path / "root" / "newer"
    shutil.copytree(prepared, older)
    shutil.copytree(prepared, newer)
    (tmp_path / "root" / ".newer.tmp").mkdir()  # a half-built one is never picked
    (tmp_path / "root" / "not-a-dataset").mkdir()
    os.utime(older / "manifest.json", (1, 1))
    assert find_prepared(settings) == newer


def test_reader_does_not_import_torch() -> None:
    code = (
        "import sys, visionops.data.prepared, visionops.data.preprocess;"
        " print('torch' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"


def test_the_demo_fixtures_open(
    prepared_shapes: Path,
    prepared_multilabel: Path,
    prepared_regression: Path,
    prepared_anomaly: Path,
) -> None:
    shapes = PreparedDataset.open(prepared_shapes)
    assert shapes.task == "classification"
    assert shapes.manifest.splits_from_source is True
    assert shapes.manifest.source.source == "demo:shapes"  # fetch's source.json is kept
    multilabel = PreparedDataset.open(prepared_multilabel)
    assert multilabel.task == "multilabel"
    assert multilabel.targets.shape[1] == len(multilabel.class_names or [])
    regression = PreparedDataset.open(prepared_regression)
    assert regression.target_units == ["kcal", "g", "g", "g", "g"]
    anomaly = PreparedDataset.open(prepared_anomaly)
    assert anomaly.masks is not None
    assert set(anomaly.targets[anomaly.indices("train")].tolist()) == {0}
    assert anomaly.masks[anomaly.targets == 1].max() == 255
    for dataset in (shapes, multilabel, regression, anomaly):
        assert dataset.manifest.counts["rejected"] == 0
        assert len(dataset.indices("val")) > 0
