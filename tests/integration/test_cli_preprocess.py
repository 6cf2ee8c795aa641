"""``visionops data preprocess`` and ``visionops data info`` through the real CLI."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from visionops.cli.app import app

runner = CliRunner()


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)


def _raw_tree(root: Path) -> Path:
    """``train``/``validation``/``test`` class folders with one corrupt file and one stray."""
    rng = np.random.default_rng(0)
    colours = {"red": (220, 30, 30), "green": (30, 200, 40)}
    for split, count in (("train", 5), ("validation", 2), ("test", 2)):
        for name, colour in colours.items():
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                noise = rng.integers(-20, 21, (24, 32, 3))
                pixels = np.clip(np.array(colour) + noise, 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.jpg")
    (root / "train" / "red" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really")
    (root / "README.txt").write_text("a tiny dataset", encoding="utf-8")
    return root


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "visionops", *args], capture_output=True, text=True, timeout=120
    )


def test_preprocess_then_info(tmp_path: Path) -> None:
    _raw_tree(tmp_path / "data" / "raw" / "tiny")
    result = runner.invoke(
        app, ["data", "preprocess", "data/raw/tiny", "--size", "16", "-j", "1", "data.seed=3"]
    )
    assert result.exit_code == 0, result.output
    assert "prepared dataset tiny" in result.stdout
    assert "train 10" in result.stdout
    assert "val 4" in result.stdout
    assert "rejected" in result.stdout
    assert "truncated image" in result.stdout
    assert "next: visionops train data/prepared/tiny" in result.output
    prepared = tmp_path / "data" / "prepared" / "tiny"
    manifest = json.loads((prepared / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["image_size"] == 16
    assert manifest["params"]["seed"] == 3
    assert np.load(prepared / "images.npy").shape == (18, 16, 16, 3)

    again = runner.invoke(
        app, ["data", "preprocess", "data/raw/tiny", "--size", "16", "data.seed=3"]
    )
    assert again.exit_code == 0, again.output
    assert "nothing to do" in again.output
    assert "pass --force to redo it" in again.output
    forced = runner.invoke(
        app, ["data", "preprocess", "data/raw/tiny", "--size", "16", "data.seed=3", "--force"]
    )
    assert forced.exit_code == 0, forced.output
    assert "images/s" in forced.stdout

    info = runner.invoke(app, ["data", "info", "data/prepared/tiny", "--json"])
    assert info.exit_code == 0, info.output
    report = json.loads(info.stdout)
    assert report["kind"] == "prepared"
    assert report["manifest"]["counts"]["rejected"] == 2
    assert report["class_balance"]["val"] == {"green": 2, "red": 2}
    assert report["rejected"] == {"not an image": 1, "truncated image": 1}

    raw_info = runner.invoke(app, ["data", "info", "data/raw/tiny", "--json"])
    assert raw_info.exit_code == 0, raw_info.output
    raw_report = json.loads(raw_info.stdout)
    assert raw_report["layout"] == "class-folders"
    assert raw_report["splits"] == {"test": 4, "train": 11, "val": 4}
    assert raw_report["prepared"] == "data/prepared/tiny"

    table = runner.invoke(app, ["data", "info"])  # newest prepared dataset
    assert table.exit_code == 0, table.output
    assert "class balance" in table.stdout
    assert "truncated image" in table.stdout


def test_print_config_shows_the_flags(tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["data", "preprocess", "x", "--size", "48", "--channels", "1", "--print-config"]
    )
    assert result.exit_code == 0, result.output
    assert "image_size: 48" in result.stdout
    assert "channels: 1" in result.stdout


def test_errors_are_one_line_with_the_fix(tmp_path: Path) -> None:
    _raw_tree(tmp_path / "tiny")
    wrong_task = _cli("data", "preprocess", "tiny", "--task", "regression", "--size", "16")
    assert wrong_task.returncode == 1
    assert "provides classification, not regression — use --task classification" in (
        wrong_task.stderr
    )
    missing = _cli("data", "preprocess", "absent")
    assert missing.returncode == 1
    assert "no raw dataset at absent" in missing.stderr
    assert "visionops data fetch" in missing.stderr
    info = _cli("data", "info", "absent")
    assert info.returncode == 1
    assert "visionops data preprocess" in info.stderr
    bad_channels = _cli("data", "preprocess", "tiny", "--channels", "2")
    assert bad_channels.returncode == 2
    assert "data.channels" in bad_channels.stderr
    assert not (tmp_path / "data" / "prepared").exists()
