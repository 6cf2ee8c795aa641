"""serve/runner: the port, the worker factory, uvicorn's logs, the bundle."""

from __future__ import annotations

import logging
import socket
import sys
from pathlib import Path

import pytest
from loguru import logger

from visionops.config import ServeSettings, load_settings
from visionops.errors import ArtifactError, ServeError
from visionops.inference.runtime import CPU_PROVIDER
from visionops.serve import runner
from visionops.serve.http_errors import SecretScrubber

# ------------------------------------------------------------------ the port


def test_a_taken_port_is_a_one_line_error() -> None:
    taken = runner.bind_socket("127.0.0.1", 0)
    port = taken.getsockname()[1]
    try:
        with pytest.raises(ServeError, match=f"port {port} on 127.0.0.1 is already in use"):
            runner.bind_socket("127.0.0.1", port)
    finally:
        taken.close()


def test_bad_hosts_say_what_to_pass() -> None:
    with pytest.raises(ServeError, match="cannot resolve host"):
        runner.bind_socket("no-such-host.invalid", 0)
    with pytest.raises(ServeError, match="not an address of this machine"):
        runner.bind_socket("203.0.113.7", 0)  # TEST-NET-3: never local


def test_bound_socket_is_listening_and_inheritable() -> None:
    sock = runner.bind_socket("127.0.0.1", 0)
    try:
        assert sock.get_inheritable()
        with socket.create_connection(sock.getsockname(), timeout=5):
            pass
    finally:
        sock.close()


def test_urls_for_people() -> None:
    assert runner._url("0.0.0.0", 8000) == "http://127.0.0.1:8000"
    assert runner._url("::1", 9000) == "http://[::1]:9000"
    assert runner._url("example.org", 80) == "http://example.org:80"


# ------------------------------------------------------------------ --workers N


def test_worker_factory_needs_the_spec(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(runner.ENV_SPEC, raising=False)
    with pytest.raises(ServeError, match="visionops serve"):
        runner.app_from_environment()


def test_worker_factory_builds_the_app_with_key_and_device(
    classification_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = runner.WorkerSpec(
        bundle=classification_bundle,
        settings=ServeSettings(max_batch=4),
        api_key="k3y-for-workers",
        device="cpu",
        log_dir=tmp_path / "log",
    )
    monkeypatch.setenv(runner.ENV_SPEC, spec.model_dump_json())
    state = runner.app_from_environment().state.serving
    assert state.api_key == "k3y-for-workers"
    assert state.settings.max_batch == 4
    assert state.providers == [CPU_PROVIDER]
    assert state.log_dir == tmp_path / "log"


# ------------------------------------------------------------------ uvicorn's logs


def test_uvicorn_logs_are_scrubbed_and_show_no_variable_values() -> None:
    captured: list[str] = []
    # The worst case: a sink that would print variable values next to a traceback.
    handler = logger.add(captured.append, level="DEBUG", diagnose=True, backtrace=True)
    std = logging.getLogger("uvicorn.error")
    saved = (std.handlers, std.level, std.propagate)
    runner._route_uvicorn_logs(SecretScrubber(["sup3r-secret"]))
    try:

        def fail(header: str) -> None:
            raise ValueError(f"bad header {header}")

        try:
            fail("Bearer sup3r-secret")
        except ValueError:
            std.error("Exception in ASGI application", exc_info=sys.exc_info())
        std.warning("key sup3r-secret seen")
    finally:
        logger.remove(handler)
        std.handlers, std.level, std.propagate = saved
    text = "".join(captured)
    assert "Exception in ASGI application" in text
    assert "ValueError: bad header Bearer ***" in text
    assert "key *** seen" in text
    assert "sup3r-secret" not in text


# ------------------------------------------------------------------ the bundle


def test_ensure_bundle_finds_an_existing_bundle(classification_bundle: Path) -> None:
    project = classification_bundle.parents[2]
    settings = load_settings(overrides=[f"runs_root={project / 'runs'}"], cwd=project)
    assert runner.ensure_bundle(classification_bundle, settings) == classification_bundle
    run_dir = classification_bundle.parent
    assert runner.ensure_bundle(run_dir, settings) == run_dir / "bundle"


def test_ensure_bundle_without_runs_says_how_to_get_one(tmp_path: Path) -> None:
    settings = load_settings(overrides=[f"runs_root={tmp_path / 'runs'}"], cwd=tmp_path)
    with pytest.raises(ArtifactError, match="visionops train"):
        runner.ensure_bundle(None, settings)
