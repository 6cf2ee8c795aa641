"""`visionops data fetch` driven through the real CLI."""

from __future__ import annotations

import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from visionops.artifacts import SourceRecord
from visionops.cli.app import app
from visionops.errors import ConcurrencyError

runner = CliRunner()
SMALL = ["data.demo.images_per_class=4", "data.demo.image_size=32"]


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "visionops", *args], capture_output=True, text=True, timeout=120
    )


def test_fetch_demo_then_noop_then_force(tmp_path: Path) -> None:
    result = runner.invoke(app, ["data", "fetch", "demo:shapes", *SMALL])
    assert result.exit_code == 0, result.output
    raw = tmp_path / "data" / "raw" / "shapes"
    info = SourceRecord.read(raw)
    assert info.source == "demo:shapes"
    assert info.file_count == 32
    assert "data/raw/shapes: 32 files" in result.stdout
    assert f"fingerprint {info.fingerprint[:12]}" in result.stdout
    assert "visionops data preprocess data/raw/shapes" in result.output
    assert len(list((raw / "train" / "circle").glob("*.jpg"))) == 2

    again = runner.invoke(app, ["data", "fetch", "demo:shapes", *SMALL])
    assert again.exit_code == 0
    assert "nothing to do" in again.output
    assert SourceRecord.read(raw) == info

    (raw / "train" / "circle" / "circle_00000.jpg").unlink()
    forced = runner.invoke(app, ["data", "fetch", "demo:shapes", "--force", *SMALL])
    assert forced.exit_code == 0
    assert "nothing to do" not in forced.output
    assert (raw / "train" / "circle" / "circle_00000.jpg").is_file()


def test_default_source_and_name_option(tmp_path: Path) -> None:
    result = runner.invoke(app, ["data", "fetch", "--name", "my-demo", *SMALL])
    assert result.exit_code == 0, result.output
    info = SourceRecord.read(tmp_path / "data/raw/my-demo")
    assert info.source == "demo:shapes"  # data.source's default
    assert info.name == "my-demo"


def test_overrides_from_a_config_file(tmp_path: Path) -> None:
    config = tmp_path / "small.yaml"
    config.write_text(
        "data:\n  raw_root: elsewhere\n  demo:\n    images_per_class: 2\n    image_size: 32\n"
    )
    result = runner.invoke(app, ["data", "fetch", "demo:anomaly", "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "elsewhere/anomaly/carpet/ground_truth/hole").is_dir()


def test_print_config_writes_nothing(tmp_path: Path) -> None:
    result = runner.invoke(app, ["data", "fetch", "demo:shapes", "--print-config", *SMALL])
    assert result.exit_code == 0
    assert "images_per_class: 4" in result.stdout
    assert not (tmp_path / "data").exists()


def test_fetch_a_folder(tmp_path: Path) -> None:
    folder = tmp_path / "faces"
    (folder / "train" / "happy").mkdir(parents=True)
    (folder / "train" / "happy" / "1.jpg").write_bytes(b"\xff\xd8\xff")
    result = runner.invoke(app, ["data", "fetch", str(folder)])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "data/raw/faces/train/happy/1.jpg").is_file()
    assert "1 files" in result.stdout


def test_unknown_source_exits_2_with_one_line() -> None:
    result = _cli("data", "fetch", "demo:shape")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "error: unknown demo 'demo:shape' — did you mean 'demo:shapes'?" in lines[0]


def test_unsafe_zip_exits_2_and_leaves_nothing(tmp_path: Path) -> None:
    with zipfile.ZipFile(tmp_path / "evil.zip", "w") as bundle:
        bundle.writestr("images/ok.jpg", b"ok")
        bundle.writestr("../escaped.txt", b"gotcha")
    result = _cli("data", "fetch", "evil.zip")
    assert result.returncode == 2
    assert "archive evil.zip is unsafe" in result.stderr
    assert not (tmp_path / "escaped.txt").exists()
    raw_root = tmp_path / "data" / "raw"
    assert not raw_root.exists() or not any(raw_root.iterdir())


def test_two_sources_are_a_usage_error() -> None:
    result = runner.invoke(app, ["data", "fetch", "demo:shapes", "demo:anomaly"])
    assert result.exit_code == 2
    assert "one SOURCE at a time" in result.output


def test_a_second_fetch_into_the_same_folder_is_refused_while_the_first_writes() -> None:
    raw_root = Path("data/raw")
    first = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "visionops",
            "data",
            "fetch",
            "demo:shapes",
            "-q",
            "data.demo.images_per_class=40",
            "data.demo.image_size=32",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not list(raw_root.glob(f".shapes.{first.pid}.*.tmp")) and first.poll() is None:
            assert time.monotonic() < deadline, "the first fetch never started writing"
            time.sleep(0.02)
        second = runner.invoke(app, ["data", "fetch", "demo:shapes", *SMALL])
        assert first.poll() is None, "the first fetch ended too soon for this test"
    finally:
        _, err = first.communicate(timeout=300)
    assert isinstance(second.exception, ConcurrencyError)
    assert f"data/raw/shapes is being written by process {first.pid}" in str(second.exception)
    assert first.returncode == 0, err
    assert SourceRecord.read(raw_root / "shapes").file_count == 8 * 40
