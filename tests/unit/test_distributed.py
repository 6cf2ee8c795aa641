"""Process-group helpers and the data-parallel launch's argument forwarding and errors."""

from __future__ import annotations

import json
import re
import threading
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from tests.s3_helpers import free_port as _free_port

from visionops.distributed import (
    NODE_RANK_ENV,
    DistContext,
    adopt_launcher_environment,
    broadcast_flag,
    check_same_device,
    in_torchrun,
    init_distributed,
)
from visionops.errors import ConfigError, DataError, VisionOpsError
from visionops.train.elastic import LaunchPlan, make_plan, plan_from_environment
from visionops.train.launch import (
    ERROR_DIR_ENV,
    TrainRequest,
    _recorded_error,
    forwarded_args,
    record_worker_error,
)


def test_a_single_process_is_rank_zero_of_one() -> None:
    context = DistContext()
    assert (context.rank, context.world_size, context.is_main, context.enabled) == (
        0,
        1,
        True,
        False,
    )
    assert DistContext(rank=1, world_size=2).is_main is False
    assert DistContext(rank=0, world_size=2).enabled is True


def test_outside_torchrun_nothing_is_joined(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("LOCAL_RANK", "WORLD_SIZE", "RANK"):
        monkeypatch.delenv(name, raising=False)
    assert not in_torchrun()
    assert init_distributed(torch.device("cpu")) == DistContext()
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert in_torchrun()
    assert init_distributed(torch.device("cpu")) == DistContext()  # one process: no group


def test_a_flag_needs_no_broadcast_in_one_process() -> None:
    assert broadcast_flag(True, DistContext(), torch.device("cpu")) is True
    assert broadcast_flag(False, DistContext(), torch.device("cpu")) is False


def test_every_setting_reaches_the_workers_as_written() -> None:
    request = TrainRequest(
        dataset="data/prepared/shapes",
        overrides=["train.lr=0.01"],
        flags={"train.epochs": 3, "model.name": None, "device": "cpu"},
        config_file=Path("my.yaml"),
        recipe="shapes",
        name="ddp",
        exist_ok=True,
        resume=None,
        reprepare=True,
        nproc_per_node=2,
        verbose=1,
        quiet=False,
    )
    assert forwarded_args(request) == [
        "data/prepared/shapes",
        "train.lr=0.01",
        "train.epochs=3",
        "device=cpu",
        "--config",
        "my.yaml",
        "--recipe",
        "shapes",
        "--name",
        "ddp",
        "--exist-ok",
        "--reprepare",
        "-v",
    ]
    assert "--nproc-per-node" not in forwarded_args(request)


def _plan(**given: object) -> LaunchPlan | None:
    flags: dict[str, object] = {
        "nnodes": None,
        "node_rank": None,
        "endpoint": None,
        "nproc_per_node": None,
        "run_id": None,
        "max_restarts": None,
        "rdzv_timeout": None,
    }
    return make_plan(**{**flags, **given})  # type: ignore[arg-type]


def test_one_process_is_not_a_launch_and_several_restart_three_times() -> None:
    assert _plan() is None
    assert _plan(nproc_per_node=1) is None
    local = _plan(nproc_per_node=2)
    assert local is not None and local.max_restarts == 3 and local.max_nodes == 1
    nodes = _plan(nnodes="2", node_rank=1, endpoint="10.0.0.1:29500", max_restarts=0)
    assert nodes is not None
    assert (nodes.min_nodes, nodes.max_nodes, nodes.node_rank) == (2, 2, 1)
    assert (nodes.run_id, nodes.max_restarts, nodes.rdzv_timeout) == ("visionops", 0, 900)
    elastic = _plan(nnodes="1:4", endpoint="head:29500")
    assert elastic is not None and (elastic.min_nodes, elastic.max_nodes) == (1, 4)
    assert elastic.node_rank is None


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"nnodes": "2", "node_rank": 2, "endpoint": "h:1"}, "--node-rank 2 is outside 0..1"),
        ({"nnodes": "2", "node_rank": -1, "endpoint": "h:1"}, "--node-rank -1 is outside 0..1"),
        ({"nnodes": "2", "node_rank": 0}, "--nnodes 2 needs --rdzv-endpoint HOST:PORT"),
        ({"nnodes": "2", "endpoint": "h:1"}, "--nnodes 2 needs --node-rank 0..1"),
        ({"nnodes": "two"}, "--nnodes 'two': use a node count N or MIN:MAX"),
        ({"nnodes": "3:2"}, "--nnodes 3:2: needs 1 <= MIN <= MAX"),
        ({"nnodes": "2", "node_rank": 0, "endpoint": "h"}, "--rdzv-endpoint 'h': use HOST:PORT"),
        ({"nnodes": "1:2", "node_rank": 0, "endpoint": "h:1"}, "--node-rank with elastic"),
        ({"node_rank": 1}, "--node-rank needs --nnodes"),
        ({"nproc_per_node": 2, "max_restarts": -1}, "--max-restarts -1: use 0 or more"),
    ],
)
def test_flags_that_do_not_fit_name_the_flag(given: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        _plan(**given)


def test_vertex_and_kubeflow_variables_make_a_node_plan() -> None:
    env = {"MASTER_ADDR": "job-0", "MASTER_PORT": "23456", "WORLD_SIZE": "2", "RANK": "1"}
    plan = plan_from_environment(env, nproc_per_node=None, max_restarts=None, rdzv_timeout=None)
    assert plan is not None
    assert (plan.max_nodes, plan.node_rank, plan.endpoint) == (2, 1, "job-0:23456")
    assert plan.max_restarts == 3
    one = {**env, "WORLD_SIZE": "1", "RANK": "0"}
    assert (
        plan_from_environment(one, nproc_per_node=None, max_restarts=None, rdzv_timeout=None)
        is None
    )
    worker = {**env, "LOCAL_RANK": "0"}  # torchrun's worker: joins directly, no new launch
    assert (
        plan_from_environment(worker, nproc_per_node=None, max_restarts=None, rdzv_timeout=None)
        is None
    )
    assert (
        plan_from_environment({}, nproc_per_node=None, max_restarts=None, rdzv_timeout=None) is None
    )


def test_a_partial_launcher_environment_is_one_line() -> None:
    with pytest.raises(ConfigError, match="set RANK but not MASTER_ADDR, MASTER_PORT, WORLD_SIZE"):
        plan_from_environment(
            {"RANK": "1"}, nproc_per_node=None, max_restarts=None, rdzv_timeout=None
        )
    bad = {"MASTER_ADDR": "h", "MASTER_PORT": "1", "WORLD_SIZE": "2", "RANK": "5"}
    with pytest.raises(ConfigError, match=re.escape("RANK=5 is outside 0..1")):
        plan_from_environment(bad, nproc_per_node=None, max_restarts=None, rdzv_timeout=None)


def test_node_rank_orders_the_global_ranks_and_srun_tasks_become_workers() -> None:
    env = {NODE_RANK_ENV: "1", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2", "RANK": "0"}
    adopt_launcher_environment(env)
    assert env["RANK"] == "3"  # node 1's second process, whatever order the rendezvous chose
    slurm = {
        "SLURM_PROCID": "5",
        "SLURM_NTASKS": "8",
        "SLURM_LOCALID": "1",
        "MASTER_ADDR": "node-a",
        "MASTER_PORT": "29500",
    }
    adopt_launcher_environment(slurm)
    assert (slurm["RANK"], slurm["WORLD_SIZE"], slurm["LOCAL_RANK"]) == ("5", "8", "1")
    launcher = {key: value for key, value in slurm.items() if key.startswith(("SLURM", "MAS"))}
    adopt_launcher_environment(launcher, slurm=False)  # srun started a node, with --nnodes
    assert "RANK" not in launcher
    alone = {"SLURM_PROCID": "0", "SLURM_NTASKS": "1"}
    adopt_launcher_environment(alone)
    assert "RANK" not in alone  # `srun visionops train` on one task: a normal run


def test_bad_launch_flags_and_partial_environments_write_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from visionops.cli.app import app

    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    bad_rank = runner.invoke(
        app, ["train", "--nnodes", "2", "--node-rank", "2", "--rdzv-endpoint", "127.0.0.1:1"]
    )
    assert isinstance(bad_rank.exception, ConfigError)
    assert bad_rank.exception.exit_code == 2
    assert "--node-rank 2 is outside 0..1" in str(bad_rank.exception)
    for name in ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("RANK", "1")
    partial = runner.invoke(app, ["train"])
    assert isinstance(partial.exception, ConfigError)
    assert "set RANK but not" in str(partial.exception)
    assert list(tmp_path.iterdir()) == []


def test_a_worker_error_comes_back_whole_with_its_exit_code(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ERROR_DIR_ENV, str(tmp_path))
    monkeypatch.setenv("RANK", "1")
    record_worker_error(DataError("rank one's problem — fix it"))
    monkeypatch.setenv("RANK", "0")
    record_worker_error(ConfigError("rank zero's problem — fix it"))

    error = _recorded_error(tmp_path)
    assert isinstance(error, ConfigError)  # rank 0's, first
    assert error.message == "rank zero's problem — fix it"
    assert error.exit_code == 2
    (tmp_path / "rank00000.json").unlink()
    assert isinstance(_recorded_error(tmp_path), DataError)


def test_an_unknown_error_type_is_still_a_visionops_error(tmp_path: Path) -> None:
    (tmp_path / "rank00000.json").write_text(
        json.dumps({"type": "Path", "message": "odd", "code": 3})
    )
    error = _recorded_error(tmp_path)
    assert type(error) is VisionOpsError
    assert error is not None and error.exit_code == 3


def _state_device(port: int, rank: int, device_type: str, errors: dict[int, str]) -> None:
    store = dist.TCPStore("127.0.0.1", port, 2, is_master=rank == 0, timeout=timedelta(seconds=30))
    try:
        check_same_device(store, DistContext(rank=rank, world_size=2), device_type)
    except ConfigError as error:
        errors[rank] = str(error)


def test_cuda_on_one_node_and_the_cpu_on_another_is_refused_on_both() -> None:
    port = _free_port()
    errors: dict[int, str] = {}
    threads = [
        threading.Thread(target=_state_device, args=(port, rank, kind, errors))
        for rank, kind in enumerate(("cuda", "cpu"))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(errors) == [0, 1]
    for message in errors.values():
        assert "rank 0" in message and "trains on CUDA" in message and "--device cpu" in message
        assert "\n" not in message


def test_the_same_device_everywhere_passes() -> None:
    port = _free_port()
    errors: dict[int, str] = {}
    threads = [
        threading.Thread(target=_state_device, args=(port, rank, "cpu", errors))
        for rank in range(2)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == {}
