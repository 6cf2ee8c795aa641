"""A fleet of ``visionops serve`` replicas logging to a real S3-compatible server (moto).

Each test starts the moto server on 127.0.0.1 (tests/s3_helpers.py) and real ``visionops
serve`` processes with ``--log-dir s3://...``; each replica gets its own instance id
(``HOSTNAME``, as on Kubernetes) and its own local disk (``XDG_CACHE_HOME``, where the spool
lives). What is checked is what a fleet owner relies on: every acknowledged prediction ends in
the bucket — after a drain, after a SIGKILL and a restart on the same disk, after the storage
was down for a while — and ``drift report`` reads every replica at once.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from test_cli_serve import Server, start_server

from s3_helpers import S3Server, s3_server
from serve_helpers import colour_image, metric_value
from visionops.inference.predlog import read_prediction_log

BUCKET = "fleet-logs"
URL = f"s3://{BUCKET}/logs"
WITHIN_S = 45.0
"""Longest bounded wait for uploads to show up (a failed attempt alone retries for seconds)."""


@pytest.fixture(scope="module")
def bundle(classification_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private copy of the hand-made colours bundle."""
    source = classification_bundle.parents[2]
    copy = Path(shutil.copytree(source, tmp_path_factory.mktemp("fleet") / "p", symlinks=True))
    return copy / "runs" / "colours-run" / "bundle"


@pytest.fixture
def s3() -> Iterator[S3Server]:
    with s3_server() as server:
        server.make_bucket(BUCKET)
        yield server


def replica(bundle: Path, s3: S3Server, name: str, disk: Path, *args: str) -> Server:
    """`visionops serve BUNDLE --log-dir s3://...` as replica ``name`` with its own disk."""
    disk.mkdir(parents=True, exist_ok=True)
    env = {**s3.env, "HOSTNAME": name, "XDG_CACHE_HOME": str(disk), "COLUMNS": "1000"}
    return start_server(disk, str(bundle), "--log-dir", URL, *args, env=env)


def send(server: Server, requests: int, images: int = 5) -> list[str]:
    """POST ``requests`` requests of ``images`` images; the request ids of the answered ones."""
    names = ["red", "green", "blue", "yellow"]
    acknowledged = []
    with httpx.Client(base_url=server.url, timeout=30) as client:
        for number in range(requests):
            files = [
                ("file", (f"{i}.png", colour_image(names[i % 4], seed=number), "image/png"))
                for i in range(images)
            ]
            response = client.post("/predict", files=files)
            assert response.status_code == 200, response.text
            acknowledged += [response.json()["request_id"]] * images
    return acknowledged


class Traffic:
    """Clients posting one image at a time from a thread until stopped."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.acknowledged: list[str] = []
        self.statuses: Counter[int] = Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)
        self._thread.start()

    def _run(self) -> None:
        payload = colour_image("blue")
        with httpx.Client(base_url=self.server.url, timeout=30) as client:
            while not self._stop.is_set():
                try:
                    response = client.post(
                        "/predict", files={"file": ("b.png", payload, "image/png")}
                    )
                except httpx.TransportError:  # the replica was killed mid-request
                    return
                self.statuses[response.status_code] += 1
                if response.status_code == 200:
                    self.acknowledged.append(response.json()["request_id"])

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=60)


def wait_for(condition: Callable[[], bool], what: str, within: float = WITHIN_S) -> None:
    """Return once ``condition()`` holds; fail after ``within`` seconds."""
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {within:.0f} s")
        time.sleep(0.1)


def bucket_ids() -> Counter[str]:
    """Request ids of every record in the bucket (one per image)."""
    try:
        records = read_prediction_log(URL, with_embeddings=False).records
    except Exception:  # nothing uploaded yet, or the server is restarting
        return Counter()
    return Counter(record.request_id for record in records)


def spooled(disk: Path) -> list[Path]:
    return [p for p in disk.rglob("predictions-*") if p.is_file()]


def test_two_replicas_drain_to_the_bucket_and_drift_reads_both(
    bundle: Path, s3: S3Server, tmp_path: Path
) -> None:
    a = replica(bundle, s3, "replica-a", tmp_path / "a")
    b = replica(bundle, s3, "replica-b", tmp_path / "b")
    try:
        acknowledged = Counter(send(a, 4) + send(b, 3))
    finally:
        outputs = [a.stop(), b.stop()]
    for server, output in zip((a, b), outputs, strict=True):
        assert server.process.returncode == -signal.SIGTERM, output
    # Uploaded on drain, before the process exited: nothing is left on either disk.
    assert bucket_ids() == acknowledged
    assert sum(acknowledged.values()) == 35
    keys = s3.keys(BUCKET, "logs/")
    assert {key.split("/")[1] for key in keys} == {"replica-a", "replica-b"}
    assert any(key.endswith(".embeddings.npy") for key in keys)
    assert spooled(tmp_path / "a") == [] and spooled(tmp_path / "b") == []

    out = tmp_path / "report"
    result = subprocess.run(
        [sys.executable, "-m", "visionops", "drift", "report", str(bundle), "--current", URL,
         "--json", "--out-dir", str(out), "drift.min_samples=5", "drift.permutations=199"],
        capture_output=True, text=True, timeout=300, env=dict(os.environ),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    assert payload["current"]["n"] == 35
    assert "2 log segments" in " ".join(payload["notes"])
    assert (out / "report.html").is_file()


def test_a_killed_replica_uploads_its_pending_segments_after_a_restart(
    bundle: Path, s3: S3Server, tmp_path: Path
) -> None:
    disk = tmp_path / "a"
    first = replica(bundle, s3, "replica-a", disk)
    traffic = Traffic(first)
    wait_for(lambda: len(traffic.acknowledged) >= 10, "10 answered predictions")
    first.process.send_signal(signal.SIGKILL)
    first.stop()
    traffic.stop()
    acknowledged = Counter(traffic.acknowledged)
    assert acknowledged and bucket_ids() == Counter()  # uploads were due in 60 s: none yet
    assert spooled(disk)

    second = replica(bundle, s3, "replica-a", disk)  # the same local disk
    try:
        wait_for(
            lambda: all(bucket_ids()[key] >= n for key, n in acknowledged.items()),
            "the killed replica's segments reaching the bucket",
        )
        later = Counter(send(second, 2))
    finally:
        output = second.stop()
    assert second.process.returncode == -signal.SIGTERM, output
    logged = bucket_ids()
    for key, count in (acknowledged + later).items():
        assert logged[key] >= count, key  # nothing acknowledged is lost
    assert all(logged[key] == count for key, count in later.items())
    assert spooled(disk) == []


def test_storage_down_mid_traffic_serving_goes_on_and_the_backlog_uploads(
    bundle: Path, s3: S3Server, tmp_path: Path
) -> None:
    server = replica(bundle, s3, "replica-a", tmp_path / "a", "serve.log_upload_seconds=1")

    def metric(name: str) -> float:
        return metric_value(httpx.get(f"{server.url}/metrics", timeout=10).text, name)

    try:
        before = Counter(send(server, 2))
        wait_for(lambda: bucket_ids() == before, "the first predictions reaching the bucket")
        s3.stop()
        during = Counter(send(server, 3))  # send() asserts every answer is a 200
        wait_for(
            lambda: metric("visionops_log_upload_failures_total") >= 1,
            "a failed upload counted in /metrics",
        )
        assert metric("visionops_log_upload_pending_bytes") > 0
        during += Counter(send(server, 3))
        # moto keeps buckets in memory: the restarted server starts empty.
        s3.start()
        s3.make_bucket(BUCKET)
        wait_for(lambda: bucket_ids() == during, "the backlog reaching the bucket")
        wait_for(lambda: metric("visionops_log_upload_pending_bytes") == 0, "an empty spool")
    finally:
        output = server.stop()
    assert server.process.returncode == -signal.SIGTERM, output
    warnings = [line for line in output.splitlines() if "upload failed" in line]
    assert len(warnings) == 1, output  # at most once a minute
    assert "AWS_ACCESS_KEY_ID" in warnings[0] and URL in warnings[0]
    assert "uploads to s3://fleet-logs/logs resumed" in output


def test_an_unusable_log_url_warns_once_and_serving_goes_on(
    bundle: Path, s3: S3Server, tmp_path: Path
) -> None:
    env = {**s3.env, "XDG_CACHE_HOME": str(tmp_path), "HOSTNAME": "replica-x", "COLUMNS": "1000"}
    missing = "s3://no-such-bucket/logs"
    server = start_server(tmp_path, str(bundle), "--log-dir", missing, env=env)
    try:
        send(server, 1, images=2)
        wait_for(
            lambda: (
                metric_value(
                    httpx.get(f"{server.url}/metrics").text, "visionops_log_upload_failures_total"
                )
                >= 1
            ),
            "the failed check counted in /metrics",
        )
    finally:
        output = server.stop(signal.SIGKILL)
    warnings = [line for line in output.splitlines() if "upload failed" in line]
    assert len(warnings) == 1 and missing in warnings[0] and "AWS_ENDPOINT_URL" in warnings[0]

    result = subprocess.run(
        [sys.executable, "-m", "visionops", "drift", "report", str(bundle), "--current",
         missing, "--out-dir", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "COLUMNS": "400"},
    )  # fmt: skip
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "out").exists()


def test_a_scheme_without_its_driver_names_the_install(bundle: Path, tmp_path: Path) -> None:
    if importlib.util.find_spec("adlfs") is not None:
        pytest.skip("adlfs, the az:// driver, is installed here")
    result = subprocess.run(
        [sys.executable, "-m", "visionops", "serve", str(bundle), "--log-dir", "az://c/logs"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
        env={**os.environ, "COLUMNS": "400"},
    )  # fmt: skip
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error")]
    assert len(errors) == 1 and "pip install adlfs" in errors[0], result.stderr
