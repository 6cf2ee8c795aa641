"""Commands that gained ``--json`` print one JSON document on stdout, messages on stderr."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from visionops.cli.app import app


def test_fetch_and_preprocess_print_json(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    small = ["data.demo.images_per_class=6", "data.demo.image_size=32"]
    fetched = runner.invoke(app, ["data", "fetch", "demo:shapes", *small, "--json", "-q"])
    assert fetched.exit_code == 0, fetched.output
    source = json.loads(fetched.stdout)
    assert source["skipped"] is False
    assert Path(source["path"]).name == "shapes"
    prepared = runner.invoke(
        app, ["data", "preprocess", source["path"], "--size", "16", "--json", "-q"]
    )
    assert prepared.exit_code == 0, prepared.output
    payload = json.loads(prepared.stdout)
    assert payload["manifest"]["image_size"] == 16
    assert payload["manifest"]["task"] == "classification"


def test_drift_simulate_prints_json(tmp_path: Path, raw_shapes: Path) -> None:
    result = CliRunner().invoke(
        app,
        [
            "drift", "simulate", str(raw_shapes / "test"), "--shift", "brightness=1.2",
            "--out-dir", str(tmp_path / "shifted"), "--json",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["written"] > 0
    assert payload["out_dir"] == str(tmp_path / "shifted")
