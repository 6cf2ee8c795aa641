"""Layout detection and listing: one test class per reader, all sharing one contract."""

from pathlib import Path
from typing import ClassVar

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

from visionops.config import Task
from visionops.data.layouts import (
    READERS,
    FolderScan,
    LayoutReader,
    RawListing,
    ReadOptions,
    detect,
    list_files,
    split_index,
)
from visionops.data.layouts.csv import CsvReader
from visionops.data.layouts.folders import ClassFoldersReader
from visionops.data.layouts.mvtec import MvtecReader
from visionops.data.layouts.nutrition5k import Nutrition5kReader
from visionops.errors import DatasetNotFoundError, LayoutError


def _reasons(listing: RawListing) -> dict[str, str]:
    return {r.path: r.reason for r in listing.rejected}


def _scan(root: Path) -> FolderScan:
    return FolderScan(root=root, files=list_files(root), prefix="")


class ReaderContract:
    """What every layout reader does; a subclass supplies the reader and a tree in its layout."""

    reader: ClassVar[LayoutReader]
    task: ClassVar[Task]
    unsupported_task: ClassVar[Task]
    items: ClassVar[int]

    def make(self, root: Path) -> Path:
        """Write a small dataset in this reader's layout under ``root``."""
        raise NotImplementedError

    def test_is_one_of_the_readers_detect_asks(self) -> None:
        assert any(type(reader) is type(self.reader) for reader in READERS)

    def test_detect_picks_this_reader(self, tmp_path: Path) -> None:
        listing = detect(self.make(tmp_path / "raw"))
        assert listing.layout == self.reader.layout
        assert listing.task == self.task
        assert listing.tasks[0] == self.task
        assert len(listing.items) == self.items

    def test_items_are_sorted_files_with_targets_of_the_right_width(self, tmp_path: Path) -> None:
        raw = self.make(tmp_path / "raw")
        listing = self.reader.read(_scan(raw), ReadOptions())
        assert listing is not None
        paths = [item.path for item in listing.items]
        assert paths == sorted(paths)
        assert all((raw / path).is_file() for path in paths)
        width = len(listing.class_names or listing.target_names or [])
        for item in listing.items:
            if isinstance(item.target, tuple):
                assert len(item.target) == width
            else:
                assert 0 <= item.target < width

    def test_declines_a_folder_in_no_layout(self, tmp_path: Path) -> None:
        raw = tmp_path / "raw"
        raw.mkdir()
        (raw / "README.md").write_text("nothing here", encoding="utf-8")
        (raw / "notes.txt").write_text("nor here", encoding="utf-8")
        assert self.reader.read(_scan(raw), ReadOptions()) is None

    def test_stray_files_are_rejected_and_hidden_ones_ignored(self, tmp_path: Path) -> None:
        raw = self.make(tmp_path / "raw")
        (raw / "notes.txt").write_text("not an image", encoding="utf-8")
        (raw / ".DS_Store").write_bytes(b"junk")
        listing = detect(raw)
        reasons = _reasons(listing)
        assert reasons["notes.txt"].startswith("not an image")
        assert ".DS_Store" not in reasons
        assert len(listing.items) == self.items

    def test_a_task_it_cannot_provide_is_refused_naming_the_ones_it_can(
        self, tmp_path: Path
    ) -> None:
        raw = self.make(tmp_path / "raw")
        with pytest.raises(
            LayoutError, match=rf"provides .*{self.task}.*not {self.unsupported_task}"
        ):
            detect(raw, task=self.unsupported_task)


class TestClassFolders(ReaderContract):
    reader = ClassFoldersReader()
    task = "classification"
    unsupported_task = "regression"
    items = 9

    def make(self, root: Path) -> Path:
        return class_tree(root, per_class=3)

    def test_class_folders_without_splits(self, tmp_path: Path) -> None:
        raw = class_tree(tmp_path / "raw", per_class=3)
        listing = detect(raw)
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
    def test_split_folder_names_are_recognised(self, tmp_path: Path, val_name: str) -> None:
        raw = class_tree(tmp_path / "raw", per_class=0, splits={"Train": 3, val_name: 2, "TEST": 1})
        listing = detect(raw)
        assert listing.splits_from_source
        by_split = {code: sum(item.split == code for item in listing.items) for code in (0, 1, 2)}
        assert by_split == {0: 9, 1: 6, 2: 3}
        assert split_index(val_name) == 1

    def test_nested_one_level(self, tmp_path: Path) -> None:
        raw = tmp_path / "fer"
        class_tree(raw / "archive", splits={"train": 2, "test": 1})
        (raw / "README.md").write_text("about this dataset", encoding="utf-8")
        listing = detect(raw)
        assert listing.layout == "class-folders"
        assert listing.splits_from_source
        assert listing.items[0].path.startswith("archive/")
        assert _reasons(listing)["README.md"].startswith("not an image")

    def test_train_only_split_folder_means_unsplit(self, tmp_path: Path) -> None:
        raw = class_tree(tmp_path / "raw", splits={"train": 3})
        assert not detect(raw).splits_from_source

    def test_stray_files_are_rejected_with_reasons(self, tmp_path: Path) -> None:
        raw = class_tree(tmp_path / "raw", splits={"train": 3, "test": 2})
        save(raw / "train" / "loose.jpg", pattern((1, 2, 3)))
        (raw / "train" / "red" / "labels.txt").write_text("x", encoding="utf-8")
        save(raw / "extras" / "other.jpg", pattern((1, 2, 3)))
        (raw / ".DS_Store").write_bytes(b"junk")
        reasons = _reasons(detect(raw))
        assert reasons["train/loose.jpg"].startswith("outside a class folder")
        assert reasons["train/red/labels.txt"].startswith("not an image")
        assert reasons["extras/other.jpg"].startswith("outside a split folder")
        assert ".DS_Store" not in reasons  # hidden files are ignored, not reported

    def test_task_the_layout_cannot_provide(self, tmp_path: Path) -> None:
        raw = class_tree(tmp_path / "raw", per_class=2)
        with pytest.raises(LayoutError, match=r"provides classification, not regression.*--task"):
            detect(raw, task="regression")

    def test_class_folders_with_good_can_be_anomaly(self, tmp_path: Path) -> None:
        raw = class_tree(tmp_path / "raw", classes=("good", "broken"), per_class=2)
        assert detect(raw).tasks == ("classification", "anomaly")
        listing = detect(raw, task="anomaly")
        assert listing.class_names == ["good", "defect"]
        assert {item.path.split("/")[0]: item.target for item in listing.items} == {
            "good": 0,
            "broken": 1,
        }


class TestCsv(ReaderContract):
    reader = CsvReader()
    task = "regression"
    unsupported_task = "anomaly"
    items = 6

    def make(self, root: Path) -> Path:
        return regression_csv(root, rows=6)

    def test_movie_poster_csv_is_multilabel_from_the_01_columns(self, tmp_path: Path) -> None:
        raw = multilabel_csv(tmp_path / "posters", rows=6)
        listing = detect(raw)
        assert listing.layout == "csv"
        assert listing.task == "multilabel"
        assert listing.class_names == ["Action", "Comedy", "Drama"]
        item = listing.items[0]
        assert item.path == "Multi_Label_dataset/Images/tt0000.jpg"
        assert item.target == (1.0, 1.0, 0.0)
        assert not listing.splits_from_source  # train.csv alone: everything is train

    def test_csv_with_a_string_list_column_is_multilabel(self, tmp_path: Path) -> None:
        raw = tmp_path / "raw"
        lines = ["image,tags"]
        for i, tags in enumerate(["cat|dog", "dog", "cat|bird", "bird"]):
            save(raw / f"{i}.png", pattern((i, i, i)))
            lines.append(f"{i}.png,{tags}")
        (raw / "tags.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
        listing = detect(raw)
        assert listing.task == "multilabel"
        assert listing.class_names == ["bird", "cat", "dog"]
        assert listing.items[0].target == (0.0, 1.0, 1.0)

    def test_csv_single_label_column_is_classification(self, tmp_path: Path) -> None:
        raw = tmp_path / "raw"
        lines = ["filename,label,split"]
        for i in range(6):
            save(raw / "pics" / f"p{i}.jpg", pattern((i, 0, 0)))
            lines.append(f"p{i}.jpg,{'cat' if i % 2 else 'dog'},{'train' if i < 4 else 'test'}")
        (raw / "data.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
        listing = detect(raw)
        assert listing.task == "classification"
        assert listing.class_names == ["cat", "dog"]
        assert listing.splits_from_source
        assert [item.split for item in listing.items] == [0, 0, 0, 0, 2, 2]

    def test_csv_numeric_columns_are_regression_and_bad_rows_are_rejected(
        self, tmp_path: Path
    ) -> None:
        raw = regression_csv(tmp_path / "raw", rows=6)
        with (raw / "labels.csv").open("a", encoding="utf-8") as handle:
            handle.write("img/p000.png,1.0\n")  # too few fields
            handle.write("img/missing.png,1.0,2.0\n")  # named but not there
            handle.write("img/p001.png,heavy,2.0\n")  # listed twice
            handle.write("img/extra.png,heavy,2.0\n")  # not a number
        save(raw / "img" / "unlisted.png", pattern((0, 0, 0)))
        save(raw / "img" / "extra.png", pattern((0, 0, 0)))
        listing = detect(raw)
        assert listing.task == "regression"
        assert listing.target_names == ["weight", "height"]
        assert len(listing.items) == 6
        assert listing.items[1].target == (11.0, 2.5)
        reasons = _reasons(listing)
        assert reasons["labels.csv:8"] == "bad CSV row: 2 fields, the header has 3"
        assert reasons["img/missing.png"].startswith("missing file: named in labels.csv line 9")
        assert (
            reasons["labels.csv:10"] == "bad CSV row: img/p001.png already listed at labels.csv:3"
        )
        assert reasons["labels.csv:11"] == "bad CSV row: 'weight' is not a number"
        assert reasons["img/unlisted.png"].startswith("unlabelled")
        assert "img/extra.png" not in reasons  # its row is the reason, reported once

    def test_csv_task_override_and_refusal(self, tmp_path: Path) -> None:
        raw = multilabel_csv(tmp_path / "posters", rows=4)
        with pytest.raises(LayoutError, match=r"provides multilabel, not classification"):
            detect(raw, task="classification")

    def test_rows_pointing_outside_the_dataset_say_so(self, tmp_path: Path) -> None:
        raw = regression_csv(tmp_path / "raw", rows=6)
        save(tmp_path / "secret.png", pattern((1, 2, 3)))
        with (raw / "labels.csv").open("a", encoding="utf-8") as handle:
            handle.write("../secret.png,1.0,2.0\n")
            handle.write(f"{tmp_path / 'secret.png'},1.0,2.0\n")
            handle.write("img/../../secret.png,1.0,2.0\n")
            handle.write("img/../img/gone.png,1.0,2.0\n")  # inside, but not there
        listing = detect(raw)
        reasons = _reasons(listing)
        for line in (8, 9, 10):
            assert reasons[f"labels.csv:{line}"].startswith("outside the dataset: ")
            assert "copy the file into the dataset folder" in reasons[f"labels.csv:{line}"]
        assert reasons["img/../img/gone.png"].startswith(
            "missing file: named in labels.csv line 11"
        )
        assert len(listing.items) == 6


class TestMvtec(ReaderContract):
    reader = MvtecReader()
    task = "anomaly"
    unsupported_task = "regression"
    items = 2 + 1 + 2 * 1

    def make(self, root: Path) -> Path:
        return mvtec_tree(root, good_train=2, good_test=1, per_defect=1)

    def test_mvtec_with_masks(self, tmp_path: Path) -> None:
        raw = mvtec_tree(tmp_path / "carpet", good_train=3, good_test=2, per_defect=2)
        listing = detect(raw)
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

    def test_mvtec_category_inside_a_wrapper_folder(self, tmp_path: Path) -> None:
        mvtec_tree(tmp_path / "mvtec" / "carpet", good_train=2, good_test=1, per_defect=1)
        listing = detect(tmp_path / "mvtec")
        assert listing.layout == "mvtec"
        assert listing.items[0].path.startswith("carpet/")

    def test_several_mvtec_categories_must_be_prepared_one_by_one(self, tmp_path: Path) -> None:
        for category in ("carpet", "grid"):
            mvtec_tree(tmp_path / "mvtec" / category, good_train=2, good_test=1, per_defect=1)
        with pytest.raises(LayoutError, match=r"2 MVTec AD categories \(carpet, grid\)"):
            detect(tmp_path / "mvtec")


class TestNutrition5k(ReaderContract):
    reader = Nutrition5kReader()
    task = "regression"
    unsupported_task = "classification"
    items = 3

    def make(self, root: Path) -> Path:
        return nutrition_tree(root, dishes=3)

    def test_nutrition5k_ragged_metadata_and_frames_sampled30(self, tmp_path: Path) -> None:
        raw = nutrition_tree(tmp_path / "n5k", dishes=4)
        listing = detect(raw)
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

    def test_nutrition5k_camera_choice_and_missing_metadata(self, tmp_path: Path) -> None:
        raw = nutrition_tree(tmp_path / "n5k", dishes=3, nested=False)
        save(raw / "dish_9999" / "camera_A_frame_000.jpeg", pattern((1, 1, 1)))
        save(raw / "dish_8888" / "camera_C_frame_000.jpeg", pattern((1, 1, 1)))
        with (raw / "metadata" / "dish_metadata_cafe1.csv").open("a", encoding="utf-8") as handle:
            handle.write("dish_8888,1,2,3\n")  # too short
            handle.write("dish_8888,1,2,3,4,5\n")
        listing = detect(raw, camera="B")
        assert listing.items[0].path == "dish_2000/camera_B_frame_001.jpeg"
        reasons = _reasons(listing)
        assert reasons["dish_9999"].startswith("no frame: no camera B image")
        assert reasons["dish_8888"] == "no frame: no camera B image (cameras here: C)"
        assert reasons["metadata/dish_metadata_cafe1.csv:4"].startswith("bad CSV row: 4 fields")
        listing_a = detect(raw, camera="a")
        assert _reasons(listing_a)["dish_9999"].startswith("no metadata")

    def test_nutrition5k_without_metadata(self, tmp_path: Path) -> None:
        raw = nutrition_tree(tmp_path / "n5k", dishes=2)
        (raw / "metadata" / "dish_metadata_cafe1.csv").unlink()
        with pytest.raises(LayoutError, match=r"no dish_metadata_cafe1.csv"):
            detect(raw)


# --------------------------------------------------------------------------- no layout


def test_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "source.json").write_text("{}", encoding="utf-8")
    with pytest.raises(LayoutError, match=r"is empty .*accepted layouts: class folders"):
        detect(tmp_path / "raw")


def test_images_without_any_structure(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    for i in range(3):
        save(raw / f"{i}.jpg", pattern((i, i, i)))
    with pytest.raises(LayoutError, match=r"3 images but no class folders .*accepted layouts"):
        detect(raw)


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match=r"visionops data fetch"):
        detect(tmp_path / "nope")
