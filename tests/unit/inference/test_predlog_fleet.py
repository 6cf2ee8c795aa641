"""The prediction log of a fleet: segments uploaded to a bucket, several logs read as one.

Uploads go to a real S3-compatible server (moto's server mode, tests/s3_helpers.py).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from s3_helpers import S3Server, s3_server
from visionops.artifacts import PredictionRecord
from visionops.errors import ArtifactError, StorageError
from visionops.inference.predlog import LogEntry, PredictionLog, read_prediction_log
from visionops.inference.predlog_upload import instance_id, spool_root

BUCKET = "unit-logs"


def record(second: int, request_id: str) -> PredictionRecord:
    return PredictionRecord(
        time=f"2026-12-01T00:00:{second:02d}+00:00",
        request_id=request_id,
        index=0,
        model_version="m@1",
        task="classification",
        prediction={"label": "red"},
        latency_ms=1.0,
        queue_ms=0.1,
        compute_ms=0.5,
        batch_size=1,
    )


def write(log: PredictionLog, seconds: list[int], tag: str) -> None:
    for second in seconds:
        vector = np.full(4, second, np.float32)
        log.write([LogEntry(record(second, f"{tag}{second}"), vector)])


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    with s3_server() as server:
        server.make_bucket(BUCKET)
        yield server


def test_replicas_are_merged_by_time_with_their_own_embeddings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two replicas whose segments carry the same name (PID 1 in both containers, same second).
    monkeypatch.setattr(os, "getpid", lambda: 1)
    for name, seconds in (("web-a", [1, 4, 5]), ("web-b", [2, 3, 9])):
        log = PredictionLog(tmp_path / "fleet" / name)
        log._started = "20261201T000000Z"
        write(log, seconds, name)
        log.close()
    data = read_prediction_log(tmp_path / "fleet")
    assert [r.request_id for r in data.records] == [
        "web-a1", "web-b2", "web-b3", "web-a4", "web-a5", "web-b9",
    ]  # fmt: skip
    assert data.embeddings is not None
    assert data.embeddings[:, 0].tolist() == [1, 2, 3, 4, 5, 9]
    assert len(data.files) == 2
    # A glob, and several locations, read the same records.
    assert len(read_prediction_log(str(tmp_path / "fleet" / "web-*")).records) == 6
    both = read_prediction_log([tmp_path / "fleet" / "web-b", tmp_path / "fleet" / "web-a"])
    assert [r.request_id for r in both.records] == [r.request_id for r in data.records]
    with pytest.raises(ArtifactError, match="no prediction log at"):
        read_prediction_log(str(tmp_path / "fleet" / "nobody-*"))
    # One segment under any name is read as it is.
    renamed = tmp_path / "kept.jsonl"
    renamed.write_bytes(next((tmp_path / "fleet" / "web-b").glob("*.jsonl")).read_bytes())
    assert [r.request_id for r in read_prediction_log(renamed).records] == [
        "web-b2",
        "web-b3",
        "web-b9",
    ]


def test_instance_ids_follow_the_platform() -> None:
    assert instance_id({"K_REVISION": "api-00007-abc"}).startswith("api-00007-abc-")
    assert instance_id({"HOSTNAME": "serve-7d9f-x2x"}) == "serve-7d9f-x2x"
    assert instance_id({"HOSTNAME": "a b/c"}) == "a-b-c"  # safe as a folder name
    assert instance_id({}).endswith(f"-{os.getpid()}")


def test_closed_segments_upload_and_the_spool_empties(s3: S3Server, tmp_path: Path) -> None:
    url = f"s3://{BUCKET}/rotating"
    log = PredictionLog(url, max_bytes=400, spool=tmp_path, upload_seconds=3600)
    write(log, list(range(6)), "r")
    assert log.close() is True
    keys = s3.keys(BUCKET, "rotating/")
    assert len([k for k in keys if k.endswith(".jsonl")]) >= 2  # rotated by size
    assert all(k.split("/")[1] == instance_id() for k in keys)
    data = read_prediction_log(url)
    assert [r.request_id for r in data.records] == [f"r{i}" for i in range(6)]
    assert data.embeddings is not None and data.embeddings[:, 0].tolist() == list(range(6))
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]
    status = log.upload_status()
    assert status is not None and status.pending_bytes == 0 and status.failures == 0


def test_a_crashed_writers_segments_upload_with_the_next_writer(
    s3: S3Server, tmp_path: Path
) -> None:
    url = f"s3://{BUCKET}/crashed"
    child = f"""
import os, numpy as np
from pathlib import Path
from visionops.artifacts import PredictionRecord
from visionops.inference.predlog import LogEntry, PredictionLog
log = PredictionLog({url!r}, spool=Path({str(tmp_path)!r}), upload_seconds=3600)
for i in range(3):
    record = PredictionRecord(time="2026-12-01T00:00:0%d+00:00" % i, request_id="c%d" % i,
        index=0, model_version="m@1", task="classification", prediction={{}})
    log.write([LogEntry(record, np.ones(4, np.float32))])
os._exit(9)  # no close: what a SIGKILL leaves
"""
    env = {**os.environ, "HOSTNAME": "crashed-pod"}
    result = subprocess.run([sys.executable, "-c", child], env=env, timeout=120, check=False)
    assert result.returncode == 9
    assert s3.keys(BUCKET, "crashed/") == []
    assert list((tmp_path / "crashed-pod").glob("*.jsonl"))

    PredictionLog(url, spool=tmp_path, upload_seconds=3600).close()
    assert [r.request_id for r in read_prediction_log(url).records] == ["c0", "c1", "c2"]
    assert {k.split("/")[1] for k in s3.keys(BUCKET, "crashed/")} == {"crashed-pod"}


def test_an_unreachable_url_keeps_the_segments_for_the_next_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from s3_helpers import free_port

    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")  # nobody there
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()
    log = PredictionLog("s3://nowhere/logs", spool=tmp_path, upload_seconds=3600)
    write(log, [1, 2], "u")
    assert log.close(drain_s=0.1) is False
    status = log.upload_status()
    assert status is not None and status.failures >= 1 and status.pending_bytes > 0
    assert len(list(tmp_path.rglob("*.jsonl"))) == 1
    with pytest.raises(StorageError, match="AWS_ACCESS_KEY_ID"):
        read_prediction_log("s3://nowhere/logs")
    s3fs.S3FileSystem.clear_instance_cache()


def test_the_spool_is_per_url_under_the_cache_folder(tmp_path: Path) -> None:
    first = spool_root("s3://a/logs", str(tmp_path))
    assert first == spool_root("s3://a/logs/", str(tmp_path))
    assert first != spool_root("s3://b/logs", str(tmp_path))
    assert first.parent == tmp_path / "visionops" / "prediction-logs"
