"""Checkpoints written off the training thread: whole, of the moment asked, errors surfaced."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from visionops.train.checkpoints import CheckpointWriter


def _load(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)


def test_the_checkpoint_holds_the_state_when_submitted_not_when_written(tmp_path: Path) -> None:
    weights = torch.zeros(1000)
    optimizer_state = {"state": {0: {"exp_avg": torch.ones(3)}}, "param_groups": [{"lr": 0.1}]}
    files = CheckpointWriter(tmp_path)
    files.submit({"model": weights, "optimizer": optimizer_state, "epoch": 1}, best=False)
    # Training goes on while the file is written: in-place updates must not leak into it.
    weights.add_(5)
    optimizer_state["state"][0]["exp_avg"].mul_(3)
    files.wait()
    saved = _load(tmp_path / "last.pt")
    assert saved["epoch"] == 1
    assert torch.equal(saved["model"], torch.zeros(1000))
    assert torch.equal(saved["optimizer"]["state"][0]["exp_avg"], torch.ones(3))
    assert not (tmp_path / "best.pt").exists()


def test_best_follows_improvements_only(tmp_path: Path) -> None:
    files = CheckpointWriter(tmp_path)
    files.submit({"epoch": 1}, best=True)
    files.submit({"epoch": 2}, best=False)
    files.wait()
    assert _load(tmp_path / "last.pt")["epoch"] == 2
    assert _load(tmp_path / "best.pt")["epoch"] == 1
    files.submit({"epoch": 3}, best=True, wait=True)
    assert os.path.samefile(tmp_path / "best.pt", tmp_path / "last.pt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt", "last.pt"]


def test_a_failed_write_is_raised_in_the_training_thread_and_leaves_nothing(
    tmp_path: Path,
) -> None:
    blocker = tmp_path / "checkpoints"
    blocker.write_text("a file where the folder should be")
    files = CheckpointWriter(blocker)
    files.submit({"epoch": 1}, best=False)
    with pytest.raises(FileExistsError, match="checkpoints"):
        files.wait()
    files.wait()  # reported once
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoints"]
