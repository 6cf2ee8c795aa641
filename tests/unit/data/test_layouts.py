"""Layout detection and listing: class folders, CSV, MVTec AD, Nutrition5k, and bad layouts."""

from pathlib import Path

import pytest
from preprocess_trees import (
    class_tree,
    multilabel_csv,
    mvtec_tree,
    nutrition_tree,
    pattern,
    regression_csv,
    save,
)

from visionops.data.layouts import read_layout, split_index
from visionops.errors import DatasetNotFoundError, LayoutError


def _reasons(listing) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {r.path: r.reason for r in listing.rejected}


# --------------------------------------------------------------------------- class folders


def test_class_folders_without_splits(tmp_path: Path) -> None:
    raw = class_tree(tmp_path / "raw", per_class=3)
    listing = read_layout(raw)
    assert listing.layout == "class-folders"
    assert listing.task == "classification"
    assert listing.class_names == ["blue", "green", "red"]
    assert len(listing.items) == 9
    assert not listing.splits_from_source
    assert {item.split for item in listing.items} == {None}
    first = listing.items[0]
    assert first.path == "blue/blue_000.jpg"
    assert first.target == 0
    assert first.stratum == "blue"


@pytest.mark.parametrize("val_name", ["val", "valid", "validation", "Validation", "VAL"])
def test_split_folder_names_are_recognised(tmp_path: Path, val_name: str) -> None:
    raw = class_tree(tmp_path / "raw", per_class=0, splits={"Train": 3, val_name: 2, "TEST": 1})
    listing = read_layout(raw)
    assert listing.splits_from_source
    by_split = {code: sum(item.split == code for item in listing.items) for code in (0, 1, 2)}
    assert by_split == {0: 9, 1: 6, 2: 3}
    assert split_index(val_name) == 1


def test_nested_one_level(tmp_path: Path) -> None:
    raw = tmp_path / "fer"
    class_tree(raw / "archive", splits={"train": 2, "test": 1})
    (raw / "README.md").write_text("about this dataset", encoding="utf-8")
    listing = read_layout(raw)
    assert listing.layout == "class-folders"
    assert listing.splits_from_source
    assert listing.items[0].path.startswith("archive/")
    assert _reasons(listing)["README.md"].startswith("not an image")


def test_train_only_split_folder_means_unsplit(tmp_path: Path) -> None:
    raw = class_tree(tmp_path / "raw", splits={"train": 3})
    assert not read_layout(raw).splits_from_source


def test_stray_files_are_rejected_with_reasons(tmp_path: Path) -> None:
    raw = class_tree(tmp_path / "raw", splits={"train": 3, "test": 2})
    save(raw / "train" / "loose.jpg", pattern((1, 2, 3)))
    (raw / "train" / "red" / "labels.txt").write_text("x", encoding="utf-8")
    save(raw / "extras" / "other.jpg", pattern((1, 2, 3)))
    (raw / ".DS_Store").write_bytes(b"junk")
    reasons = _reasons(read_layout(raw))
    assert reasons["train/loose.jpg"].startswith("outside a class folder")
    assert reasons["train/red/labels.txt"].startswith("not an image")
    assert reasons["extras/other.jpg"].startswith("outside a split folder")
    assert ".DS_Store" not in reasons  # hidden files are ignored, not reported


def test_task_the_layout_cannot_provide(tmp_path: Path) -> None:
    raw = class_tree(tmp_path / "raw", per_class=2)
    with pytest.raises(LayoutError, match=r"provides classification, not regression.*--task"):
        read_layout(raw, task="regression")


def test_class_folders_with_good_can_be_anomaly(tmp_path: Path) -> None:
    raw = class_tree(tmp_path / "raw", classes=("good", "broken"), per_class=2)
    assert read_layout(raw).tasks == ("classification", "anomaly")
    listing = read_layout(raw, task="anomaly")
    assert listing.class_names == ["good", "defect"]
    assert {item.path.split("/")[0]: item.target for item in listing.items} == {
        "good": 0,
        "broken": 1,
    }


# --------------------------------------------------------------------------- CSV


def test_movie_poster_csv_is_multilabel_from_the_01_columns(tmp_path: Path) -> None:
    raw = multilabel_csv(tmp_path / "posters", rows=6)
    listing = read_layout(raw)
    assert listing.layout == "csv"
    assert listing.task == "multilabel"
    assert listing.class_names == ["Action", "Comedy", "Drama"]
    item = listing.items[0]
    assert item.path == "Multi_Label_dataset/Images/tt0000.jpg"
    assert item.target == (1.0, 1.0, 0.0)
    assert not listing.splits_from_source  # train.csv alone: everything is train


def test_csv_with_a_string_list_column_is_multilabel(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    lines = ["image,tags"]
    for i, tags in enumerate(["cat|dog", "dog", "cat|bird", "bird"]):
        save(raw / f"{i}.png", pattern((i, i, i)))
        lines.append(f"{i}.png,{tags}")
    (raw / "tags.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    listing = read_layout(raw)
    assert listing.task == "multilabel"
    assert listing.class_names == ["bird", "cat", "dog"]
    assert listing.items[0].target == (0.0, 1.0, 1.0)


def test_csv_single_label_column_is_classification(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    lines = ["filename,label,split"]
    for i in range(6):
        save(raw / "pics" / f"p{i}.jpg", pattern((i, 0, 0)))
        lines.append(f"p{i}.jpg,{'cat' if i % 2 else 'dog'},{'train' if i < 4 else 'test'}")
    (raw / "data.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    listing = read_layout(raw)
    assert listing.task == "classification"
    assert listing.class_names == ["cat", "dog"]
    assert listing.splits_from_source
    assert [item.split for item in listing.items] == [0, 0, 0, 0, 2, 2]


def test_csv_numeric_columns_are_regression_and_bad_rows_are_rejected(tmp_path: Path) -> None:
    raw = regression_csv(tmp_path / "raw", rows=6)
    with (raw / "labels.csv").open("a", encoding="utf-8") as handle:
        handle.write("img/p000.png,1.0\n")  # too few fields
        handle.write("img/missing.png,1.0,2.0\n")  # named but not there
        handle.write("img/p001.png,heavy,2.0\n")  # listed twice
        handle.write("img/extra.png,heavy,2.0\n")  # not a number
    save(raw / "img" / "unlisted.png", pattern((0, 0, 0)))
    save(raw / "img" / "extra.png", pattern((0, 0, 0)))
    listing = read_layout(raw)
    assert listing.task == "regression"
    assert listing.target_names == ["weight", "height"]
    assert len(listing.items) == 6
    assert listing.items[1].target == (11.0, 2.5)
    reasons = _reasons(listing)
    assert reasons["labels.csv:8"] == "bad CSV row: 2 fields, the header has 3"
    assert reasons["img/missing.png"].startswith("missing file: named in labels.csv line 9")
    assert reasons["labels.csv:10"] == "bad CSV row: img/p001.png already listed at labels.csv:3"
    assert reasons["labels.csv:11"] == "bad CSV row: 'weight' is not a number"
    assert reasons["img/unlisted.png"].startswith("unlabelled")
    assert "img/extra.png" not in reasons  # its row is the reason, reported once


def test_csv_task_override_and_refusal(tmp_path: Path) -> None:
    raw = multilabel_csv(tmp_path / "posters", rows=4)
    with pytest.raises(LayoutError, match=r"provides multilabel, not classification"):
        read_layout(raw, task="classification")


# --------------------------------------------------------------------------- MVTec AD


def test_mvtec_with_masks(tmp_path: Path) -> None:
    raw = mvtec_tree(tmp_path / "carpet", good_train=3, good_test=2, per_defect=2)
    listing = read_layout(raw)
    assert listing.layout == "mvtec"
    assert listing.task == "anomaly"
    assert listing.class_names == ["good", "defect"]
    assert listing.carve_val_from == 2
    train = [item for item in listing.items if item.split == 0]
    test = [item for item in listing.items if item.split == 2]
    assert len(train) == 3
    assert all(item.target == 0 for item in train)
    assert len(test) == 6
    hole = next(item for item in test if item.path == "test/hole/001.png")
    assert hole.target == 1
    assert hole.stratum == "hole"
    assert hole.mask == "ground_truth/hole/001_mask.png"
    assert all(item.mask is None for item in listing.items if item.target == 0)


def test_mvtec_category_inside_a_wrapper_folder(tmp_path: Path) -> None:
    mvtec_tree(tmp_path / "mvtec" / "carpet", good_train=2, good_test=1, per_defect=1)
    listing = read_layout(tmp_path / "mvtec")
    assert listing.layout == "mvtec"
    assert listing.items[0].path.startswith("carpet/")


def test_several_mvtec_categories_must_be_prepared_one_by_one(tmp_path: Path) -> None:
    for category in ("carpet", "grid"):
        mvtec_tree(tmp_path / "mvtec" / category, good_train=2, good_test=1, per_defect=1)
    with pytest.raises(LayoutError, match=r"2 MVTec AD categories \(carpet, grid\)"):
        read_layout(tmp_path / "mvtec")


# --------------------------------------------------------------------------- Nutrition5k


def test_nutrition5k_ragged_metadata_and_frames_sampled30(tmp_path: Path) -> None:
    raw = nutrition_tree(tmp_path / "n5k", dishes=4)
    listing = read_layout(raw)
    assert listing.layout == "nutrition5k"
    assert listing.task == "regression"
    assert listing.target_names == ["calories", "mass", "fat", "carb", "protein"]
    assert listing.target_units == ["kcal", "g", "g", "g", "g"]
    assert len(listing.items) == 4
    first = listing.items[0]
    # camera A, the first frame (001 before 005), from the nested frames folder
    assert first.path == "dish_2000/frames_sampled30/camera_A_frame_001.jpeg"
    assert first.target == (100.0, 200.0, 5.0, 20.0, 8.0)
    assert listing.items[3].target == (130.0, 203.0, 8.0, 26.0, 11.0)


def test_nutrition5k_camera_choice_and_missing_metadata(tmp_path: Path) -> None:
    raw = nutrition_tree(tmp_path / "n5k", dishes=3, nested=False)
    save(raw / "dish_9999" / "camera_A_frame_000.jpeg", pattern((1, 1, 1)))
    save(raw / "dish_8888" / "camera_C_frame_000.jpeg", pattern((1, 1, 1)))
    with (raw / "metadata" / "dish_metadata_cafe1.csv").open("a", encoding="utf-8") as handle:
        handle.write("dish_8888,1,2,3\n")  # too short
        handle.write("dish_8888,1,2,3,4,5\n")
    listing = read_layout(raw, camera="B")
    assert listing.items[0].path == "dish_2000/camera_B_frame_001.jpeg"
    reasons = _reasons(listing)
    assert reasons["dish_9999"].startswith("no frame: no camera B image")
    assert reasons["dish_8888"] == "no frame: no camera B image (cameras here: C)"
    assert reasons["metadata/dish_metadata_cafe1.csv:4"].startswith("bad CSV row: 4 fields")
    listing_a = read_layout(raw, camera="a")
    assert _reasons(listing_a)["dish_9999"].startswith("no metadata")


def test_nutrition5k_without_metadata(tmp_path: Path) -> None:
    raw = nutrition_tree(tmp_path / "n5k", dishes=2)
    (raw / "metadata" / "dish_metadata_cafe1.csv").unlink()
    with pytest.raises(LayoutError, match=r"no dish_metadata_cafe1.csv"):
        read_layout(raw)


# --------------------------------------------------------------------------- bad folders


def test_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "source.json").write_text("{}", encoding="utf-8")
    with pytest.raises(LayoutError, match=r"is empty .*accepted layouts: class folders"):
        read_layout(tmp_path / "raw")


def test_images_without_any_structure(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    for i in range(3):
        save(raw / f"{i}.jpg", pattern((i, i, i)))
    with pytest.raises(LayoutError, match=r"3 images but no class folders .*accepted layouts"):
        read_layout(raw)


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match=r"visionops data fetch"):
        read_layout(tmp_path / "nope")
