"""The repository's own tooling: workflows, Dockerfile, generated docs, pre-commit hooks."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from visionops.cli.app import app
from visionops.cli.reference import render_reference

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))


def _tool(name: str) -> str:
    """The tool's path; in CI (CI=true) a missing dev tool fails instead of skipping."""
    path = shutil.which(name)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is missing — it comes with the dev extra of requirements.lock")
        pytest.skip(f"{name} is not installed (dev extra)")
    return path


def _workflow(name: str) -> dict[str, object]:
    loaded = yaml.safe_load((ROOT / ".github" / "workflows" / name).read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


def test_workflows_pass_actionlint() -> None:
    result = subprocess.run(
        [_tool("actionlint"), *map(str, WORKFLOWS)], capture_output=True, text=True, cwd=ROOT
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_passes_hadolint() -> None:
    result = subprocess.run(
        [_tool("hadolint"), "Dockerfile"], capture_output=True, text=True, cwd=ROOT
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_workflows_cover_every_platform_and_job() -> None:
    assert {path.name for path in WORKFLOWS} >= {
        "tests.yml",
        "lint.yml",
        "docs.yml",
        "docker.yml",
        "release.yml",
    }
    tests = _workflow("tests.yml")["jobs"]
    assert isinstance(tests, dict)
    assert tests["linux"]["strategy"]["matrix"]["python"] == ["3.11", "3.12", "3.13"]
    assert set(tests["other-os"]["strategy"]["matrix"]["os"]) == {
        "macos-latest",
        "windows-latest",
    }
    docs = _workflow("docs.yml")["jobs"]
    assert isinstance(docs, dict)
    assert any("mkdocs build --strict" in str(step.get("run")) for step in docs["build"]["steps"])
    assert docs["deploy"]["permissions"]["pages"] == "write"
    release_steps = str(_workflow("release.yml")["jobs"])
    assert "python -m build" in release_steps
    assert "docker/build-push-action" in str(_workflow("docker.yml")["jobs"])


def test_command_reference_is_current() -> None:
    committed = (ROOT / "docs" / "reference" / "cli.md").read_text(encoding="utf-8")
    assert committed == render_reference(app), (
        "docs/reference/cli.md is stale — run: python scripts/gen_docs.py"
    )


def test_command_reference_lists_every_command() -> None:
    page = render_reference(app)
    for command in ("visionops train", "visionops data fetch", "visionops runs compare"):
        assert f"`{command}`" in page
    assert "`--epochs`, `-e` `<int ≥1>`" in page  # the range --help shows
    assert "`--quantize` `<int8\\|none>`" in page  # the choices
    assert "Environment variable: `VISIONOPS_API_KEY`" in page
    assert "**Required.**" in page  # drift simulate --shift


def test_pre_commit_hooks_run_offline() -> None:
    config = yaml.safe_load((ROOT / ".pre-commit-config.yaml").read_text(encoding="utf-8"))
    hooks = [hook for repo in config["repos"] for hook in repo["hooks"]]
    assert all(repo["repo"] == "local" for repo in config["repos"])  # runs offline
    assert {"ruff-check", "ruff-format", "mypy", "actionlint", "hadolint"} <= {
        hook["id"] for hook in hooks
    }
