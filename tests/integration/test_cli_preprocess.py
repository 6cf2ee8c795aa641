"""``visionops data preprocess`` and ``visionops data info`` through the real CLI."""

import importlib
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from visionops.artifacts import PreparedManifest
from visionops.cli.app import app
from visionops.errors import ConcurrencyError

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
    raw = _raw_tree(tmp_path / "data" / "raw" / "tiny")
    (raw / "train" / "green" / "fake.png").write_text("not a PNG", encoding="utf-8")
    (raw / "train" / "green" / "empty.png").write_bytes(b"")
    result = runner.invoke(
        app, ["data", "preprocess", "data/raw/tiny", "--size", "16", "-j", "1", "data.seed=3"]
    )
    assert result.exit_code == 0, result.output
    # The count said is the images kept, the sum of the splits (10 + 4 + 4).
    assert "prepared 18 of 21 candidate images" in result.output
    reasons = dict(
        line.split(",", 1)
        for line in (tmp_path / "data/prepared/tiny/rejected.csv").read_text().splitlines()[1:]
    )
    assert reasons["train/green/empty.png"] == "empty file: 0 bytes"
    assert reasons["train/green/fake.png"].startswith('"not an image: unknown file signature')
    assert "prepared dataset tiny" in result.stdout
    assert "train 10" in result.stdout
    assert "val 4" in result.stdout
    assert "rejected" in result.stdout
    assert "truncated" in result.stdout
    assert "next: visionops train data/prepared/tiny" in result.output
    prepared = tmp_path / "data" / "prepared" / "tiny"
    manifest = PreparedManifest.read(prepared)
    assert manifest.image_size == 16
    assert manifest.params["seed"] == 3
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
    assert report["manifest"]["counts"]["rejected"] == 4
    assert report["class_balance"]["val"] == {"green": 2, "red": 2}
    assert report["rejected"] == {"not an image": 2, "truncated image": 1, "empty file": 1}

    raw_info = runner.invoke(app, ["data", "info", "data/raw/tiny", "--json"])
    assert raw_info.exit_code == 0, raw_info.output
    raw_report = json.loads(raw_info.stdout)
    assert raw_report["layout"] == "class-folders"
    assert raw_report["splits"] == {"test": 4, "train": 13, "val": 4}
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
    assert wrong_task.returncode == 2
    assert "provides classification, not regression — use --task classification" in (
        wrong_task.stderr
    )
    missing = _cli("data", "preprocess", "absent")
    assert missing.returncode == 2
    assert "no raw dataset at absent" in missing.stderr
    assert "visionops data fetch" in missing.stderr
    info = _cli("data", "info", "absent")
    assert info.returncode == 2
    assert "visionops data preprocess" in info.stderr
    bad_channels = _cli("data", "preprocess", "tiny", "--channels", "2")
    assert bad_channels.returncode == 2
    assert "data.channels" in bad_channels.stderr
    assert not (tmp_path / "data" / "prepared").exists()


# --------------------------------------------------------------------------- crashes and races
# A preprocess slow enough to be caught in the act: 4-megapixel PNGs take a noticeable time to
# decode, and copies of one file cost nothing to write.


@pytest.fixture(scope="module")
def slow_raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("slow") / "big"
    pixels = np.zeros((2000, 2000, 3), dtype=np.uint8)
    for name, colour in (("red", (220, 30, 30)), ("green", (30, 200, 40))):
        pixels[::5] = colour
        folder = root / name
        folder.mkdir(parents=True)
        Image.fromarray(pixels).save(folder / "0.png", compress_level=1)
        data = (folder / "0.png").read_bytes()
        for i in range(1, 6):
            (folder / f"{i}.png").write_bytes(data)
    return root


def _children(pid: int) -> set[int]:
    """PIDs of every live descendant of ``pid`` (from /proc)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] != "Z":  # a zombie has exited; it only waits to be reaped
            parents[int(stat.parent.name)] = int(fields[1])
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier}
        found |= frontier
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _wait_for(condition: Callable[[], bool], what: str, seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


_PREPROCESS = ["data", "preprocess", "-j", "2", "-q", "--size", "16"]


def _start_preprocess(raw: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "visionops", *_PREPROCESS, str(raw)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _temps(pid: int) -> list[Path]:
    return list(Path("data/prepared").glob(f".big.{pid}.*.tmp"))


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc (Linux)")
def test_kill_9_takes_the_workers_along_and_the_next_run_cleans_up(
    slow_raw: Path, tmp_path: Path
) -> None:
    parent = _start_preprocess(slow_raw)
    try:
        _wait_for(lambda: len(_children(parent.pid)) >= 2 or parent.poll() is not None, "workers")
        workers = _children(parent.pid)
        assert parent.poll() is None and len(workers) >= 2, parent.communicate()
        _wait_for(lambda: bool(_temps(parent.pid)), "the temporary output")
    finally:
        parent.kill()  # SIGKILL: no cleanup code runs in the parent
        parent.wait()
    _wait_for(lambda: not any(_alive(pid) for pid in workers), "the orphaned workers", 15.0)
    assert _temps(parent.pid), "kill -9 leaves the half-written folder behind"

    # The next preprocess writing that name (here a small dataset, for speed) cleans up.
    small = _raw_tree(tmp_path / "small" / "big")
    again = runner.invoke(app, ["data", "preprocess", str(small), "--size", "16", "-j", "1"])
    assert again.exit_code == 0, again.output
    assert "leftover(s) of an interrupted preprocess" in again.output
    assert not _temps(parent.pid)
    assert sorted(p.name for p in Path("data/prepared").iterdir()) == ["big"]


def test_a_second_run_on_the_same_folder_is_refused_while_the_first_writes(
    slow_raw: Path,
) -> None:
    # Import what the second run needs first, so the race below is not lost to imports.
    importlib.import_module("visionops.data.preprocess")
    first = _start_preprocess(slow_raw)
    try:
        _wait_for(lambda: bool(_temps(first.pid)) or first.poll() is not None, "the first run")
        second = runner.invoke(app, ["data", "preprocess", str(slow_raw), "--size", "16"])
        assert first.poll() is None, "the first run ended too soon for this test"
    finally:
        _, err = first.communicate(timeout=300)
    assert isinstance(second.exception, ConcurrencyError)
    message = str(second.exception)
    assert f"data/prepared/big is being written by process {first.pid}" in message
    assert "another `visionops data preprocess` is preparing it" in message
    assert first.returncode == 0, err
    assert (Path("data/prepared/big") / "manifest.json").is_file()


def test_without_raw_the_configured_source_names_the_folder(tmp_path: Path) -> None:
    _raw_tree(tmp_path / "data" / "raw" / "fer2013")
    result = runner.invoke(
        app, ["data", "preprocess", "data.source=kaggle:msambare/fer2013/versions/3", "-j", "1"]
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "data" / "prepared" / "fer2013" / "manifest.json").is_file()
    (tmp_path / "photos.tar.gz").write_bytes(b"")
    _raw_tree(tmp_path / "data" / "raw" / "photos")
    result = runner.invoke(app, ["data", "preprocess", "data.source=photos.tar.gz", "-j", "1"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "data" / "prepared" / "photos" / "manifest.json").is_file()
