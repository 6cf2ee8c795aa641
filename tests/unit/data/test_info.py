"""``dataset_info``: what ``visionops data info`` reports for prepared and raw folders."""

from pathlib import Path

import pytest
from preprocess_trees import class_tree, settings_for

from visionops.artifacts import PreparedManifest
from visionops.data.info import PreparedInfo, RawInfo, dataset_info
from visionops.data.preprocess import prepare_dataset
from visionops.errors import DatasetNotFoundError


def test_dataset_info_on_prepared_and_raw(tmp_path: Path) -> None:
    raw = class_tree(tmp_path / "raw", splits={"train": 3, "test": 2})
    (raw / "notes.txt").write_text("x", encoding="utf-8")
    settings = settings_for(tmp_path)
    raw_info = dataset_info(raw, settings)
    assert isinstance(raw_info, RawInfo)
    assert raw_info.layout == "class-folders"
    assert raw_info.splits == {"train": 9, "test": 6}
    assert raw_info.class_balance["test"] == {"blue": 2, "green": 2, "red": 2}
    assert raw_info.rejected == {"not an image": 1}
    assert raw_info.prepared is None
    assert raw_info.to_json()["kind"] == "raw"
    prepared = prepare_dataset(raw, settings).path
    info = dataset_info(prepared, settings)
    assert isinstance(info, PreparedInfo)
    assert info.manifest.counts["test"] == 6
    assert info.class_balance["test"] == {"blue": 2, "green": 2, "red": 2}
    assert info.rejected == {"not an image": 1}
    report = info.to_json()
    assert report["kind"] == "prepared"
    assert PreparedManifest.model_validate(report["manifest"]) == info.manifest
    again = dataset_info(raw, settings)
    assert isinstance(again, RawInfo)
    assert again.prepared == prepared


def test_dataset_info_on_missing_and_foreign_folders(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    with pytest.raises(DatasetNotFoundError, match=r"visionops data fetch"):
        dataset_info(tmp_path / "nothing", settings)
    foreign = tmp_path / "run"
    foreign.mkdir()
    (foreign / "manifest.json").write_text('{"kind": "visionops.run"}', encoding="utf-8")
    with pytest.raises(DatasetNotFoundError, match=r"visionops.run.*visionops data preprocess"):
        dataset_info(foreign, settings)
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "a.txt").write_text("x", encoding="utf-8")
    with pytest.raises(DatasetNotFoundError, match=r"neither a prepared dataset nor a raw one"):
        dataset_info(tmp_path / "junk", settings)
