"""Session fixtures: real bundles, exported once by ``visionops export`` and shared.

They come from ``handmade_runs`` (tests/conftest.py), whose models' answers are known: the
colours run names the colour of a solid image, the tags run always gives probabilities
0.8/0.3/0.6 against thresholds 0.5/0.5/0.7, the dishes run always says 220 kcal, 40 g.
The runs are copied first, so exporting them does not change the shared fixture.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def serve_project(handmade_runs: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private copy of the hand-made project (data/prepared + runs)."""
    root = tmp_path_factory.mktemp("serve-project")
    shutil.copytree(handmade_runs / "data", root / "data")
    shutil.copytree(handmade_runs / "runs", root / "runs", symlinks=True)
    return root


def export_bundle(project: Path, run: str) -> Path:
    """Export ``project/runs/<run>`` with the real exporter and return the bundle folder."""
    from visionops.config import load_settings
    from visionops.export.stage import export_run

    settings = load_settings(overrides=[f"runs_root={project / 'runs'}"], cwd=project)
    return export_run(settings, project / "runs" / run).bundle_dir


@pytest.fixture(scope="session")
def classification_bundle(serve_project: Path) -> Path:
    return export_bundle(serve_project, "colours-run")


@pytest.fixture(scope="session")
def multilabel_bundle(serve_project: Path) -> Path:
    return export_bundle(serve_project, "tags-run")


@pytest.fixture(scope="session")
def regression_bundle(serve_project: Path) -> Path:
    return export_bundle(serve_project, "dishes-run")
