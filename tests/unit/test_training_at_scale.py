"""The "Training at scale" page's example files parse, use real flags, and say what it says."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from visionops.cli.app import app

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "training-at-scale"
PAGE = ROOT / "docs" / "training-at-scale.md"


def _train_flags() -> set[str]:
    result = CliRunner().invoke(app, ["train", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    return set(re.findall(r"--[a-z][a-z-]+", result.output))


def _flags(args: list[str]) -> set[str]:
    return {arg for arg in args if arg.startswith("--")}


def test_the_page_is_in_the_nav_and_names_every_example() -> None:
    assert "training-at-scale.md" in (ROOT / "mkdocs.yml").read_text()
    page = PAGE.read_text()
    for example in EXAMPLES.iterdir():
        assert f"examples/training-at-scale/{example.name}" in page


def test_train_help_shows_the_multinode_flags() -> None:
    flags = _train_flags()
    for flag in ("--nnodes", "--node-rank", "--rdzv-endpoint", "--rdzv-id", "--max-restarts"):
        assert flag in flags
    assert "--rdzv-timeout" in flags


def test_vertex_ai_job_has_two_nodes_of_the_train_image() -> None:
    job: dict[str, Any] = yaml.safe_load((EXAMPLES / "vertex-ai-job.yaml").read_text())
    pools = job["workerPoolSpecs"]
    assert sum(pool["replicaCount"] for pool in pools) == 2
    assert pools[0]["replicaCount"] == 1  # pool 0 is node 0, the one that writes the run
    flags = _train_flags()
    for pool in pools:
        container = pool["containerSpec"]
        assert container["imageUri"].endswith("visionops-train:latest")
        assert _flags(container["args"]) <= flags
        assert pool["machineSpec"]["machineType"]
    assert pools[0]["containerSpec"]["args"] == pools[1]["containerSpec"]["args"]


def test_pytorchjob_has_a_master_and_a_worker_of_the_train_image() -> None:
    job: dict[str, Any] = yaml.safe_load((EXAMPLES / "pytorchjob.yaml").read_text())
    assert (job["apiVersion"], job["kind"]) == ("kubeflow.org/v1", "PyTorchJob")
    replicas = job["spec"]["pytorchReplicaSpecs"]
    assert replicas["Master"]["replicas"] + replicas["Worker"]["replicas"] == 2
    flags = _train_flags()
    for role in ("Master", "Worker"):
        (container,) = replicas[role]["template"]["spec"]["containers"]
        assert container["name"] == "pytorch"  # the name the training operator looks for
        assert container["image"].endswith("visionops-train:latest")
        assert _flags(container["args"]) <= flags


@pytest.mark.parametrize(
    "script", [EXAMPLES / "slurm-train.sbatch", ROOT / "docker" / "train-entrypoint.sh"]
)
def test_shell_scripts_parse(script: Path) -> None:
    bash = shutil.which("bash")
    assert bash is not None
    result = subprocess.run([bash, "-n", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_slurm_script_runs_one_node_per_task_at_a_rendezvous() -> None:
    text = (EXAMPLES / "slurm-train.sbatch").read_text()
    assert "#SBATCH --nodes=2" in text and "#SBATCH --ntasks-per-node=1" in text
    command = text[text.index("srun") :]
    assert _flags(re.findall(r"--[a-z-]+", command.split("visionops train", 1)[1])) <= (
        _train_flags()
    )
    assert '--node-rank "$SLURM_NODEID"' in command
    assert '--rdzv-endpoint "$HEAD_NODE:$RDZV_PORT"' in command


def test_the_train_image_pulls_data_then_trains() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "AS train" in dockerfile and "-c /tmp/requirements.lock" in dockerfile
    assert re.search(r"FROM \S+ AS serve\s", dockerfile)  # serving stays the default target
    assert dockerfile.rindex("AS serve") > dockerfile.index("AS train")
    entrypoint = (ROOT / "docker" / "train-entrypoint.sh").read_text()
    assert entrypoint.index("dvc pull") < entrypoint.index('exec visionops train "$@"')
