"""``resolve_prepared``: any dataset argument becomes one prepared folder of the asked size."""

from pathlib import Path

import pytest
from preprocess_trees import class_tree

from visionops.artifacts import PreparedManifest
from visionops.config import Settings, load_settings
from visionops.data.preprocess import prepare_dataset
from visionops.data.resolve import resolve_prepared
from visionops.errors import ConfigError

SMALL = ["data.demo.images_per_class=4", "data.workers=1"]


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)


def _settings(*overrides: str) -> Settings:
    return load_settings(overrides=[*SMALL, *overrides])


@pytest.fixture
def colours(tmp_path: Path) -> Path:
    """``data/raw/colours`` prepared at 16 px into ``data/prepared/colours``."""
    raw = class_tree(tmp_path / "data" / "raw" / "colours", per_class=6)
    return prepare_dataset(raw, _settings("data.image_size=16")).path


def test_prepared_folder_name_and_newest(colours: Path) -> None:
    settings = _settings()  # no size asked for: the prepared one is used as it is
    assert resolve_prepared(settings, None) == colours
    assert resolve_prepared(settings, "colours") == colours
    assert resolve_prepared(settings, colours) == colours
    assert resolve_prepared(_settings("data.image_size=16"), colours) == colours


def test_raw_folders_and_sources_are_prepared() -> None:
    settings = _settings("data.image_size=16")
    prepared = resolve_prepared(settings, "demo:multilabel")
    assert prepared == Path("data/prepared/multilabel")
    assert PreparedManifest.read(prepared).task == "multilabel"
    assert resolve_prepared(settings, Path("data/raw/multilabel")) == prepared
    configured = _settings("data.image_size=16", "data.source=demo:multilabel")
    assert resolve_prepared(configured, None) == prepared


def test_nothing_at_all_is_the_embedded_demo() -> None:
    prepared = resolve_prepared(_settings("data.image_size=16"), None)
    assert prepared == Path("data/prepared/shapes")
    assert PreparedManifest.read(prepared).source.source == "demo:shapes"


@pytest.mark.parametrize("how", ["folder", "name", "newest"])
def test_another_image_size_is_refused_naming_the_command(colours: Path, how: str) -> None:
    argument = {"folder": colours, "name": "colours", "newest": None}[how]
    with pytest.raises(ConfigError) as caught:
        resolve_prepared(_settings("data.image_size=24"), argument)
    message = str(caught.value)
    assert "was prepared with image_size 16 but data.image_size is 24" in message
    assert "`visionops data preprocess data/raw/colours --force data.image_size=24`" in message
    assert PreparedManifest.read(colours).image_size == 16  # untouched


def test_another_image_size_is_prepared_again_when_asked(colours: Path) -> None:
    again = resolve_prepared(_settings("data.image_size=24"), colours, reprepare=True)
    assert again == colours
    assert PreparedManifest.read(again).image_size == 24


def test_reprepare_fetches_the_source_when_the_raw_folder_is_gone(tmp_path: Path) -> None:
    prepared = resolve_prepared(_settings("data.image_size=16"), "demo:shapes")
    for file in sorted(Path("data/raw").rglob("*"), reverse=True):
        file.rmdir() if file.is_dir() else file.unlink()
    with pytest.raises(ConfigError, match=r"visionops data preprocess RAW --force"):
        resolve_prepared(_settings("data.image_size=24"), prepared)
    again = resolve_prepared(_settings("data.image_size=24"), prepared, reprepare=True)
    assert PreparedManifest.read(again).image_size == 24
    assert Path("data/raw/shapes/source.json").is_file()
