"""``visionops drift`` and ``visionops predict`` through the CLI.

On the trained shapes demo (tests/conftest.py; copied and exported once, reference = its val
split): unseen test images are the "same distribution" traffic, `drift simulate` makes the
shifted traffic. On the hand-made colours run (fast; 8 val images, so `drift.min_samples=5`):
input errors, the reference rebuild and the report in headless Chromium. Commands run the
installed entry point in-process, so they see the exit code and the one-line message a user
sees.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cli_helpers import run_main as _main

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220),
           "yellow": (220, 220, 40)}  # fmt: skip
SMALL = ["drift.min_samples=5", "drift.permutations=199"]


@pytest.fixture(scope="module")
def project(trained_shapes_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private copy of the trained shapes project, exported (reference = val split)."""
    from visionops.config import load_settings
    from visionops.export.stage import export_run

    source = trained_shapes_run.parent.parent
    root = Path(shutil.copytree(source, tmp_path_factory.mktemp("drift-cli") / "p", symlinks=True))
    settings = load_settings(overrides=[f"runs_root={root / 'runs'}"], cwd=root)
    export_run(settings, root / "runs" / trained_shapes_run.name)
    return root


@pytest.fixture
def in_project(project: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(project)
    monkeypatch.setenv("COLUMNS", "200")
    return project


@pytest.mark.slow
def test_unseen_images_do_not_drift_and_brighter_ones_do(
    in_project: Path,
    raw_shapes: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    unseen = raw_shapes / "test"
    # α = 0.01 here: a seeded test, but the trained model may differ across machines.
    code, out, err = _main(
        monkeypatch, capsys, "drift", "report", "drift.alpha=0.01", "--current", str(unseen),
        "--fail-on-drift",
    )  # fmt: skip
    assert code == 0, out + err
    assert out.lstrip().startswith("NO DRIFT")
    report = json.loads((in_project / "runs" / "run-001" / "drift" / "report.json").read_text())
    assert report["verdict"]["drifted"] is False
    assert report["reference"]["split"] == "val"
    assert {f["name"] for f in report["families"]} == {"embeddings", "outputs", "images"}

    code, out, err = _main(
        monkeypatch, capsys, "drift", "simulate", str(unseen), "--shift", "brightness=1.5",
        "--out-dir", str(tmp_path / "bright"),
    )  # fmt: skip
    assert code == 0, err
    assert "shifted images written" in out
    code, out, err = _main(
        monkeypatch, capsys, "drift", "report", "--current", str(tmp_path / "bright"),
        "--out-dir", str(tmp_path / "report"), "--fail-on-drift",
    )  # fmt: skip
    assert code == 1, out + err
    assert out.lstrip().startswith("DRIFT DETECTED")
    assert "brightness up" in out
    page = (tmp_path / "report" / "report.html").read_text()
    assert page.index("Drift detected") < page.index("Image statistics (KS)")
    assert page.count("data:image/png;base64,") >= 4
    assert "<script" not in page and "http" not in page.split("</style>")[1]


@pytest.mark.slow
def test_a_new_camera_resolution_shows_as_a_drift_in_original_size(
    in_project: Path,
    raw_shapes: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # The same test images at twice the resolution: the model sees nearly the same pixels,
    # only the size before resizing says the source changed.
    bigger = tmp_path / "bigger"
    for path in sorted((raw_shapes / "test").rglob("*.jpg")):
        target = (bigger / path.relative_to(raw_shapes / "test")).with_suffix(".png")
        target.parent.mkdir(parents=True, exist_ok=True)
        with Image.open(path) as image:
            image.resize((image.width * 2, image.height * 2), Image.Resampling.NEAREST).save(target)
    code, out, err = _main(
        monkeypatch, capsys, "drift", "report", "--current", str(bigger),
        "--out-dir", str(tmp_path / "report"), "--json",
    )  # fmt: skip
    assert code == 0, out + err
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["verdict"]["drifted"] is True
    images = next(f for f in report["families"] if f["name"] == "images")
    sizes = {row["name"]: row for row in images["tests"] if row["key"] in {"width", "height"}}
    assert set(sizes) == {"original width", "original height"}
    alpha = report["verdict"]["alpha"]
    assert all(row["p_adjusted"] < alpha and row["statistic"] == 1.0 for row in sizes.values())
    assert any(
        line.startswith("uploads are wider: original width up 64 → 128")
        for line in report["verdict"]["what_drifted"]
    )


@pytest.mark.slow
def test_predict_log_then_report_on_the_log(
    in_project: Path,
    raw_shapes: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    log_dir = tmp_path / "log"
    csv_file = tmp_path / "predictions.csv"
    code, out, err = _main(
        monkeypatch, capsys, "predict", str(raw_shapes / "test"), "--out", str(csv_file),
        "--log", "--log-dir", str(log_dir),
    )  # fmt: skip
    assert code == 0, err
    rows = csv_file.read_text().splitlines()
    assert rows[0] == "path,label,probability,error"
    right = sum(Path(row.split(",")[0]).parent.name == row.split(",")[1] for row in rows[1:])
    assert right / (len(rows) - 1) >= 0.9  # the demo model reads its own test images

    code, out, err = _main(
        monkeypatch, capsys, "drift", "report", "--current", str(log_dir), "--json",
        "--out-dir", str(tmp_path / "report"),
    )  # fmt: skip
    assert code == 0, err
    payload = json.loads(out)
    assert payload["current"]["n"] == len(rows) - 1
    assert payload["verdict"]["drifted"] is False

    # Too few images: a one-line error naming the minimum, exit 2, nothing written.
    code, out, err = _main(
        monkeypatch, capsys, "drift", "report", "--current", str(log_dir), "--last", "10",
        "--out-dir", str(tmp_path / "few"),
    )  # fmt: skip
    assert code == 2
    assert "at least 30" in err and "Traceback" not in err
    assert not (tmp_path / "few").exists()


# ------------------------------------------------------------------ hand-made colours run


@pytest.fixture(scope="module")
def colours(classification_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private copy of the hand-made project with colours-run exported (runs/latest)."""
    source = classification_bundle.parents[2]
    return Path(shutil.copytree(source, tmp_path_factory.mktemp("drift-hm") / "p", symlinks=True))


def _colour_folder(folder: Path, count: int, cast: float = 0.0) -> Path:
    rng = np.random.default_rng(len(str(folder)))
    for i in range(count):
        name = list(COLOURS)[i % 4]
        colour = np.array(COLOURS[name], np.float64) + 255 * cast * np.array([1, 0, -1])
        pixels = np.clip(colour + rng.normal(0, 8, (32, 32, 3)), 0, 255).astype(np.uint8)
        (folder / name).mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(folder / name / f"{i}.png")
    return folder


@pytest.mark.parametrize("problem", ["missing", "empty", "foreign", "too few"])
def test_bad_input_exits_2_in_one_line_and_writes_nothing(
    colours: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    problem: str,
) -> None:
    monkeypatch.chdir(colours)
    log_dir = tmp_path / "log"
    args = ["--current", str(log_dir)]
    if problem in ("empty", "foreign"):
        log_dir.mkdir()
        line = {
            "time": "2026-12-01T00:00:00+00:00", "request_id": "r1", "task": "classification",
            "model_version": "someone-else@1", "prediction": {"label": "x"}, "image": {"mean": 0.5},
        }  # fmt: skip
        text = "" if problem == "empty" else json.dumps(line) + "\n"
        (log_dir / "predictions-20261201T000000Z-p1-0001.jsonl").write_text(text)
    if problem == "too few":
        args = ["--current", str(_colour_folder(tmp_path / "few", 3))]
    code, _, err = _main(
        monkeypatch, capsys, "drift", "report", *SMALL, *args, "--out-dir", str(tmp_path / "out")
    )
    assert code == 2
    errors = [line for line in err.splitlines() if line.strip()]
    assert errors[-1].startswith("error:") and "Traceback" not in err, err
    expected = {
        "missing": "does not exist", "empty": "no records", "foreign": "another bundle",
        "too few": "at least 5",
    }  # fmt: skip
    assert expected[problem] in err
    assert not (tmp_path / "out").exists()


def test_predict_log_and_report_with_a_colour_cast(
    colours: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(colours)
    images = _colour_folder(tmp_path / "images", 24)
    code, out, err = _main(monkeypatch, capsys, "predict", str(images), "--log")
    assert code == 0, err
    assert "24 images" in out and "red (" in out
    log = colours / "runs" / "colours-run" / "predictions"
    assert len(next(log.glob("*.jsonl")).read_text().splitlines()) == 24

    code, out, err = _main(
        monkeypatch, capsys, "drift", "simulate", str(images), "--shift", "cast=0.3",
        "--out-dir", str(tmp_path / "warm"),
    )  # fmt: skip
    assert code == 0, err
    code, out, err = _main(
        monkeypatch, capsys, "drift", "report", *SMALL, "--current", str(tmp_path / "warm"),
        "--fail-on-drift",
    )  # fmt: skip
    assert code == 1, out + err
    assert out.lstrip().startswith("DRIFT DETECTED")
    report = colours / "runs" / "colours-run" / "drift" / "report.html"
    assert report.is_file()
    _check_in_chromium(report, tmp_path)


def test_reference_rebuilt_from_the_test_split(
    colours: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    copy = Path(shutil.copytree(colours, tmp_path / "p", symlinks=True))
    monkeypatch.chdir(copy)
    code, out, err = _main(monkeypatch, capsys, "drift", "reference", "colours-run",
                           "data/prepared/colours", "--split", "test")  # fmt: skip
    assert code == 0, err
    assert "16 test images" in out
    from visionops.inference.bundle import load_bundle

    bundle = load_bundle(copy / "runs" / "colours-run" / "bundle")  # checksums still verify
    assert bundle.meta.reference_split == "test"
    with np.load(bundle.path / "reference.npz", allow_pickle=False) as reference:
        assert str(reference["split"]) == "test"
        splits = np.load(copy / "data" / "prepared" / "colours" / "splits.npy")
        assert (splits[reference["indices"]] == 2).all()
    code, _, err = _main(monkeypatch, capsys, "drift", "reference", "--split", "train")
    assert code == 2 and "invalid value for --split/-s" in err and "'val', 'test'" in err
    code, _, err = _main(monkeypatch, capsys, "drift", "reference", "colours-run", "a", "b")
    assert code == 2 and "expected RUN [DATASET]" in err
    assert "\n" not in err.strip()


def _check_in_chromium(report: Path, tmp_path: Path) -> None:
    """Open the report in headless Chromium (when installed): verdict first, plots drawn."""
    from test_cli_serve import CHROMIUM, Chromium

    if CHROMIUM is None:
        if os.environ.get("CI"):
            raise AssertionError("chromium is not installed: apt-get install chromium")
        return
    browser = Chromium(CHROMIUM, tmp_path / "profile")
    try:
        target = browser.call("Target.createTarget", url="about:blank")["targetId"]
        browser.session = browser.call("Target.attachToTarget", targetId=target, flatten=True)[
            "sessionId"
        ]
        browser.call("Page.enable")
        browser.call("Page.navigate", url=report.as_uri())
        browser.wait_for("document.readyState === 'complete'")
        first = browser.evaluate("document.querySelector('body > section, body > h2').id")
        assert first == "verdict"
        assert "Drift detected" in browser.evaluate("document.getElementById('verdict').innerText")
        drawn = browser.wait_for(
            "[...document.images].length >= 3 &&"
            " [...document.images].every(i => i.complete && i.naturalWidth > 100)"
        )
        assert drawn
    finally:
        browser.close()
