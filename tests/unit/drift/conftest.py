"""A real exported bundle for the drift tests (hand-made colours run; reference = 8 val images)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def colours_bundle(handmade_runs: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from visionops.config import load_settings
    from visionops.export.stage import export_run

    root = tmp_path_factory.mktemp("drift-project")
    shutil.copytree(handmade_runs / "data", root / "data")
    shutil.copytree(handmade_runs / "runs", root / "runs", symlinks=True)
    settings = load_settings(overrides=[f"runs_root={root / 'runs'}"], cwd=root)
    return export_run(settings, root / "runs" / "colours-run").bundle_dir
