"""Fetching raw datasets: demos, folders, archives (and their safety), Kaggle's cache."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
import time
import zipfile
from datetime import datetime
from pathlib import Path

import pytest
from loguru import logger

from visionops.artifacts import SourceRecord
from visionops.config import Settings, load_settings
from visionops.data.fetch import (
    _Budget,
    dataset_fingerprint,
    fetch_dataset,
    parse_source,
    raw_folder_for,
    read_source_info,
)
from visionops.data.layouts import list_files
from visionops.errors import SourceError


def _settings(tmp_path: Path, *overrides: str) -> Settings:
    return load_settings(
        overrides=[
            f"data.raw_root={tmp_path / 'raw'}",
            "data.demo.images_per_class=3",
            "data.demo.image_size=32",
            *overrides,
        ],
        cwd=tmp_path,
    )


def _nothing_left(raw_root: Path) -> bool:
    """No dataset folder and no temporary folder was left behind."""
    return not raw_root.exists() or not any(raw_root.iterdir())


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return _settings(tmp_path)


@pytest.fixture
def dataset_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "My Photos"
    (folder / "cats").mkdir(parents=True)
    (folder / "dogs").mkdir()
    (folder / "cats" / "a.jpg").write_bytes(b"\xff\xd8\xff cat a")
    (folder / "cats" / "b.jpg").write_bytes(b"\xff\xd8\xff cat b")
    (folder / "dogs" / "c.jpg").write_bytes(b"\xff\xd8\xff dog c" * 100)
    return folder


# --------------------------------------------------------------------------- demo


def test_demo_fetch_writes_files_and_source_json(settings: Settings) -> None:
    result = fetch_dataset("demo:shapes", settings)
    assert result.path == settings.data.raw_root / "shapes"
    assert result.name == "shapes"
    assert not result.skipped
    # The file's keys are the raw dataset's on-disk format (docs/artifacts.md): checked as JSON.
    on_disk = json.loads((result.path / "source.json").read_text())
    assert on_disk == result.source_info.to_json()
    assert set(on_disk) == {
        "schema_version",
        "kind",
        "name",
        "source",
        "version",
        "file_count",
        "bytes",
        "fingerprint",
        "fetched_at",
        "visionops_version",
    }
    info = SourceRecord.read(result.path)
    assert info.schema_version == 1
    assert info.kind == "visionops.raw"
    assert info.source == "demo:shapes"
    assert info.version == "seed=0,images_per_class=3,image_size=32"
    files = list_files(result.path)
    assert info.file_count == len(files) == 8 * 3
    assert info.bytes == sum((result.path / f).stat().st_size for f in files)
    assert info.fingerprint == dataset_fingerprint(result.path)[2]
    assert info.fetched_at is not None
    assert datetime.fromisoformat(info.fetched_at).tzinfo is not None
    assert sorted(p.name for p in result.path.iterdir()) == [
        "source.json",
        "test",
        "train",
        "validation",
    ]
    # nothing temporary left next to it
    assert [p.name for p in settings.data.raw_root.iterdir()] == ["shapes"]


def test_source_defaults_to_the_setting(tmp_path: Path) -> None:
    settings = _settings(tmp_path, "data.source=demo:anomaly")
    result = fetch_dataset(None, settings)
    assert result.name == "anomaly"
    assert (result.path / "carpet" / "train" / "good").is_dir()


def test_refetch_is_a_noop_unless_forced(settings: Settings) -> None:
    first = fetch_dataset("demo:multilabel", settings)
    victim = next((first.path / "Multi_Label_dataset" / "Images").iterdir())
    victim.unlink()
    again = fetch_dataset("demo:multilabel", settings)
    assert again.skipped
    assert again.source_info == first.source_info
    assert not victim.exists()  # nothing was touched
    forced = fetch_dataset("demo:multilabel", settings, force=True)
    assert not forced.skipped
    assert victim.exists()
    assert forced.source_info.fingerprint == first.source_info.fingerprint


def test_changed_demo_settings_regenerate(tmp_path: Path) -> None:
    first = fetch_dataset("demo:shapes", _settings(tmp_path))
    bigger = fetch_dataset("demo:shapes", _settings(tmp_path, "data.demo.images_per_class=4"))
    assert not bigger.skipped
    assert bigger.source_info.file_count == 8 * 4
    assert bigger.source_info.fingerprint != first.source_info.fingerprint


def test_same_seed_same_fingerprint(tmp_path: Path) -> None:
    one = fetch_dataset("demo:regression", _settings(tmp_path / "one"))
    two = fetch_dataset("demo:regression", _settings(tmp_path / "two"))
    assert one.source_info.fingerprint == two.source_info.fingerprint


def test_other_source_under_the_same_name_is_refused(
    settings: Settings, dataset_folder: Path
) -> None:
    fetch_dataset("demo:shapes", settings)
    with pytest.raises(SourceError, match=r"already holds demo:shapes.*--name.*--force"):
        fetch_dataset(str(dataset_folder), settings, name="shapes")
    replaced = fetch_dataset(str(dataset_folder), settings, name="shapes", force=True)
    assert (replaced.path / "cats" / "a.jpg").is_file()
    assert not (replaced.path / "train").exists()


def test_foreign_destination_is_refused_unless_forced(settings: Settings) -> None:
    foreign = settings.data.raw_root / "shapes"
    foreign.mkdir(parents=True)
    (foreign / "precious.txt").write_text("mine")
    with pytest.raises(SourceError, match=r"not made by visionops.*--force"):
        fetch_dataset("demo:shapes", settings)
    assert (foreign / "precious.txt").read_text() == "mine"
    fetch_dataset("demo:shapes", settings, force=True)
    assert not (foreign / "precious.txt").exists()
    assert read_source_info(foreign) is not None


def test_invalid_name_is_refused(settings: Settings) -> None:
    with pytest.raises(SourceError, match=r"dataset name '\.\./x' is not valid"):
        fetch_dataset("demo:shapes", settings, name="../x")
    assert _nothing_left(settings.data.raw_root)


# --------------------------------------------------------------------------- sources


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("demo:shape", r"unknown demo 'demo:shape' — did you mean 'demo:shapes'\?"),
        ("shapes", r"no such file or folder: shapes — did you mean 'demo:shapes'\?"),
        ("owner/dataset", r"for a Kaggle dataset write 'kaggle:owner/dataset'"),
        ("s3://bucket/data", r"unsupported source 's3://bucket/data'.*accepted sources"),
        ("kaggle:only-owner", r"not a Kaggle dataset handle — write kaggle:<owner>/<dataset>"),
        ("kaggle:a/b/versions/x", r"not a Kaggle dataset handle"),
        ("", r"no source given"),
    ],
)
def test_bad_sources_say_what_is_accepted(source: str, message: str) -> None:
    with pytest.raises(SourceError, match=message) as caught:
        parse_source(source)
    assert "\n" not in str(caught.value)


def test_a_plain_file_is_not_a_source(tmp_path: Path, settings: Settings) -> None:
    (tmp_path / "labels.csv").write_text("a,b\n")
    with pytest.raises(SourceError, match=r"not a supported archive.*\.zip"):
        fetch_dataset(str(tmp_path / "labels.csv"), settings)


@pytest.mark.parametrize(
    ("source", "name"),
    [
        ("demo:regression", "regression"),
        (
            "kaggle:kritikseth/fruit-and-vegetable-image-recognition",
            "fruit-and-vegetable-image-recognition",
        ),
        ("kaggle:msambare/fer2013/versions/1", "fer2013"),
    ],
)
def test_default_names(source: str, name: str) -> None:
    assert parse_source(source).default_name == name


@pytest.mark.parametrize(
    ("file", "name"), [("x.tar.gz", "x"), ("My Data.tgz", "My-Data"), ("a.b.zip", "a.b")]
)
def test_archive_names_drop_the_whole_suffix(tmp_path: Path, file: str, name: str) -> None:
    (tmp_path / file).write_bytes(b"")
    spec = parse_source(str(tmp_path / file))
    assert spec.kind == "archive"
    assert spec.default_name == name


def test_raw_folder_for_a_source(tmp_path: Path, settings: Settings) -> None:
    raw_root = settings.data.raw_root
    assert raw_folder_for("kaggle:o/d/versions/3", settings) == raw_root / "d"
    (tmp_path / "x.tar.gz").write_bytes(b"")
    assert raw_folder_for(str(tmp_path / "x.tar.gz"), settings) == raw_root / "x"
    assert raw_folder_for("demo:shapes", settings) == raw_root / "shapes"


# --------------------------------------------------------------------------- folder


def test_folder_is_copied(settings: Settings, dataset_folder: Path) -> None:
    (dataset_folder / "linked").symlink_to(dataset_folder / "cats", target_is_directory=True)
    result = fetch_dataset(str(dataset_folder), settings)
    assert result.name == "My-Photos"
    assert result.source_info.source == str(dataset_folder.resolve())
    assert result.source_info.file_count == 3
    assert (result.path / "dogs" / "c.jpg").read_bytes() == b"\xff\xd8\xff dog c" * 100
    assert not (result.path / "linked").exists()  # folder links are not followed
    assert (dataset_folder / "cats" / "a.jpg").exists()  # the source is untouched


def test_file_links_are_skipped_not_copied_or_fingerprinted(
    tmp_path: Path, dataset_folder: Path
) -> None:
    plain = fetch_dataset(str(dataset_folder), _settings(tmp_path / "plain"))
    secret = tmp_path / "secret.txt"
    secret.write_text("root:x:0:0", encoding="utf-8")
    (dataset_folder / "cats" / "passwd.png").symlink_to(secret)
    (dataset_folder / "cats" / "again.jpg").symlink_to(dataset_folder / "cats" / "a.jpg")
    messages: list[str] = []
    sink = logger.add(messages.append, level="WARNING", format="{message}")
    try:
        linked = fetch_dataset(str(dataset_folder), _settings(tmp_path / "linked"))
    finally:
        logger.remove(sink)
    assert not (linked.path / "cats" / "passwd.png").exists()
    assert not (linked.path / "cats" / "again.jpg").exists()  # even one pointing inside
    assert linked.source_info.file_count == 3
    assert linked.source_info.fingerprint == plain.source_info.fingerprint
    skipped = [m for m in messages if "passwd.png" in m]
    assert skipped and "links are not followed" in skipped[0]


def test_a_dead_fetch_leftover_is_removed_a_live_one_kept(
    settings: Settings, dataset_folder: Path
) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    raw_root = settings.data.raw_root
    stale = raw_root / f".My-Photos.{dead.pid}.abc123.tmp"
    live = raw_root / f".My-Photos.{os.getppid()}.def456.tmp"
    for folder in (stale, live):
        (folder / "cats").mkdir(parents=True)
    fetch_dataset(str(dataset_folder), settings)
    assert not stale.exists()
    assert live.exists()


def test_folder_containing_the_destination_is_refused(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    (tmp_path / "img.jpg").write_bytes(b"x")
    with pytest.raises(SourceError, match="contains the destination"):
        fetch_dataset(str(tmp_path), settings)


def test_fetching_the_destination_onto_itself_is_refused(settings: Settings) -> None:
    fetched = fetch_dataset("demo:shapes", settings)
    with pytest.raises(SourceError, match="inside the destination"):
        fetch_dataset(str(fetched.path), settings, force=True)
    assert (fetched.path / "train").is_dir()


# --------------------------------------------------------------------------- archives


def _zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as bundle:
        for name, data in members.items():
            bundle.writestr(name, data)
    return path


def _tar(path: Path, mode: str, members: list[tarfile.TarInfo], data: dict[str, bytes]) -> Path:
    with tarfile.open(path, mode) as bundle:
        for member in members:
            content = data.get(member.name)
            if content is not None:
                member.size = len(content)
            bundle.addfile(member, io.BytesIO(content) if content is not None else None)
    return path


def _file_member(name: str) -> tarfile.TarInfo:
    return tarfile.TarInfo(name)


GOOD = {"fruits/apple/1.jpg": b"\xff\xd8\xff apple", "fruits/pear/2.jpg": b"\xff\xd8\xff pear"}


def test_zip_is_unpacked(tmp_path: Path, settings: Settings) -> None:
    archive = _zip(tmp_path / "fruit-pics.zip", GOOD)
    result = fetch_dataset(str(archive), settings)
    assert result.name == "fruit-pics"
    assert (result.path / "fruits" / "apple" / "1.jpg").read_bytes() == GOOD["fruits/apple/1.jpg"]
    assert result.source_info.file_count == 2
    assert result.source_info.version.startswith("sha256=")


@pytest.mark.parametrize(
    ("suffix", "mode"),
    [
        (".tar", "w"),
        (".tar.gz", "w:gz"),
        (".tgz", "w:gz"),
        (".tar.bz2", "w:bz2"),
        (".tar.xz", "w:xz"),
    ],
)
def test_tar_archives_are_unpacked(
    tmp_path: Path, settings: Settings, suffix: str, mode: str
) -> None:
    archive = _tar(tmp_path / f"pics{suffix}", mode, [_file_member(name) for name in GOOD], GOOD)
    result = fetch_dataset(str(archive), settings)
    assert result.name == "pics"
    assert (result.path / "fruits" / "pear" / "2.jpg").read_bytes() == GOOD["fruits/pear/2.jpg"]


@pytest.mark.parametrize(
    ("member", "message"),
    [
        ("../evil.jpg", r"'\.\./evil\.jpg' has a '\.\.' path component"),
        ("ok/../../evil.jpg", r"has a '\.\.' path component"),
        ("/etc/evil.jpg", r"'/etc/evil\.jpg' has an absolute path"),
        ("C:/evil.jpg", r"has an absolute path"),
        ("..\\evil.jpg", r"has a '\.\.' path component"),
    ],
)
def test_zip_with_escaping_member_is_refused(
    tmp_path: Path, settings: Settings, member: str, message: str
) -> None:
    archive = _zip(tmp_path / "evil.zip", {**GOOD, member: b"gotcha"})
    with pytest.raises(SourceError, match=rf"archive evil\.zip is unsafe: member .*{message}"):
        fetch_dataset(str(archive), settings)
    assert _nothing_left(settings.data.raw_root)
    assert not (tmp_path / "evil.jpg").exists()


def test_zip_with_symlink_member_is_refused(tmp_path: Path, settings: Settings) -> None:
    archive = tmp_path / "links.zip"
    with zipfile.ZipFile(archive, "w") as bundle:
        bundle.writestr("fruits/ok.jpg", b"fine")
        link = zipfile.ZipInfo("fruits/passwd")
        link.external_attr = 0o120777 << 16
        bundle.writestr(link, "/etc/passwd")
    with pytest.raises(SourceError, match=r"'fruits/passwd' is a symbolic link"):
        fetch_dataset(str(archive), settings)
    assert _nothing_left(settings.data.raw_root)


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        (tarfile.SYMTYPE, "is a symbolic link"),
        (tarfile.LNKTYPE, "is a hard link"),
        (tarfile.FIFOTYPE, "is a device or fifo"),
        (tarfile.CHRTYPE, "is a device or fifo"),
    ],
)
def test_tar_with_link_or_device_is_refused(
    tmp_path: Path, settings: Settings, kind: bytes, message: str
) -> None:
    special = tarfile.TarInfo("fruits/special")
    special.type = kind
    special.linkname = "/etc/passwd"
    members = [_file_member(name) for name in GOOD] + [special]
    archive = _tar(tmp_path / "special.tar.gz", "w:gz", members, GOOD)
    with pytest.raises(SourceError, match=rf"member 'fruits/special' {message}"):
        fetch_dataset(str(archive), settings)
    assert _nothing_left(settings.data.raw_root)


def test_tar_with_escaping_member_is_refused(tmp_path: Path, settings: Settings) -> None:
    data = {**GOOD, "../../evil.jpg": b"gotcha"}
    archive = _tar(tmp_path / "evil.tar", "w", [_file_member(n) for n in data], data)
    with pytest.raises(SourceError, match=r"has a '\.\.' path component"):
        fetch_dataset(str(archive), settings)
    assert _nothing_left(settings.data.raw_root)


@pytest.mark.parametrize("suffix", [".zip", ".tar.gz"])
def test_archive_above_the_size_cap_is_refused(tmp_path: Path, suffix: str) -> None:
    settings = _settings(tmp_path, "data.max_archive_bytes=1000")
    data = {"big/zeros.bin": b"\0" * 5000}  # compresses to a few bytes
    if suffix == ".zip":
        archive = _zip(tmp_path / f"bomb{suffix}", data)
    else:
        archive = _tar(tmp_path / f"bomb{suffix}", "w:gz", [_file_member("big/zeros.bin")], data)
    assert archive.stat().st_size < 1000
    with pytest.raises(SourceError, match=r"declares 4\.9 KB, above the data\.max_archive_bytes"):
        fetch_dataset(str(archive), settings)
    assert _nothing_left(settings.data.raw_root)


def test_bytes_are_counted_while_unpacking(tmp_path: Path) -> None:
    """Declared sizes can lie: the bytes actually written are capped too."""
    budget = _Budget(tmp_path / "liar.zip", cap=1000)
    budget.copy(io.BytesIO(b"x" * 600), tmp_path / "first")
    with pytest.raises(SourceError, match=r"liar\.zip unpacks to more than"):
        budget.copy(io.BytesIO(b"x" * 600), tmp_path / "second")


def test_corrupt_archive_is_a_clear_error(tmp_path: Path, settings: Settings) -> None:
    (tmp_path / "broken.zip").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(SourceError, match=r"broken\.zip is corrupt.*download it again"):
        fetch_dataset(str(tmp_path / "broken.zip"), settings)
    (tmp_path / "broken.tar.gz").write_bytes(os.urandom(64))
    with pytest.raises(SourceError, match=r"broken\.tar\.gz is corrupt"):
        fetch_dataset(str(tmp_path / "broken.tar.gz"), settings)
    assert _nothing_left(settings.data.raw_root)


# --------------------------------------------------------------------------- kaggle


@pytest.fixture
def offline_kaggle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty kagglehub cache, no credentials, and an API endpoint that refuses at once."""
    cache = tmp_path / "kagglehub-cache"
    cache.mkdir()
    monkeypatch.setenv("KAGGLEHUB_CACHE", str(cache))
    # kagglesdk's TEST environment is http://localhost:7777: nothing listens there, so any
    # network call fails immediately instead of waiting on DNS or a timeout.
    monkeypatch.setenv("KAGGLE_API_ENVIRONMENT", "TEST")
    monkeypatch.setenv("NO_PROXY", "*")
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path / "no-credentials"))
    for name in ("KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    return cache


def _fill_kaggle_cache(cache: Path, owner: str, dataset: str, version: int) -> Path:
    """Lay out a dataset exactly as kagglehub leaves a completed download."""
    folder = cache / "datasets" / owner / dataset / "versions" / str(version)
    for split, label in (("train", "happy"), ("test", "sad")):
        (folder / split / label).mkdir(parents=True)
        (folder / split / label / f"{version}.jpg").write_bytes(b"\xff\xd8\xff face")
    (cache / "datasets" / owner / dataset / f"{version}.complete").touch()
    return folder


def test_kaggle_pinned_version_comes_from_the_cache(
    offline_kaggle: Path, settings: Settings
) -> None:
    _fill_kaggle_cache(offline_kaggle, "msambare", "fer2013", 1)
    result = fetch_dataset("kaggle:msambare/fer2013/versions/1", settings)
    assert result.name == "fer2013"
    assert result.source_info.source == "kaggle:msambare/fer2013/versions/1"
    assert result.source_info.version == "1"
    assert (result.path / "train" / "happy" / "1.jpg").is_file()
    assert (result.path / "test" / "sad" / "1.jpg").is_file()


def test_kaggle_latest_falls_back_to_newest_cached_copy_offline(
    offline_kaggle: Path, settings: Settings
) -> None:
    _fill_kaggle_cache(offline_kaggle, "msambare", "fer2013", 1)
    _fill_kaggle_cache(offline_kaggle, "msambare", "fer2013", 3)
    started = time.monotonic()
    result = fetch_dataset("kaggle:msambare/fer2013", settings)
    assert time.monotonic() - started < 60  # a refused connection, not a hang
    assert result.source_info.version == "3"
    assert (result.path / "train" / "happy" / "3.jpg").is_file()


def test_kaggle_incomplete_cache_is_not_used(offline_kaggle: Path, settings: Settings) -> None:
    folder = _fill_kaggle_cache(offline_kaggle, "msambare", "fer2013", 2)
    (folder.parent.parent / "2.complete").unlink()  # an interrupted download
    with pytest.raises(SourceError, match="no copy"):
        fetch_dataset("kaggle:msambare/fer2013/versions/2", settings)


def test_kaggle_offline_without_cache_names_the_fix(
    offline_kaggle: Path, settings: Settings
) -> None:
    with pytest.raises(SourceError) as caught:
        fetch_dataset("kaggle:kritikseth/fruit-and-vegetable-image-recognition", settings)
    message = str(caught.value)
    assert "no network connection to Kaggle" in message
    assert "KAGGLEHUB_CACHE" in message
    assert "visionops data fetch /path/to/folder" in message
    assert "\n" not in message
    assert _nothing_left(settings.data.raw_root)


# --------------------------------------------------------------------------- fixtures


def test_raw_demo_fixtures_are_fetched_datasets(
    raw_shapes: Path, raw_multilabel: Path, raw_regression: Path, raw_anomaly: Path
) -> None:
    expected = {
        raw_shapes: ("demo:shapes", 80, 8 * 80),
        raw_multilabel: ("demo:multilabel", 40, 6 * 40 + 1),  # images + train.csv
        raw_regression: ("demo:regression", 80, 5 * 80 * 8 + 2),  # 8 frames a dish + 2 CSVs
        raw_anomaly: ("demo:anomaly", 40, 40 + 40 + 3 * 6 * 2),  # good, test good, defects
    }
    for folder, (source, per_class, count) in expected.items():
        info = read_source_info(folder)
        assert info is not None
        assert info.source == source
        assert info.file_count == len(list_files(folder)) == count
        assert info.version == f"seed=0,images_per_class={per_class},image_size=64"
