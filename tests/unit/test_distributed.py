"""Process-group helpers and the data-parallel launch's argument forwarding and errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from visionops.distributed import DistContext, broadcast_flag, in_torchrun, init_distributed
from visionops.errors import ConfigError, DataError, VisionOpsError
from visionops.train.launch import (
    ERROR_DIR_ENV,
    TrainRequest,
    _launch,
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


def test_one_process_is_not_a_launch() -> None:
    with pytest.raises(ConfigError, match="use 2 or more"):
        _launch(1, [])


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
