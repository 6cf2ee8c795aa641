"""The preprocess engine: formats, bad inputs, splits, duplicates, idempotence, interrupts."""

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from preprocess_trees import (
    bad_files,
    class_tree,
    leftovers,
    multilabel_csv,
    mvtec_tree,
    nutrition_tree,
    pattern,
    regression_csv,
    save,
    settings_for,
)

from visionops.artifacts import PreparedManifest, SourceRecord
from visionops.data import decoding
from visionops.data.preprocess import prepare_dataset
from visionops.errors import ArtifactError, DataError, DatasetNotFoundError, LayoutError
from visionops.imaging import load_image

MANIFEST_KEYS = {
    "schema_version", "kind", "name", "task", "class_names", "target_names", "target_units",
    "target_mean", "target_std", "image_size", "channels", "resize", "mean", "std", "counts",
    "class_counts", "splits_from_source", "source", "params", "fingerprint", "created_at",
    "visionops_version",
}  # fmt: skip


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _manifest(folder: Path) -> PreparedManifest:
    return PreparedManifest.read(folder)


# --------------------------------------------------------------------------- the format


def test_class_folders_prepared_per_the_artifact_format(tmp_path: Path) -> None:
    raw = class_tree(tmp_path / "shapes", per_class=8)
    settings = settings_for(tmp_path)
    result = prepare_dataset(raw, settings)
    out = tmp_path / "prepared" / "shapes"
    assert result.path == out
    assert not result.skipped
    assert sorted(p.name for p in out.iterdir()) == [
        "images.npy", "items.csv", "manifest.json", "preprocess.log", "rejected.csv",
        "splits.npy", "targets.npy",
    ]  # fmt: skip
    images = np.load(out / "images.npy", mmap_mode="r")
    targets = np.load(out / "targets.npy")
    splits = np.load(out / "splits.npy")
    assert images.shape == (24, 16, 16, 3)
    assert images.dtype == np.uint8
    assert targets.shape == (24,)
    assert targets.dtype == np.int64
    assert splits.shape == (24,)
    assert splits.dtype == np.uint8

    manifest = _manifest(out)
    # The manifest's keys are its on-disk format (docs/artifacts.md): checked as JSON on purpose.
    assert set(json.loads((out / "manifest.json").read_text("utf-8"))) == MANIFEST_KEYS
    assert manifest.kind == "visionops.prepared"
    assert manifest.schema_version == 1
    assert manifest.task == "classification"
    assert manifest.class_names == ["blue", "green", "red"]
    assert manifest.counts["train"] + manifest.counts["val"] + manifest.counts["test"] == 24
    assert manifest.params == {
        "image_size": 16, "channels": 3, "resize": "crop", "val_ratio": 0.15,
        "test_ratio": 0.15, "seed": 0, "task": None, "camera": "A",
    }  # fmt: skip
    assert manifest.source.source.startswith("folder:")
    assert manifest.source.file_count == 24

    items = _rows(out / "items.csv")
    assert list(items[0]) == ["index", "path", "split", "target", "sha256", "width", "height"]
    for row in items:
        index = int(row["index"])
        # The size before resizing, a drift statistic (serve logs it for each upload).
        with Image.open(raw / row["path"]) as source:
            assert (int(row["width"]), int(row["height"])) == source.size
        assert row["target"] == manifest.class_names[targets[index]]
        assert row["split"] == ("train", "val", "test")[splits[index]]
        # Stored pixels are exactly what the shared load_image gives (serving uses it too).
        expected = load_image(raw / row["path"], size=16, channels=3, policy="crop")
        np.testing.assert_array_equal(images[index], expected)

    train = images[splits == 0].astype(np.float64) / 255
    np.testing.assert_allclose(manifest.mean, train.mean(axis=(0, 1, 2)), atol=1e-5)
    np.testing.assert_allclose(manifest.std, train.std(axis=(0, 1, 2)), atol=1e-5)
    assert _rows(out / "rejected.csv") == []
    assert "class-folders layout" in (out / "preprocess.log").read_text(encoding="utf-8")


def test_bad_files_are_skipped_and_listed(tmp_path: Path) -> None:
    raw = class_tree(tmp_path / "raw", per_class=6)
    expected = bad_files(raw / "red")
    result = prepare_dataset(raw, settings_for(tmp_path, max_image_pixels=1_000_000))
    rejected = {row["path"]: row["reason"] for row in _rows(result.path / "rejected.csv")}
    assert set(rejected) == {f"red/{name}" for name in expected}
    for name, kind in expected.items():
        assert rejected[f"red/{name}"].startswith(kind + ":"), rejected[f"red/{name}"]
    assert result.manifest.counts["rejected"] == 6
    assert result.rejected_by_reason["not an image"] == 2
    assert len(np.load(result.path / "targets.npy")) == 18
    assert "skipped 6 files" in (result.path / "preprocess.log").read_text(encoding="utf-8")


def test_multilabel_csv(tmp_path: Path) -> None:
    raw = multilabel_csv(tmp_path / "posters", rows=24)
    result = prepare_dataset(raw, settings_for(tmp_path))
    targets = np.load(result.path / "targets.npy")
    assert targets.dtype == np.float32
    assert targets.shape == (24, 3)
    assert set(np.unique(targets)) == {0.0, 1.0}
    manifest = result.manifest
    assert manifest.class_names == ["Action", "Comedy", "Drama"]
    splits = np.load(result.path / "splits.npy")
    assert manifest.class_counts["train"]["Action"] == int(targets[splits == 0, 0].sum())
    first = next(r for r in _rows(result.path / "items.csv") if r["path"].endswith("tt0000.jpg"))
    assert first["target"] == "Action;Comedy"


def test_regression_csv_targets_and_statistics(tmp_path: Path) -> None:
    raw = regression_csv(tmp_path / "raw", rows=30)
    with (raw / "labels.csv").open("a", encoding="utf-8") as handle:
        handle.write("img/gone.png,1,2\n")
    result = prepare_dataset(raw, settings_for(tmp_path))
    targets = np.load(result.path / "targets.npy")
    splits = np.load(result.path / "splits.npy")
    assert targets.dtype == np.float32
    assert targets.shape == (30, 2)
    manifest = result.manifest
    assert manifest.task == "regression"
    assert manifest.class_names is None
    assert manifest.target_names == ["weight", "height"]
    assert manifest.target_units == ["", ""]
    np.testing.assert_allclose(manifest.target_mean, targets[splits == 0].mean(axis=0), 1e-5)
    np.testing.assert_allclose(manifest.target_std, targets[splits == 0].std(axis=0), 1e-5)
    rejected = _rows(result.path / "rejected.csv")
    assert rejected == [
        {"path": "img/gone.png", "reason": "missing file: named in labels.csv line 32, not found"}
    ]


def test_nutrition5k(tmp_path: Path) -> None:
    raw = nutrition_tree(tmp_path / "nutrition", dishes=12)
    result = prepare_dataset(raw, settings_for(tmp_path))
    manifest = result.manifest
    assert manifest.target_names == ["calories", "mass", "fat", "carb", "protein"]
    assert manifest.target_units == ["kcal", "g", "g", "g", "g"]
    assert sum(manifest.counts[s] for s in ("train", "val", "test")) == 12
    assert manifest.params["camera"] == "A"


def test_mvtec_splits_and_masks(tmp_path: Path) -> None:
    raw = mvtec_tree(tmp_path / "carpet", good_train=6, good_test=4, per_defect=4)
    result = prepare_dataset(raw, settings_for(tmp_path))
    out = result.path
    masks = np.load(out / "masks.npy")
    targets = np.load(out / "targets.npy")
    splits = np.load(out / "splits.npy")
    assert masks.shape == (18, 16, 16)
    assert masks.dtype == np.uint8
    assert set(np.unique(masks)) <= {0, 255}
    assert result.manifest.class_names == ["good", "defect"]
    assert result.manifest.splits_from_source is True
    assert np.all(targets[splits == 0] == 0)  # train is train/good only
    assert (splits == 0).sum() == 6
    items = _rows(out / "items.csv")
    for kind in ("good", "hole", "scratch"):
        in_test = [r for r in items if r["path"].startswith(f"test/{kind}/")]
        # the source's test images are split half/half into val and test, per defect type
        assert sorted(r["split"] for r in in_test) == ["test", "test", "val", "val"]
    for row in items:
        index = int(row["index"])
        assert (masks[index].max() == 255) == (row["target"] == "defect")


def test_mvtec_mask_of_another_size_rejects_its_image(tmp_path: Path) -> None:
    raw = mvtec_tree(tmp_path / "carpet", good_train=6, good_test=4, per_defect=4)
    save(raw / "ground_truth" / "hole" / "001_mask.png", Image.new("L", (20, 20), 255))
    result = prepare_dataset(raw, settings_for(tmp_path))
    rejected = _rows(result.path / "rejected.csv")
    assert rejected == [
        {
            "path": "test/hole/001.png",
            "reason": "bad mask: 001_mask.png is 20x20, its image 40x30 — use the mask made for"
            " this image",
        }
    ]
    assert "test/hole/001.png" not in {r["path"] for r in _rows(result.path / "items.csv")}


def test_mvtec_without_good_training_images_writes_nothing(tmp_path: Path) -> None:
    raw = mvtec_tree(tmp_path / "carpet", good_train=0, good_test=4, per_defect=4)
    (raw / "train" / "good").mkdir(parents=True)
    with pytest.raises(DataError) as caught:
        prepare_dataset(raw, settings_for(tmp_path))
    message = str(caught.value)
    assert "no good image in the train split" in message and "train/good/" in message
    assert "\n" not in message
    assert leftovers(tmp_path / "prepared") == []


# --------------------------------------------------------------------------- image kinds


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    array = np.zeros((32, 32, 3), dtype=np.uint8)
    array[:16] = (255, 0, 0)  # top red
    array[16:] = (0, 0, 255)  # bottom blue
    exif = Image.Exif()
    exif[0x0112] = 6  # the camera was turned: display rotated 90° clockwise
    for name in ("a", "b"):
        save(raw / name / "photo.jpg", Image.fromarray(array), exif=exif.tobytes(), quality=95)
    result = prepare_dataset(raw, settings_for(tmp_path, val_ratio=0.0, test_ratio=0.0))
    image = np.load(result.path / "images.npy")[0].astype(int)
    left, right = image[8, 2], image[8, 13]
    assert left[2] > 200
    assert left[0] < 60
    assert right[0] > 200
    assert right[2] < 60


def _mode_images(raw: Path) -> None:
    base = np.asarray(pattern((200, 120, 40), (32, 32)))
    save(raw / "a" / "gray.png", Image.fromarray(base[:, :, 0], mode="L"))
    save(raw / "a" / "palette.png", Image.fromarray(base).convert("P"))
    rgba = np.dstack([base, np.full((32, 32), 255, np.uint8)])
    rgba[:, :16, 3] = 0  # left half transparent
    save(raw / "a" / "rgba.png", Image.fromarray(rgba, mode="RGBA"))
    save(raw / "b" / "cmyk.jpg", Image.fromarray(base).convert("CMYK"))
    wide = np.full((32, 32), 65535, dtype=np.uint16)
    save(raw / "b" / "sixteen.png", Image.fromarray(wide))


@pytest.mark.parametrize("channels", [3, 1])
def test_grayscale_palette_rgba_cmyk_16bit(tmp_path: Path, channels: int) -> None:
    raw = tmp_path / "modes"
    _mode_images(raw)
    settings = settings_for(tmp_path, val_ratio=0.0, test_ratio=0.0, channels=channels)
    result = prepare_dataset(raw, settings)
    assert result.manifest.counts["rejected"] == 0
    images = np.load(result.path / "images.npy")
    assert images.shape == (5, 16, 16, channels)
    for row in _rows(result.path / "items.csv"):
        expected = load_image(raw / row["path"], size=16, channels=channels)  # type: ignore[arg-type]
        np.testing.assert_array_equal(images[int(row["index"])], expected)
    by_path = {row["path"]: int(row["index"]) for row in _rows(result.path / "items.csv")}
    assert np.all(images[by_path["a/rgba.png"]][:, :4] == 255)  # transparent → white
    assert np.all(images[by_path["b/sixteen.png"]] == 255)  # 16-bit full scale → 255


def test_letterbox_and_grayscale_parameters(tmp_path: Path) -> None:
    raw = class_tree(tmp_path / "raw", per_class=4)
    settings = settings_for(tmp_path, resize="letterbox", channels=1, image_size=20)
    result = prepare_dataset(raw, settings)
    images = np.load(result.path / "images.npy")
    assert images.shape == (12, 20, 20, 1)
    row = _rows(result.path / "items.csv")[0]
    expected = load_image(raw / row["path"], size=20, channels=1, policy="letterbox")
    np.testing.assert_array_equal(images[0], expected)
    assert result.manifest.resize == "letterbox"
    assert len(result.manifest.mean) == 1


# --------------------------------------------------------------------------- splits


def test_splits_are_stratified_and_deterministic(tmp_path: Path) -> None:
    raw = class_tree(tmp_path / "raw", per_class=20)
    settings = settings_for(tmp_path, val_ratio=0.2, test_ratio=0.2)
    first = prepare_dataset(raw, settings)
    splits_a = np.load(first.path / "splits.npy")
    for split in ("val", "test"):
        assert first.manifest.class_counts[split] == {"blue": 4, "green": 4, "red": 4}
    again = prepare_dataset(raw, settings, force=True)
    np.testing.assert_array_equal(np.load(again.path / "splits.npy"), splits_a)
    other_seed = settings_for(tmp_path, val_ratio=0.2, test_ratio=0.2, seed=7)
    other = prepare_dataset(raw, other_seed)
    assert not np.array_equal(np.load(other.path / "splits.npy"), splits_a)
    assert other.manifest.class_counts["test"] == {"blue": 4, "green": 4, "red": 4}


def test_val_is_carved_from_train_when_the_source_has_only_train_and_test(
    tmp_path: Path,
) -> None:
    raw = class_tree(tmp_path / "raw", splits={"train": 10, "test": 3})
    result = prepare_dataset(raw, settings_for(tmp_path, val_ratio=0.2))
    manifest = result.manifest
    assert manifest.splits_from_source is True
    assert manifest.counts["test"] == 9
    assert manifest.class_counts["val"] == {"blue": 2, "green": 2, "red": 2}
    items = _rows(result.path / "items.csv")
    assert all(r["path"].startswith("train/") for r in items if r["split"] in {"train", "val"})
    assert all(r["path"].startswith("test/") for r in items if r["split"] == "test")


def test_source_val_and_test_are_kept(tmp_path: Path) -> None:
    raw = class_tree(tmp_path / "raw", splits={"train": 4, "valid": 2, "test": 1})
    counts = prepare_dataset(raw, settings_for(tmp_path)).manifest.counts
    assert (counts["train"], counts["val"], counts["test"]) == (12, 6, 3)


# --------------------------------------------------------------------------- duplicates


def test_duplicate_across_source_splits_is_dropped_from_the_later_split(tmp_path: Path) -> None:
    raw = class_tree(tmp_path / "raw", splits={"train": 4, "val": 2, "test": 2})
    shutil.copy(raw / "train" / "red" / "red_000.jpg", raw / "test" / "red" / "copy.jpg")
    result = prepare_dataset(raw, settings_for(tmp_path))
    assert result.manifest.counts["duplicates_across_splits"] == 1
    assert result.manifest.counts["test"] == 6
    rejected = {r["path"]: r["reason"] for r in _rows(result.path / "rejected.csv")}
    assert rejected["test/red/copy.jpg"].startswith(
        "duplicate across splits: same content as train/red/red_000.jpg in train"
    )
    assert "test/red/copy.jpg" not in {r["path"] for r in _rows(result.path / "items.csv")}
    log = (result.path / "preprocess.log").read_text(encoding="utf-8")
    assert "WARNING" in log
    assert "test/red/copy.jpg = train/red/red_000.jpg" in log


def test_duplicates_in_unsplit_data_stay_in_one_split(tmp_path: Path) -> None:
    raw = class_tree(tmp_path / "raw", per_class=10)
    for i in range(4):
        shutil.copy(raw / "red" / f"red_00{i}.jpg", raw / "red" / f"again_{i}.jpg")
    result = prepare_dataset(raw, settings_for(tmp_path, val_ratio=0.3, test_ratio=0.3))
    assert result.manifest.counts["duplicates_across_splits"] == 0
    split_of = {r["path"]: r["split"] for r in _rows(result.path / "items.csv")}
    for i in range(4):
        assert split_of[f"red/again_{i}.jpg"] == split_of[f"red/red_00{i}.jpg"]


# --------------------------------------------------------------------------- failures


def test_zero_usable_images_writes_nothing(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    for name in ("red", "green"):
        bad_files(raw / name)
        (raw / name / "huge.png").unlink()
    with pytest.raises(
        DataError,
        match=r"no usable image among 8 candidates \(rejected: 4 not an image, .*; e\.g\. ",
    ):
        prepare_dataset(raw, settings_for(tmp_path))
    assert leftovers(tmp_path / "prepared") == []


def test_a_single_class_is_an_error(tmp_path: Path) -> None:
    raw = class_tree(tmp_path / "raw", classes=("red",), per_class=6)
    with pytest.raises(DataError, match=r"only one class \(red\) — classification needs"):
        prepare_dataset(raw, settings_for(tmp_path))
    assert leftovers(tmp_path / "prepared") == []


def test_class_without_training_images_is_an_error(tmp_path: Path) -> None:
    raw = class_tree(tmp_path / "raw", splits={"train": 3, "test": 1})
    settings = settings_for(tmp_path)
    before = prepare_dataset(raw, settings).manifest
    save(raw / "test" / "purple" / "p.jpg", pattern((120, 0, 120)))
    with pytest.raises(DataError, match=r"class 'purple' has no usable training image — add"):
        prepare_dataset(raw, settings, force=True)
    # the earlier dataset is untouched, and no temporary folder is left behind
    assert _manifest(tmp_path / "prepared" / "raw") == before
    assert leftovers(tmp_path / "prepared") == ["raw"]


def test_unreadable_layout_and_missing_folder_write_nothing(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(LayoutError, match=r"accepted layouts"):
        prepare_dataset(tmp_path / "empty", settings_for(tmp_path))
    with pytest.raises(DatasetNotFoundError, match=r"visionops data fetch"):
        prepare_dataset(tmp_path / "absent", settings_for(tmp_path))
    assert leftovers(tmp_path / "prepared") == []


def test_a_foreign_output_folder_is_not_overwritten(tmp_path: Path) -> None:
    raw = class_tree(tmp_path / "raw", per_class=4)
    mine = tmp_path / "prepared" / "raw"
    mine.mkdir(parents=True)
    (mine / "thesis.tex").write_text("precious", encoding="utf-8")
    with pytest.raises(ArtifactError, match="is not a prepared dataset; preprocess will not"):
        prepare_dataset(raw, settings_for(tmp_path))
    assert (mine / "thesis.tex").read_text(encoding="utf-8") == "precious"
    assert leftovers(tmp_path / "prepared") == ["raw"]


def test_interrupt_leaves_nothing_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    raw = class_tree(tmp_path / "raw", per_class=8)
    settings = settings_for(tmp_path)
    before = prepare_dataset(raw, settings).manifest

    def interrupted(self: object, jobs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(decoding._Decoder, "decode", interrupted)
    with pytest.raises(KeyboardInterrupt):
        prepare_dataset(raw, settings, force=True)
    assert leftovers(tmp_path / "prepared") == ["raw"]
    assert _manifest(tmp_path / "prepared" / "raw") == before
    shutil.rmtree(tmp_path / "prepared")
    with pytest.raises(KeyboardInterrupt):
        prepare_dataset(raw, settings)
    assert leftovers(tmp_path / "prepared") == []


# --------------------------------------------------------------------------- idempotence


def test_rerun_is_a_no_op_and_force_redoes_it(tmp_path: Path) -> None:
    raw = class_tree(tmp_path / "raw", per_class=6)
    (raw / "red" / "notes.txt").write_text("x", encoding="utf-8")
    settings = settings_for(tmp_path)
    first = prepare_dataset(raw, settings)
    stamp = (first.path / "images.npy").stat().st_mtime_ns
    second = prepare_dataset(raw, settings)
    assert second.skipped
    assert second.manifest == first.manifest
    assert second.rejected_by_reason == first.rejected_by_reason
    assert (first.path / "images.npy").stat().st_mtime_ns == stamp
    forced = prepare_dataset(raw, settings, force=True)
    assert not forced.skipped
    assert forced.manifest.fingerprint == first.manifest.fingerprint
    assert (first.path / "images.npy").stat().st_mtime_ns != stamp
    # other parameters, or other files, are a different dataset
    bigger = prepare_dataset(raw, settings_for(tmp_path, image_size=24))
    assert not bigger.skipped
    assert bigger.manifest.image_size == 24
    save(raw / "red" / "new.jpg", pattern((200, 0, 0)))
    assert not prepare_dataset(raw, settings_for(tmp_path, image_size=24)).skipped


def test_source_json_is_used_while_it_matches_the_files(tmp_path: Path) -> None:
    raw = class_tree(tmp_path / "raw", per_class=4)
    files = [p for p in raw.rglob("*") if p.is_file()]
    source = SourceRecord(
        name="raw", source="demo:test", version="v1", file_count=len(files),
        bytes=sum(p.stat().st_size for p in files), fingerprint="f" * 64,
        fetched_at="2026-01-01T00:00:00+00:00", visionops_version="0.1.0",
    )  # fmt: skip
    source.write(raw / "source.json")
    result = prepare_dataset(raw, settings_for(tmp_path))
    assert result.manifest.source == source
    save(raw / "red" / "added.jpg", pattern((200, 0, 0)))  # source.json is now stale
    stale = prepare_dataset(raw, settings_for(tmp_path))
    assert not stale.skipped
    assert stale.manifest.source.source.startswith("folder:")
    assert "does not match the files" in (stale.path / "preprocess.log").read_text("utf-8")


def test_process_pool_gives_the_same_result(tmp_path: Path) -> None:
    raw = class_tree(tmp_path / "raw", per_class=10)
    single = prepare_dataset(raw, settings_for(tmp_path / "one", workers=1))
    pooled = prepare_dataset(raw, settings_for(tmp_path / "two", workers=2))
    for name in ("images.npy", "targets.npy", "splits.npy"):
        np.testing.assert_array_equal(np.load(single.path / name), np.load(pooled.path / name))
    assert single.manifest.mean == pooled.manifest.mean
    assert single.manifest.fingerprint == pooled.manifest.fingerprint


def test_bare_name_resolves_under_raw_root(tmp_path: Path) -> None:
    class_tree(tmp_path / "rawroot" / "shapes", per_class=4)
    settings = settings_for(tmp_path, raw_root=str(tmp_path / "rawroot"))
    assert prepare_dataset(Path("shapes"), settings).path == tmp_path / "prepared" / "shapes"


# --------------------------------------------------------------------------- info


@pytest.mark.parametrize(("source", "size"), [(256, 224), (64, 224), (224, 64)])
def test_a_thin_diagonal_mask_survives_resizing(source: int, size: int) -> None:
    """A 1-px anti-aliased diagonal defect keeps its pixels in the prepared mask."""
    from PIL import Image

    from visionops.data.decoding import resize_mask

    mask = np.zeros((source, source), dtype=np.uint8)
    diagonal = np.arange(source)
    mask[diagonal, diagonal] = 200  # anti-aliased: below full white
    resized = resize_mask(Image.fromarray(mask), size)
    assert set(np.unique(resized)) == {0, 255}
    rows = np.flatnonzero((resized > 0).any(axis=1))
    # Every row the line crosses still has a defect pixel (at least most, when reducing).
    assert len(rows) >= 0.85 * size
    for policy in ("crop", "letterbox"):
        assert resize_mask(Image.fromarray(mask), size, policy).any()
