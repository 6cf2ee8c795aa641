"""The prediction log: rotation, side-file embeddings, crash safety, partial lines."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from visionops.artifacts import LoggedImage, PredictionRecord
from visionops.errors import ArtifactError
from visionops.inference.predlog import (
    LogEntry,
    PredictionLog,
    prediction_record,
    read_prediction_log,
)


def record(request_id: str, index: int = 0) -> PredictionRecord:
    return PredictionRecord(
        time="2026-12-01T00:00:00+00:00",
        request_id=request_id,
        index=index,
        model_version="run@1234",
        task="classification",
        prediction={"label": "a"},
    )


def entries(start: int, count: int, dim: int = 8) -> list[LogEntry]:
    return [
        LogEntry(record=record(f"r{i}"), embedding=np.full(dim, i, dtype=np.float32))
        for i in range(start, start + count)
    ]


def test_records_and_embeddings_round_trip(tmp_path: Path) -> None:
    log = PredictionLog(tmp_path)
    log.write(entries(0, 3))
    log.write(entries(3, 2))
    log.close()
    data = read_prediction_log(tmp_path)
    assert [r.request_id for r in data.records] == ["r0", "r1", "r2", "r3", "r4"]
    assert data.embeddings is not None
    np.testing.assert_array_equal(data.embeddings[:, 0], [0, 1, 2, 3, 4])
    assert data.records[4].embedding.row == 4
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
    assert [r.request_id for r in data.records] == [f"r{i}" for i in range(20)]
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
    assert [r.request_id for r in data.records] == ["r0", "r1"]
    assert data.skipped_lines == 1


def test_crash_loses_nothing_acknowledged(tmp_path: Path) -> None:
    # A process writes three batches and is killed without closing anything.
    script = textwrap.dedent(
        f"""
        import os, signal
        import numpy as np
        from pathlib import Path
        from visionops.artifacts import PredictionRecord
        from visionops.inference.predlog import LogEntry, PredictionLog
        log = PredictionLog(Path({str(tmp_path)!r}))
        for b in range(3):
            log.write([LogEntry(PredictionRecord(time="t", request_id=f"r{{b}}-{{i}}",
                                                 model_version="v", task="classification",
                                                 prediction={{}}),
                                np.full(4, b, np.float32))
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
    log.write([LogEntry(record("abc", 1), None, b"\x89PNG...", "png")])
    log.close()
    logged = read_prediction_log(tmp_path / "with").records[0]
    assert logged.image_file == "images/abc-1.png"
    assert (tmp_path / "with" / "images" / "abc-1.png").read_bytes() == b"\x89PNG..."
    assert read_prediction_log(tmp_path / "with").embeddings is None

    plain = PredictionLog(tmp_path / "without")
    plain.write([LogEntry(record("abc", 1), None, b"\x89PNG...", "png")])
    plain.close()
    assert not (tmp_path / "without" / "images").exists()


def test_records_are_one_json_object_per_line(tmp_path: Path) -> None:
    log = PredictionLog(tmp_path)
    log.write(entries(0, 2))
    assert log.current_file is not None
    lines = log.current_file.read_text().splitlines()  # readable while the server runs
    assert [PredictionRecord.model_validate_json(line).request_id for line in lines] == [
        "r0",
        "r1",
    ]
    log.close()


def test_missing_log_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="visionops serve"):
        read_prediction_log(tmp_path / "nowhere")
    with pytest.raises(ArtifactError, match="serve traffic first"):
        read_prediction_log(tmp_path)


def test_lines_that_are_not_records_are_skipped(tmp_path: Path) -> None:
    log = PredictionLog(tmp_path)
    log.write(entries(0, 1))
    log.close()
    (segment,) = tmp_path.glob("*.jsonl")
    with segment.open("ab") as handle:
        handle.write(b'{"request_id": "no time, no prediction"}\n[1, 2]\n')
    data = read_prediction_log(tmp_path)
    assert [r.request_id for r in data.records] == ["r0"]
    assert data.skipped_lines == 2


def test_two_logs_in_one_process_never_share_a_segment(tmp_path: Path) -> None:
    # Same PID and the same second: the names would collide; neither may append to or
    # truncate the other's segment.
    first, second = PredictionLog(tmp_path), PredictionLog(tmp_path)
    first.write(entries(0, 2))
    second.write(entries(10, 3))
    first.write(entries(2, 1))
    first.close()
    second.close()
    assert first.records_written == 3
    assert len(list(tmp_path.glob("*.jsonl"))) == 2
    data = read_prediction_log(tmp_path)
    assert sorted(r.request_id for r in data.records) == sorted(
        ["r0", "r1", "r2", "r10", "r11", "r12"]
    )
    assert data.embeddings is not None
    by_id = {r.request_id: row for r, row in zip(data.records, data.embeddings, strict=True)}
    assert {name: float(row[0]) for name, row in by_id.items()} == {
        "r0": 0, "r1": 1, "r2": 2, "r10": 10, "r11": 11, "r12": 12
    }  # fmt: skip


def test_two_processes_writing_one_log_keep_every_record(tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import sys
        import numpy as np
        from pathlib import Path
        from visionops.artifacts import PredictionRecord
        from visionops.inference.predlog import LogEntry, PredictionLog
        name = sys.argv[1]
        log = PredictionLog(Path({str(tmp_path)!r}), max_bytes=4000)
        for b in range(40):
            log.write([LogEntry(PredictionRecord(time="t", request_id=f"{{name}}-{{b}}",
                                                 model_version="v", task="classification",
                                                 prediction={{}}),
                                np.full(4, b, np.float32))])
        log.close()
        """
    )
    writers = [subprocess.Popen([sys.executable, "-c", script, name]) for name in ("a", "b")]
    assert [writer.wait(timeout=120) for writer in writers] == [0, 0]
    data = read_prediction_log(tmp_path)
    assert data.skipped_lines == 0
    assert sorted(r.request_id for r in data.records) == sorted(
        f"{name}-{b}" for name in ("a", "b") for b in range(40)
    )
    assert data.embeddings is not None
    for logged, row in zip(data.records, data.embeddings, strict=True):
        assert row[0] == int(logged.request_id.split("-")[1])


def test_a_killed_servers_half_written_images_are_removed(tmp_path: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = images / f".abc-0.png.{dead.pid}.x1y2.tmp"
    live = images / f".abc-1.png.{os.getppid()}.x1y2.tmp"  # pytest's parent: alive
    for path in (stale, live):
        path.write_bytes(b"partial")
    PredictionLog(tmp_path, log_images=True).close()
    assert not stale.exists()
    assert live.exists()


def test_outputs_read_back_exactly_as_the_model_gave_them(tmp_path: Path) -> None:
    # A confident model's probabilities sit a hair under 1; drift compares them with the
    # reference's float32 outputs, so the log must not round them to 1.0.
    output = np.array([0.99999994, 6e-8, 0.123456789], dtype=np.float32)
    logged = prediction_record(
        answer={"label": "cat"}, output=output, image=LoggedImage(),
        time="2026-12-01T00:00:00+00:00", request_id="r", index=0, model_version="v",
        task="classification", precision="fp32", latency_ms=1.0, queue_ms=0.0, compute_ms=1.0,
        batch_size=1,
    )  # fmt: skip
    log = PredictionLog(tmp_path)
    log.write([LogEntry(record=logged, embedding=np.zeros(4, np.float32))])
    log.close()
    (record,) = read_prediction_log(tmp_path).records
    np.testing.assert_array_equal(np.asarray(record.output, np.float32), output)
