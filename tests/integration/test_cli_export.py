"""``visionops export`` and ``visionops benchmark`` driven through the real CLI.

One copy of the hand-made project (tests/conftest.py) is exported once through the CLI and
reused; failure tests run ``visionops.cli.app.main`` in-process so they see the exit code
and the one-line message a user sees.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli_helpers import run_main as _main
from visionops.cli.app import app

runner = CliRunner()


@pytest.fixture(scope="module")
def project(handmade_runs: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return Path(shutil.copytree(handmade_runs, tmp_path_factory.mktemp("cli") / "p", symlinks=True))


@pytest.fixture(scope="module")
def exported(project: Path) -> dict[str, object]:
    """``visionops export colours-run --quantize int8 --json`` run once in the project."""
    previous = Path.cwd()
    try:
        import os

        os.chdir(project)
        result = runner.invoke(app, ["export", "colours-run", "--quantize", "int8", "--json"])
    finally:
        os.chdir(previous)
    assert result.exit_code == 0, result.output
    payload: dict[str, object] = json.loads(result.stdout)
    return payload


@pytest.fixture
def in_project(project: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(project)
    return project


def test_export_writes_a_verified_bundle(exported: dict[str, object], project: Path) -> None:
    bundle_dir = project / "runs" / "colours-run" / "bundle"
    assert Path(str(exported["bundle"])) == Path("runs/colours-run/bundle")
    for name in (
        "model.onnx",
        "model.int8.onnx",
        "visionops.json",
        "parity.json",
        "parity.npz",
        "reference.npz",
    ):
        assert (bundle_dir / name).is_file(), name
    parity = exported["parity"]
    assert isinstance(parity, dict)
    assert parity["passed"] is True
    manifest = exported["manifest"]
    assert isinstance(manifest, dict)
    assert manifest["quantized"]["accepted"] is True
    assert manifest["input"]["dtype"] == "uint8"


def test_existing_bundle_is_refused_in_one_line(
    exported: dict[str, object],
    in_project: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, _, err = _main(monkeypatch, capsys, "export", "colours-run")
    assert code == 2  # an input the user must fix
    assert err.strip().count("\n") == 0
    assert "already exists — pass --force" in err


def test_benchmark_compares_three_engines(exported: dict[str, object], in_project: Path) -> None:
    result = runner.invoke(
        app, ["benchmark", "colours-run", "--json", "--seconds", "0.05", "--threads", "1"]
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    engines = {row["engine"]: row for row in payload["engines"]}
    assert list(engines) == ["pytorch eager", "onnxruntime fp32", "onnxruntime int8"]
    for row in engines.values():
        assert 0 < row["p50_ms"] <= row["p95_ms"]
        assert set(row["throughput"]) == {"8", "32"}
        assert row["size_bytes"] > 0
        assert row["metric"] == pytest.approx(1.0)  # the hand-made classifier is always right
    assert engines["onnxruntime int8"]["size_bytes"] < engines["onnxruntime fp32"]["size_bytes"]
    assert payload["split"] == "test"
    assert payload["metric"] == "accuracy"


def test_benchmark_table(exported: dict[str, object], in_project: Path) -> None:
    result = runner.invoke(app, ["benchmark", "colours-run", "--seconds", "0.05", "--threads", "1"])
    assert result.exit_code == 0, result.output
    for word in ("PyTorch eager", "ORT fp32", "ORT int8", "1 threads", "accuracy"):
        assert word in result.stdout


def test_edited_bundle_is_refused_by_benchmark(
    exported: dict[str, object],
    project: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    copy = Path(shutil.copytree(project / "runs", tmp_path / "runs", symlinks=True))
    with (copy / "colours-run" / "bundle" / "parity.json").open("a") as handle:
        handle.write(" ")
    monkeypatch.chdir(project)
    code, _, err = _main(monkeypatch, capsys, "benchmark", str(copy / "colours-run"))
    assert code == 2  # an input the user must fix
    assert "parity.json was modified after export" in err
    assert err.strip().count("\n") == 0


def test_export_without_checkpoint_fails_in_one_line(
    in_project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = in_project / "runs" / "dishes-run"
    saved = run_dir / "checkpoints" / "best.pt"
    backup = saved.with_suffix(".bak")
    saved.rename(backup)
    try:
        code, _, err = _main(monkeypatch, capsys, "export", "dishes-run")
    finally:
        backup.rename(saved)
    assert code == 2  # an input the user must fix
    assert err.strip().startswith("error: no checkpoint at")
    assert "visionops train" in err
    assert err.strip().count("\n") == 0
    assert not (run_dir / "bundle").exists()


def test_bad_quantize_value_names_the_flag(
    in_project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = _main(monkeypatch, capsys, "export", "dishes-run", "--quantize", "int4")
    assert code == 2
    # The flag, not a config file; one line in visionops' words, not pydantic's.
    assert err.strip() == (
        "error: invalid value for --quantize: 'int4' is not one of 'int8', 'none'"
        " — see `visionops export -h`"
    )


def test_print_config_shows_export_settings(in_project: Path) -> None:
    result = runner.invoke(
        app, ["export", "dishes-run", "export.layout=NHWC", "--opset", "17", "--print-config"]
    )
    assert result.exit_code == 0, result.output
    assert "layout: NHWC" in result.stdout
    assert "opset: 17" in result.stdout
    assert not (in_project / "runs" / "dishes-run" / "bundle").exists()


def test_help_has_an_example() -> None:
    for command in ("export", "benchmark"):
        result = runner.invoke(app, [command, "--help"])
        assert result.exit_code == 0
        lines = result.stdout.splitlines()
        example = lines[[line.strip() for line in lines].index("Example:") + 1]
        assert example.startswith(f"     visionops {command}")  # indented as code
