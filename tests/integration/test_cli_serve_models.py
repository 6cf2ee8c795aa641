"""``visionops serve`` with several models, and with a bundle from a bucket, as a user runs it.

Real ``visionops serve`` processes on loopback ports: two exported runs of different tasks in
one server (each its own log, drift verdict and metrics), and a bundle served from moto's S3
server, then from the cache once the server is gone, and a tampered copy refused.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from test_cli_serve import Server, start_server

from s3_helpers import S3Server, s3_server
from serve_helpers import colour_image
from visionops.inference.predlog import read_prediction_log

WITHIN_S = 60.0
"""Longest bounded wait for an online drift verdict (the tests run on a few busy cores)."""


@pytest.fixture
def project(classification_bundle: Path, regression_bundle: Path, tmp_path: Path) -> Path:
    """A project with private copies of the exported colours-run and dishes-run."""
    runs = tmp_path / "p" / "runs"
    for bundle in (classification_bundle, regression_bundle):
        shutil.copytree(bundle.parent, runs / bundle.parent.name, symlinks=True)
    return tmp_path / "p"


def png(name: str, seed: int = 0) -> dict[str, tuple[str, bytes, str]]:
    return {"file": (f"{name}.png", colour_image(name, seed=seed), "image/png")}


def wait_for_verdict(server: Server, path: str) -> dict[str, Any]:
    """``GET path`` until the online drift monitor has a verdict (bounded)."""
    deadline = time.monotonic() + WITHIN_S
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        body = httpx.get(f"{server.url}{path}", timeout=5).json()
        if body["status"] == "ok":
            return body
        time.sleep(0.05)
    raise AssertionError(f"no drift verdict at {path} within {WITHIN_S:.0f} s: {body}")


def test_two_models_of_different_tasks_in_one_server(project: Path) -> None:
    server = start_server(
        project,
        "runs/colours-run",
        "dishes=runs/dishes-run",
        "--max-wait-ms",
        "0",
        "drift.min_samples=5",
        "drift.every=5",
        "drift.max_cpu_share=1.0",
    )
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            listed = client.get("/models").json()
            assert listed["default"] == "colours-run"
            assert [(m["name"], m["task"]) for m in listed["models"]] == [
                ("colours-run", "classification"),
                ("dishes", "regression"),
            ]
            for seed in range(6):
                colours = client.post("/models/colours-run/predict", files=png("blue", seed))
                assert colours.json()["predictions"][0]["label"] == "blue"
                dishes = client.post("/predict?model=dishes", files=png("blue", seed))
                assert dishes.json()["task"] == "regression"
            assert client.post("/predict", files=png("red")).json()["task"] == "classification"
            unknown = client.post("/predict?model=fruit", files=png("red"))
            assert unknown.status_code == 404
            assert "colours-run, dishes" in unknown.json()["error"]["message"]
            assert client.get("/models/fruit/ready").status_code == 404
            ready = client.get("/ready").json()
            assert set(ready["models"]) == {"colours-run", "dishes"}
            colours_verdict = wait_for_verdict(server, "/models/colours-run/drift")
            dishes_verdict = wait_for_verdict(server, "/drift?model=dishes")
            metrics = client.get("/metrics").text
    finally:
        output = server.stop()
    assert colours_verdict["predictions_seen"] == 7
    assert dishes_verdict["predictions_seen"] == 6
    assert isinstance(colours_verdict["drifted"], bool)
    assert 'endpoint="/predict",model="colours-run",status="200"} 7.0' in metrics
    assert 'endpoint="/predict",model="dishes",status="200"} 6.0' in metrics
    assert 'visionops_drift_detected{model="dishes"}' in metrics
    colours_log = read_prediction_log(project / "runs" / "colours-run" / "predictions")
    dishes_log = read_prediction_log(project / "runs" / "dishes-run" / "predictions")
    assert {r.task for r in colours_log.records} == {"classification"}
    assert len(colours_log.records) == 7
    assert {r.task for r in dishes_log.records} == {"regression"}
    assert len(dishes_log.records) == 6
    assert "as dishes" in output and "(default)" in output


def answers(server: Server) -> list[dict[str, Any]]:
    """The predictions for one image of each colour (timings and request ids left out)."""
    got = []
    with httpx.Client(base_url=server.url, timeout=30) as client:
        for name in ("red", "green", "blue", "yellow"):
            body = client.post("/predict", files=png(name)).json()
            got.append({"model_version": body["model_version"], **body["predictions"][0]})
    return got


def upload(s3: S3Server, bundle: Path, prefix: str) -> str:
    client = s3.client()
    for path in sorted(bundle.iterdir()):
        client.upload_file(str(path), "models", f"{prefix}/{path.name}")
    return f"s3://models/{prefix}"


def test_a_bundle_from_a_bucket_is_served_then_reused_offline(
    project: Path, tmp_path: Path
) -> None:
    bundle = project / "runs" / "colours-run" / "bundle"
    local = start_server(project, str(bundle), "--log-dir", str(tmp_path / "local-log"))
    try:
        expected = answers(local)
    finally:
        local.stop()
    env = {"VISIONOPS_BUNDLE_CACHE": str(tmp_path / "cache"), "COLUMNS": "1000"}
    with s3_server() as s3:
        s3.make_bucket("models")
        url = upload(s3, bundle, "runs/colours-run/bundle")
        env.update(s3.env)
        online = start_server(project, url, env=env)
        try:
            assert answers(online) == expected
            listed = httpx.get(f"{online.url}/models").json()["models"][0]
            assert (listed["name"], listed["source"]) == ("colours-run", url)
        finally:
            first_output = online.stop()
        tampered = Path(shutil.copytree(bundle, tmp_path / "tampered"))
        (tampered / "reference.npz").write_bytes(b"not the reference")
        tampered_url = upload(s3, tampered, "tampered/bundle")
        refused = subprocess.run(
            [sys.executable, "-m", "visionops", "serve", tampered_url],
            cwd=project,
            capture_output=True,
            text=True,
            timeout=120,
            # A cache of its own: the shared one holds the good bytes its manifest addresses
            # and would serve those (the tampered file is then never downloaded).
            env={**os.environ, **env, "VISIONOPS_BUNDLE_CACHE": str(tmp_path / "cache-2")},
        )
    assert "(downloaded)" in first_output
    offline = start_server(project, url, env=env)  # moto is gone: the cache serves
    try:
        assert answers(offline) == expected
    finally:
        offline_output = offline.stop()
    assert "cannot download" in offline_output and "(offline: cached)" in offline_output
    assert refused.returncode == 2
    errors = [line for line in refused.stderr.splitlines() if line.startswith("error")]
    assert len(errors) == 1, refused.stderr
    assert f"the bundle downloaded from {tampered_url} fails its integrity checks" in errors[0]
    assert "Traceback" not in refused.stderr
    log = read_prediction_log(project / "predictions" / "colours-run")
    assert len(log.records) == 8  # four online, four offline: the remote model's own log
