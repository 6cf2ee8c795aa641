"""``visionops predict`` at scale: streaming rows, --resume after a kill, buckets, Ray.

Every test runs the real command on the tiny torch-free bundle (``tests/bundle_helpers.py``:
a real ONNX graph sealed by the real bundle writer, with an int8 model beside it) over tiny
PNGs; the bucket tests talk to a real S3-compatible server (moto's server mode) over HTTP.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bundle_helpers import make_bundle
from cli_helpers import run_main
from s3_helpers import s3_server

SRC = Path(__file__).resolve().parents[2] / "src"


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny bundle with an accepted int8 model (so ``auto`` means int8)."""
    return make_bundle(tmp_path_factory.mktemp("predict") / "bundle", int8=True)


def _images(folder: Path, count: int, *, bad: int = 0) -> list[str]:
    """``count`` tiny PNGs (and ``bad`` files that are not images); their paths, sorted."""
    rng = np.random.default_rng(count)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        pixels = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{i:05d}.png")
    for i in range(bad):
        (folder / f"bad-{i}.jpg").write_bytes(b"this is not a JPEG")
    return sorted(str(p) for p in folder.iterdir())


def _csv_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def _parquet_rows(location: str) -> dict[str, dict[str, object]]:
    import pyarrow.dataset as ds

    from visionops.storage import filesystem

    fs, root = filesystem(location)
    table = ds.dataset(root, filesystem=fs, format="parquet").to_table()
    return {row["path"]: row for row in table.to_pylist()}


def test_rows_stream_at_serves_precision_and_bad_files_are_rows(
    bundle: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    files = _images(tmp_path / "images", 12, bad=1)
    outs = {}
    # auto = serve's default: the int8 model the bundle carries (its graph divides by 63).
    for precision, used in (("auto", "int8"), ("fp32", "fp32")):
        out = tmp_path / f"{precision}.jsonl"
        code, stdout, err = run_main(
            monkeypatch, capsys, "predict", str(bundle), str(tmp_path / "images"),
            "--out", str(out), "--precision", precision, "-b", "5",
        )  # fmt: skip
        assert code == 0, err
        assert f"13 predictions written to {out} ({used}," in stdout
        outs[precision] = [json.loads(line) for line in out.read_text().splitlines()]
    auto, fp32 = outs["auto"], outs["fp32"]
    assert [r["path"] for r in auto] == [r["path"] for r in fp32] == files
    bad = [r for r in auto if r["error"] is not None]
    assert [r["path"] for r in bad] == [files[-1]] and "not an image" in bad[0]["error"]
    good = [(a, f) for a, f in zip(auto, fp32, strict=True) if a["error"] is None]
    assert all(not np.allclose(a["output"], f["output"], atol=1e-7) for a, f in good)

    # The same job again refuses to overwrite, in one line, and leaves the file as it was.
    before = (tmp_path / "auto.jsonl").read_bytes()
    code, _, err = run_main(
        monkeypatch, capsys, "predict", str(bundle), str(tmp_path / "images"),
        "--out", str(tmp_path / "auto.jsonl"),
    )  # fmt: skip
    assert code == 2 and "--resume" in err and "--force" in err and "Traceback" not in err
    assert (tmp_path / "auto.jsonl").read_bytes() == before


def test_bad_files_are_counted_in_cli_words_and_fail_on_error_exits_1(
    bundle: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    mixed = tmp_path / "mixed"
    _images(mixed, 2, bad=1)
    (mixed / "empty.png").write_bytes(b"")
    (mixed / "cut.png").write_bytes((mixed / "00000.png").read_bytes()[:40])  # truncated PNG
    code, stdout, err = run_main(monkeypatch, capsys, "predict", str(bundle), str(mixed))
    assert code == 0, err
    said = " ".join((stdout + err).split())
    assert "3 of 5 images failed" in said and "--fail-on-error makes this exit 1" in said
    # Each failed row names its file and says why (in a table cell or as one line).
    assert "empty.png" in said and "the file is empty (0 bytes)" in said
    assert "bad-0.jpg" in said and "not an image (unknown file signature)" in said
    assert "upload" not in said  # the server's word for its input, not the CLI's

    code, _, err = run_main(
        monkeypatch, capsys, "predict", str(bundle), str(mixed), "--fail-on-error"
    )
    assert code == 1
    assert "3 of 5 images failed" in " ".join(err.split())

    good = tmp_path / "good"
    _images(good, 2)
    code, _, err = run_main(
        monkeypatch, capsys, "predict", str(bundle), str(good), "--fail-on-error"
    )
    assert code == 0 and "all 2 images predicted" in err


def test_a_killed_job_resumes_and_every_input_appears_once(bundle: Path, tmp_path: Path) -> None:
    files = _images(tmp_path / "images", 3000)
    out = tmp_path / "predictions.csv"
    command = [sys.executable, "-m", "visionops", "predict", str(bundle),
               str(tmp_path / "images"), "--out", str(out), "-b", "1", "-q"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    job = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        # Kill it as soon as rows are on disk: the job is then far from done.
        while not (out.is_file() and out.read_bytes().count(b"\n") >= 3):
            assert job.poll() is None, job.stderr.read() if job.stderr else ""
            assert time.monotonic() < deadline, "no rows written in 120 s"
            time.sleep(0.01)
        os.kill(job.pid, signal.SIGKILL)
    finally:
        job.wait(timeout=60)
    assert job.returncode == -signal.SIGKILL
    written = len(_csv_rows(out))
    assert 0 < written < len(files)

    resumed = subprocess.run([*command, "--resume"], env=env, capture_output=True, text=True,
                             timeout=300, check=False)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    rows = _csv_rows(out)
    paths = [row["path"] for row in rows]
    assert sorted(paths) == files  # every input exactly once
    assert all(row["label"] in {"red", "green", "blue"} and not row["error"] for row in rows)


def test_inputs_from_a_bucket_and_rows_into_it(
    bundle: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    files = _images(tmp_path / "images", 20, bad=1)
    local = tmp_path / "local.parquet"
    code, _, err = run_main(
        monkeypatch, capsys, "predict", str(bundle), str(tmp_path / "images"), "--out", str(local)
    )
    assert code == 0, err
    expected = {Path(path).name: row for path, row in _parquet_rows(str(local)).items()}
    with s3_server() as server:
        server.make_bucket("archive")
        client = server.client()
        for path in files:
            client.upload_file(path, "archive", f"2026-11/cam1/{Path(path).name}")
        (tmp_path / "list.txt").write_text(
            "".join(f"s3://archive/2026-11/cam1/{Path(p).name}\n" for p in files[:5])
        )
        # A prefix in, parquet shards out; then a list file in, CSV out, resumed.
        code, _, err = run_main(
            monkeypatch, capsys, "predict", str(bundle), "s3://archive/2026-11/",
            "--out", "s3://archive/scores.parquet",
        )  # fmt: skip
        assert code == 0, err
        rows = _parquet_rows("s3://archive/scores.parquet")
        assert sorted(rows) == [f"s3://archive/2026-11/cam1/{Path(p).name}" for p in files]
        for path, row in rows.items():
            local_row = expected[path.rsplit("/", 1)[1]]
            assert row["label"] == local_row["label"] and row["error"] == local_row["error"]
            if row["output"] is not None:
                assert np.allclose(row["output"], local_row["output"], atol=1e-6)

        for extra in ([], ["--resume"]):
            code, _, err = run_main(
                monkeypatch, capsys, "predict", str(bundle), str(tmp_path / "list.txt"),
                "--out", "s3://archive/scores.csv", *extra,
            )  # fmt: skip
            assert code == 0, err
        text = client.get_object(Bucket="archive", Key="scores.csv")["Body"].read().decode()
        assert text.splitlines()[0] == "path,label,probability,error"
        assert len(text.splitlines()) == 6  # resumed: nothing twice

        # --log to a bucket: the prediction log drift reads, one segment per run, uploaded
        # before the command returns (XDG_CACHE_HOME keeps the spool inside the test).
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
        code, _, err = run_main(
            monkeypatch, capsys, "predict", str(bundle), str(tmp_path / "images"),
            "--log", "--log-dir", "s3://archive/logs",
        )  # fmt: skip
        assert code == 0, err
        logged = [key for key in server.keys("archive", "logs/") if key.endswith(".jsonl")]
        assert len(logged) == 1
        body = client.get_object(Bucket="archive", Key=logged[0])["Body"].read().decode()
        assert len(body.splitlines()) == len(files) - 1  # the undecodable file is not logged

        # A prefix with no images, and a bucket that does not answer: one line each.
        code, _, err = run_main(
            monkeypatch, capsys, "predict", str(bundle), "s3://archive/nothing-here/"
        )
        assert code == 2 and "no image files in s3://archive/nothing-here/" in err
        assert "Traceback" not in err
    # The server is gone: a bucket behind its address is unreachable.
    for key, value in server.env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    code, _, err = run_main(monkeypatch, capsys, "predict", str(bundle), "s3://gone/2026-11/")
    assert code == 2 and "s3://gone/2026-11/" in err and "AWS_ENDPOINT_URL" in err
    assert len([line for line in err.splitlines() if line.strip()]) == 1


def test_ray_engine_gives_the_local_engines_rows(
    bundle: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from visionops.inference.bundle import load_bundle
    from visionops.inference.ray_engine import predict_with_ray

    files = _images(tmp_path / "images", 40, bad=1)
    local = tmp_path / "local.parquet"
    code, _, err = run_main(
        monkeypatch, capsys, "predict", str(bundle), str(tmp_path / "images"), "--out", str(local)
    )
    assert code == 0, err
    # A local Ray with two CPUs, started and stopped by the engine.
    summary, precision = predict_with_ray(
        load_bundle(bundle), files, str(tmp_path / "ray.parquet"), batch_size=8, local_cpus=2
    )
    import ray

    assert not ray.is_initialized()
    assert precision == "int8" and summary.inputs == 41 and summary.failed == 1
    ours, theirs = _parquet_rows(str(local)), _parquet_rows(str(tmp_path / "ray.parquet"))
    assert sorted(theirs) == sorted(ours) == files
    for path, row in ours.items():
        other = theirs[path]
        assert {k: v for k, v in row.items() if k != "output"} == {
            k: v for k, v in other.items() if k != "output"
        }
        if row["output"] is not None:
            assert np.abs(np.subtract(row["output"], other["output"])).max() <= 1e-6


def test_ray_engine_without_ray_says_what_to_install(
    bundle: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _images(tmp_path / "images", 2)
    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` meets without the extra
    code, _, err = run_main(
        monkeypatch, capsys, "predict", str(bundle), str(tmp_path / "images"),
        "--engine", "ray", "--out", str(tmp_path / "out.parquet"),
    )  # fmt: skip
    assert code == 2 and "pip install 'visionops[ray]'" in err and "Traceback" not in err
    assert not (tmp_path / "out.parquet").exists()
