"""A bundle as a W&B model artifact: what is logged, and a failure in one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from visionops.artifacts import BundleInput, BundleMeta
from visionops.config import TrackingSettings
from visionops.errors import TrackingError
from visionops.tracking.model_artifact import log_bundle_artifact


def _bundle(folder: Path) -> Path:
    BundleMeta(
        task="classification",
        model_version="run-001+abc",
        input=BundleInput(size=16, channels=3, max_image_pixels=1_000_000),
        outputs={"main": "probabilities"},
        class_names=["a", "b"],
    ).write(folder)
    (folder / "model.onnx").write_bytes(b"graph")
    return folder


def test_offline_logs_every_file_under_the_run_name_and_version(
    tmp_path: Path, wandb_env: Path
) -> None:
    bundle = _bundle(tmp_path / "runs" / "run-001" / "bundle")
    logged = log_bundle_artifact(bundle, TrackingSettings(mode="offline"))
    assert logged.name == "run-001-bundle"
    assert logged.aliases == ["latest", "run-001-abc"]
    assert set(logged.files) == {"visionops.json", "model.onnx"}
    assert logged.wandb_run_dir.parent == wandb_env / "wandb"


def test_online_without_login_is_one_line_with_the_fix(tmp_path: Path, wandb_env: Path) -> None:
    bundle = _bundle(tmp_path / "bundle")
    with pytest.raises(TrackingError, match=r"could not log the bundle.*wandb login") as info:
        log_bundle_artifact(bundle, TrackingSettings(mode="online"))
    assert "\n" not in str(info.value)
