"""The output-safety rule (docs/reference/conventions.md) on the commands that broke it.

``drift simulate --out-dir`` and ``runs compare``'s PNG refuse an output that exists without
``--force`` (exit 2, nothing touched); ``drift report`` keeps every earlier report in a dated
folder and refreshes the latest at the top. On the hand-made colours project (fast).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cli_helpers import run_main as _main

SMALL = ["drift.min_samples=5", "drift.permutations=199"]


@pytest.fixture
def colours(classification_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private copy of the hand-made project (colours-run exported), the working folder."""
    root = Path(shutil.copytree(classification_bundle.parents[2], tmp_path / "p", symlinks=True))
    monkeypatch.chdir(root)
    monkeypatch.setenv("COLUMNS", "120")
    return root


def _images(folder: Path, count: int = 8) -> Path:
    rng = np.random.default_rng(0)
    for i in range(count):
        pixels = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
        (folder / "any").mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(folder / "any" / f"{i}.png")
    return folder


def test_simulate_refuses_an_out_dir_that_exists_without_force(
    colours: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    images = _images(tmp_path / "images")
    args = ["drift", "simulate", str(images), "--shift", "brightness=1.3", "--out-dir", "shifted"]
    code, _, err = _main(monkeypatch, capsys, *args)
    assert code == 0, err
    first = {p.name: p.read_bytes() for p in (colours / "shifted" / "any").iterdir()}

    code, _, err = _main(monkeypatch, capsys, *[a.replace("1.3", "0.5") for a in args])
    assert code == 2
    assert err.strip().splitlines()[-1].startswith("error:") and "--force" in err, err
    assert {p.name: p.read_bytes() for p in (colours / "shifted" / "any").iterdir()} == first

    code, _, err = _main(monkeypatch, capsys, *[a.replace("1.3", "0.5") for a in args], "--force")
    assert code == 0, err
    again = {p.name: p.read_bytes() for p in (colours / "shifted" / "any").iterdir()}
    assert again.keys() == first.keys() and again != first
    assert not list(colours.glob(".shifted.*"))  # no staging folder left behind


def test_drift_report_keeps_every_report_in_a_dated_folder(
    colours: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    current = _images(tmp_path / "current", 12)
    for _ in range(2):
        code, out, err = _main(
            monkeypatch, capsys, "drift", "report", *SMALL, "--current", str(current)
        )
        assert code == 0, out + err
        assert "kept:" in out
    drift = colours / "runs" / "colours-run" / "drift"
    dated = sorted(p for p in drift.iterdir() if p.is_dir())
    assert len(dated) == 2, list(drift.iterdir())
    for folder in dated:
        assert (folder / "report.html").is_file()
        assert json.loads((folder / "report.json").read_text())["kind"] == "visionops.drift"
    # The top-level report is the latest one, byte for byte.
    assert (drift / "report.json").read_bytes() == (dated[-1] / "report.json").read_bytes()


def test_compare_refuses_to_redraw_its_png_without_force(
    colours: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for run, losses in (("colours-run", [1.0, 0.5]), ("tags-run", [0.9, 0.7])):
        rows = [
            {"epoch": i + 1, "train_loss": loss, "val_loss": loss, "seconds": 1.0}
            for i, loss in enumerate(losses)
        ]
        run_dir = colours / "runs" / run
        (run_dir / "history.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
        (run_dir / "config.yaml").write_text(f"train:\n  epochs: {len(losses)}\n")
    png = colours / "runs" / "compare-colours-run-vs-tags-run.png"
    code, out, err = _main(monkeypatch, capsys, "runs", "compare", "colours-run", "tags-run")
    assert code == 0, out + err
    drawn = png.read_bytes()

    code, _, err = _main(monkeypatch, capsys, "runs", "compare", "colours-run", "tags-run")
    assert code == 2
    assert err.strip().splitlines()[-1].startswith("error:") and "--force" in err, err
    assert png.read_bytes() == drawn

    code, out, err = _main(monkeypatch, capsys, "runs", "compare", "colours-run", "tags-run", "-f")
    assert code == 0, out + err
