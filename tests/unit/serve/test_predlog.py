"""The prediction log: rotation, side-file embeddings, crash safety, partial lines."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from visionops.errors import ArtifactError
from visionops.serve.predlog import LogEntry, PredictionLog, read_prediction_log


def entries(start: int, count: int, dim: int = 8) -> list[LogEntry]:
    return [
        LogEntry(
            record={"request_id": f"r{i}", "index": 0, "prediction": {"label": "a"}},
            embedding=np.full(dim, i, dtype=np.float32),
        )
        for i in range(start, start + count)
    ]


def test_records_and_embeddings_round_trip(tmp_path: Path) -> None:
    log = PredictionLog(tmp_path)
    log.write(entries(0, 3))
    log.write(entries(3, 2))
    log.close()
    data = read_prediction_log(tmp_path)
    assert [r["request_id"] for r in data.records] == ["r0", "r1", "r2", "r3", "r4"]
    assert data.embeddings is not None
    np.testing.assert_array_equal(data.embeddings[:, 0], [0, 1, 2, 3, 4])
    assert data.records[4]["embedding"]["row"] == 4
    (side,) = tmp_path.glob("*.embeddings.npy")
    assert np.load(side).shape == (5, 8)  # a plain .npy once closed


def test_rotation_by_size_keeps_every_record_in_order(tmp_path: Path) -> None:
    log = PredictionLog(tmp_path, max_bytes=600)
    for batch in range(10):
        log.write(entries(batch * 2, 2, dim=16))
    log.close()
    segments = sorted(tmp_path.glob("predictions-*.jsonl"))
    assert len(segments) > 3
    for segment in segments:
        side = segment.with_name(segment.name.replace(".jsonl", ".embeddings.npy"))
        assert side.is_file()
    data = read_prediction_log(tmp_path)
    assert [r["request_id"] for r in data.records] == [f"r{i}" for i in range(20)]
    assert data.embeddings is not None
    np.testing.assert_array_equal(data.embeddings[:, 0], np.arange(20))
    single = read_prediction_log(segments[0])
    assert single.records == data.records[: len(single.records)]


def test_partial_last_line_is_skipped(tmp_path: Path) -> None:
    log = PredictionLog(tmp_path)
    log.write(entries(0, 2))
    log.close()
    (segment,) = tmp_path.glob("*.jsonl")
    with segment.open("ab") as handle:
        handle.write(b'{"request_id": "r2", "predic')  # a crash mid-write
    data = read_prediction_log(tmp_path)
    assert [r["request_id"] for r in data.records] == ["r0", "r1"]
    assert data.skipped_lines == 1


def test_crash_loses_nothing_acknowledged(tmp_path: Path) -> None:
    # A process writes three batches and is killed without closing anything.
    script = textwrap.dedent(
        f"""
        import os, signal
        import numpy as np
        from pathlib import Path
        from visionops.serve.predlog import LogEntry, PredictionLog
        log = PredictionLog(Path({str(tmp_path)!r}))
        for b in range(3):
            log.write([LogEntry({{"request_id": f"r{{b}}-{{i}}"}}, np.full(4, b, np.float32))
                       for i in range(2)])
        print("acknowledged", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert "acknowledged" in result.stdout
    assert result.returncode == -9
    data = read_prediction_log(tmp_path)
    assert len(data.records) == 6
    assert data.embeddings is not None
    np.testing.assert_array_equal(data.embeddings[:, 0], [0, 0, 1, 1, 2, 2])
    (side,) = tmp_path.glob("*.embeddings.npy")
    assert np.load(side).shape == (6, 4)  # the header was kept up to date


def test_images_are_stored_only_when_asked(tmp_path: Path) -> None:
    log = PredictionLog(tmp_path / "with", log_images=True)
    log.write([LogEntry({"request_id": "abc", "index": 1}, None, b"\x89PNG...", "png")])
    log.close()
    record = read_prediction_log(tmp_path / "with").records[0]
    assert record["image_file"] == "images/abc-1.png"
    assert (tmp_path / "with" / "images" / "abc-1.png").read_bytes() == b"\x89PNG..."
    assert read_prediction_log(tmp_path / "with").embeddings is None

    plain = PredictionLog(tmp_path / "without")
    plain.write([LogEntry({"request_id": "abc", "index": 1}, None, b"\x89PNG...", "png")])
    plain.close()
    assert not (tmp_path / "without" / "images").exists()


def test_records_are_one_json_object_per_line(tmp_path: Path) -> None:
    log = PredictionLog(tmp_path)
    log.write(entries(0, 2))
    assert log.current_file is not None
    lines = log.current_file.read_text().splitlines()  # readable while the server runs
    assert [json.loads(line)["request_id"] for line in lines] == ["r0", "r1"]
    log.close()


def test_missing_log_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="visionops serve"):
        read_prediction_log(tmp_path / "nowhere")
    with pytest.raises(ArtifactError, match="serve traffic first"):
        read_prediction_log(tmp_path)
