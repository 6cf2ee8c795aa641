"""The layers of docs/architecture.md hold, and breaking one fails the check.

``scripts/run test`` runs ``lint-imports`` on the tree; this test shows the contracts in
pyproject.toml are not vacuous: a copy of the package with one upward import is refused.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _lint_imports(tree: Path) -> subprocess.CompletedProcess[str]:
    """``lint-imports`` on the copy of the package under ``tree/src``."""
    shutil.copy(ROOT / "pyproject.toml", tree / "pyproject.toml")
    linter = Path(sys.executable).with_name("lint-imports")
    return subprocess.run(
        [str(linter), "--config", "pyproject.toml", "--no-cache"],
        cwd=tree,
        env={"PYTHONPATH": str(tree / "src"), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.fixture
def package_copy(tmp_path: Path) -> Path:
    shutil.copytree(
        ROOT / "src" / "visionops",
        tmp_path / "src" / "visionops",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    return tmp_path


def test_the_package_keeps_its_layers(package_copy: Path) -> None:
    result = _lint_imports(package_copy)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("module", "upward"),
    [
        ("inference/session.py", "visionops.serve.app"),
        ("tasks/classification.py", "visionops.train.engine"),
        ("drift/report.py", "visionops.export.stage"),
    ],
)
def test_an_upward_import_is_refused(package_copy: Path, module: str, upward: str) -> None:
    path = package_copy / "src" / "visionops" / module
    # Inside a function, where such imports hide: the contracts count them too.
    path.write_text(path.read_text() + f"\n\ndef _upward() -> None:\n    import {upward}\n")
    result = _lint_imports(package_copy)
    importer = "visionops." + module.removesuffix(".py").replace("/", ".")
    assert result.returncode != 0
    assert f"{importer} -> {upward}" in result.stdout
