"""The ``dvc.yaml`` that ``visionops init`` writes, run by the real DVC.

One project goes through what a DVC user does: ``dvc repro`` runs every stage; a second
``dvc repro`` runs nothing; changing ``train.epochs`` re-runs train, eval and export only;
``dvc metrics show`` reads eval's metrics; ``dvc push`` to a folder remote, a fresh
``git clone``, ``dvc pull`` and ``dvc status`` come back clean with every artifact in place.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from visionops.cli.app import app

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("dvc") is None, reason="needs the dvc dev tool"),
]

STAGES = ("fetch", "preprocess", "train", "eval", "export")
TINY = {
    "device": "cpu",
    "data": {"image_size": 32, "workers": 1, "demo": {"images_per_class": 8, "image_size": 32}},
    "model": {"name": "shufflenet_v2_x0_5"},
    "train": {"epochs": 1, "batch_size": 16},
    "export": {"reference_samples": 16},
}


def _env(home: Path) -> dict[str, str]:
    return {
        **os.environ,
        "DVC_NO_ANALYTICS": "1",
        "DVC_SITE_CACHE_DIR": str(home / "dvc-site-cache"),
        "GIT_AUTHOR_NAME": "visionops tests",
        "GIT_AUTHOR_EMAIL": "tests@visionops.invalid",
        "GIT_COMMITTER_NAME": "visionops tests",
        "GIT_COMMITTER_EMAIL": "tests@visionops.invalid",
        "NO_COLOR": "1",
    }


def run(folder: Path, *command: str, env: dict[str, str]) -> str:
    """Run a command in ``folder``; fail the test with its output if it fails."""
    result = subprocess.run(
        command, cwd=folder, env=env, capture_output=True, text=True, timeout=900
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"{' '.join(command)} failed:\n{output}"
    return output


def ran_stages(output: str) -> set[str]:
    return set(re.findall(r"Running stage '(\w+)'", output))


def _merge(base: dict[str, object], top: dict[str, object]) -> dict[str, object]:
    merged = dict(base)
    for key, value in top.items():
        below = merged.get(key)
        merged[key] = (
            _merge(below, value) if isinstance(value, dict) and isinstance(below, dict) else value
        )
    return merged


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """A git + DVC project from ``visionops init --remote <folder>``, reproduced once."""
    root = tmp_path_factory.mktemp("dvc")
    env = _env(root)
    folder = root / "project"
    folder.mkdir()
    run(folder, "git", "init", "--quiet", env=env)
    previous = Path.cwd()
    os.chdir(folder)
    try:
        result = CliRunner().invoke(
            app, ["init", "--recipe", "demo-shapes", "--remote", str(root / "remote")]
        )
    finally:
        os.chdir(previous)
    assert result.exit_code == 0, result.output
    settings = yaml.safe_load((folder / "visionops.yaml").read_text(encoding="utf-8"))
    (folder / "visionops.yaml").write_text(yaml.safe_dump(_merge(settings, TINY), sort_keys=False))
    output = run(folder, "dvc", "repro", env=env)
    assert ran_stages(output) == set(STAGES), output
    return folder, env


def test_init_tracks_the_keys_each_stage_reads(project: tuple[Path, dict[str, str]]) -> None:
    folder, _ = project
    pipeline = yaml.safe_load((folder / "dvc.yaml").read_text(encoding="utf-8"))["stages"]
    assert list(pipeline) == list(STAGES)
    assert pipeline["train"]["params"] == [{"visionops.yaml": ["model", "train"]}]
    assert "data.image_size" in pipeline["preprocess"]["params"][0]["visionops.yaml"]
    assert pipeline["eval"]["metrics"] == [{"runs/dvc/eval/metrics.json": {"cache": False}}]


def test_second_repro_runs_nothing(project: tuple[Path, dict[str, str]]) -> None:
    folder, env = project
    output = run(folder, "dvc", "repro", env=env)
    assert ran_stages(output) == set(), output
    assert "didn't change" in output


def test_metrics_show_reads_eval(project: tuple[Path, dict[str, str]]) -> None:
    folder, env = project
    output = run(folder, "dvc", "metrics", "show", env=env)
    assert "runs/dvc/eval/metrics.json" in output
    assert "metrics.accuracy" in output


def test_changing_epochs_reruns_train_eval_export_only(
    project: tuple[Path, dict[str, str]],
) -> None:
    folder, env = project
    settings_file = folder / "visionops.yaml"
    settings = yaml.safe_load(settings_file.read_text(encoding="utf-8"))
    settings["train"]["epochs"] = 2
    settings_file.write_text(yaml.safe_dump(settings, sort_keys=False))
    output = run(folder, "dvc", "repro", env=env)
    assert ran_stages(output) == {"train", "eval", "export"}, output
    with (folder / "runs" / "dvc" / "history.csv").open(encoding="utf-8") as handle:
        assert [row["epoch"] for row in csv.DictReader(handle)] == ["1", "2"]


def test_push_clone_pull_is_clean(project: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    folder, env = project
    run(folder, "git", "add", "-A", env=env)
    run(folder, "git", "commit", "--quiet", "-m", "pipeline", env=env)
    run(folder, "dvc", "push", env=env)
    clone = tmp_path / "clone"
    run(tmp_path, "git", "clone", "--quiet", str(folder), str(clone), env=env)
    assert not (clone / "runs" / "dvc" / "bundle").exists()
    run(clone, "dvc", "pull", env=env)
    status = run(clone, "dvc", "status", env=env)
    assert "up to date" in status, status
    for artifact in (
        "data/prepared/shapes/manifest.json",
        "runs/dvc/checkpoints/best.pt",
        "runs/dvc/eval/report.html",
        "runs/dvc/bundle/model.onnx",
    ):
        assert (clone / artifact).is_file(), artifact
    # The pulled run is complete: visionops lists it with its bundle.
    listed = run(clone, "visionops", "runs", "list", "--json", env=env)
    (summary,) = json.loads(listed)
    assert (summary["name"], summary["epochs"], summary["bundle"]) == ("dvc", 2, "fp32")


def test_gcs_remote_is_configured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env = _env(tmp_path)
    run(tmp_path, "git", "init", "--quiet", env=env)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(
        app, ["init", "--recipe", "fer2013", "--remote", "gs://my-bucket/visionops"]
    )
    assert result.exit_code == 0, result.output
    remotes = run(tmp_path, "dvc", "remote", "list", env=env)
    assert re.search(r"store\s+gs://my-bucket/visionops", remotes), remotes
    assert "remote = store" in (tmp_path / ".dvc" / "config").read_text()


def test_remote_outside_git_says_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    result = CliRunner().invoke(app, ["init", "--remote", "gs://b/p"])
    assert result.exit_code != 0
    assert "git init" in str(result.exception)
    assert not (tmp_path / ".dvc").exists()


def test_remote_outside_git_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    result = CliRunner().invoke(app, ["init", "--remote", "gs://b/p"])
    assert getattr(result.exception, "exit_code", None) == 2  # an input error
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_init_in_git_runs_dvc_init_so_repro_can_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in _env(tmp_path).items():
        monkeypatch.setenv(key, value)
    run(tmp_path, "git", "init", "--quiet", env=_env(tmp_path))
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["init", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["dvc_initialised"] is True
    assert (tmp_path / ".dvc").is_dir()
    stages = run(tmp_path, "dvc", "stage", "list", env=_env(tmp_path))
    assert all(stage in stages for stage in STAGES), stages


def test_init_outside_git_writes_the_files_and_says_the_next_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    result = CliRunner().invoke(app, ["init"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "visionops.yaml").is_file()
    assert not (tmp_path / ".dvc").exists()
    assert "git init" in result.output
