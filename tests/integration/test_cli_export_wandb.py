"""``visionops export --wandb``: the bundle logged as a W&B model artifact, offline."""

from __future__ import annotations

import base64
import hashlib
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from visionops.cli.app import app


@pytest.fixture
def project(handmade_runs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "project"
    shutil.copytree(handmade_runs / "data", root / "data")
    shutil.copytree(handmade_runs / "runs", root / "runs", symlinks=True)
    monkeypatch.chdir(root)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb-dir"))
    (tmp_path / "wandb-dir").mkdir()
    return root


def _md5(path: Path) -> str:
    return base64.b64encode(hashlib.md5(path.read_bytes()).digest()).decode()


def test_export_logs_the_bundle_as_a_model_artifact(project: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["export", "colours-run", "--wandb", "tracking.mode=offline"])
    assert result.exit_code == 0, result.output
    assert "W&B model artifact colours-run-bundle:" in result.output
    offline_runs = list((tmp_path / "wandb-dir" / "wandb").glob("offline-run-*"))
    assert len(offline_runs) == 1
    assert list(offline_runs[0].glob("*.wandb"))  # the record `wandb sync` uploads

    from visionops.config import TrackingSettings
    from visionops.tracking.model_artifact import log_bundle_artifact

    bundle = project / "runs" / "colours-run" / "bundle"
    logged = log_bundle_artifact(bundle, TrackingSettings(mode="offline"))
    assert logged.name == "colours-run-bundle"
    assert logged.aliases[0] == "latest" and logged.aliases[1].startswith("colours-run")
    on_disk = {p.name for p in bundle.iterdir() if p.is_file()}
    assert set(logged.files) == on_disk >= {"model.onnx", "visionops.json", "reference.npz"}
    for name, digest in logged.files.items():
        assert digest == _md5(bundle / name), name


def test_logging_a_folder_that_is_not_a_bundle_names_the_fix(tmp_path: Path) -> None:
    from visionops.config import TrackingSettings
    from visionops.errors import ArtifactError
    from visionops.tracking.model_artifact import log_bundle_artifact

    with pytest.raises(ArtifactError, match="visionops export"):
        log_bundle_artifact(tmp_path, TrackingSettings(mode="offline"))
