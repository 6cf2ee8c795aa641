import json
import os
import pickle
from pathlib import Path

import pytest
import torch

from visionops.errors import ArtifactError
from visionops.runs import (
    latest_run,
    load_checkpoint,
    next_run_name,
    read_run_manifest,
    resolve_run,
    update_latest,
)


def _fake_run(root: Path, name: str) -> Path:
    run = root / name
    run.mkdir(parents=True)
    (run / "run.json").write_text(json.dumps({"kind": "visionops.run", "schema_version": 1}))
    return run


def test_run_names_count_up(tmp_path: Path) -> None:
    assert next_run_name(tmp_path / "missing") == "run-001"
    _fake_run(tmp_path, "run-001")
    _fake_run(tmp_path, "run-007")
    _fake_run(tmp_path, "custom")
    assert next_run_name(tmp_path) == "run-008"


def test_latest_pointer(tmp_path: Path) -> None:
    assert latest_run(tmp_path) is None
    first = _fake_run(tmp_path, "run-001")
    update_latest(tmp_path, first)
    second = _fake_run(tmp_path, "run-002")
    update_latest(tmp_path, second)
    assert latest_run(tmp_path) == second
    assert resolve_run(None, tmp_path) == second
    assert resolve_run("run-001", tmp_path) == first


def test_no_runs_names_the_command(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="visionops train"):
        resolve_run(None, tmp_path)
    with pytest.raises(ArtifactError, match="not a visionops run folder"):
        resolve_run("nothing-here", tmp_path)


def test_foreign_manifest(tmp_path: Path) -> None:
    (tmp_path / "run.json").write_text('{"kind": "something-else"}')
    with pytest.raises(ArtifactError, match=r"manifest, not .visionops.run."):
        read_run_manifest(tmp_path)


def test_checkpoint_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "ok.pt"
    torch.save({"format": "visionops.checkpoint", "model": {"w": torch.ones(2)}}, path)
    assert torch.equal(load_checkpoint(path)["model"]["w"], torch.ones(2))


class _Exploit:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, ("echo pwned > /tmp/visionops-pwned",))


def test_pickled_objects_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    torch.save(
        {"format": "visionops.checkpoint", "payload": _Exploit()}, path, pickle_module=pickle
    )
    with pytest.raises(ArtifactError, match="safe load refuses"):
        load_checkpoint(path)
    assert not Path("/tmp/visionops-pwned").exists()


def test_corrupt_and_foreign_checkpoints(tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(os.urandom(2048))
    with pytest.raises(ArtifactError, match=r"corrupt or truncated|safe load refuses"):
        load_checkpoint(corrupt)
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(ArtifactError, match="not a visionops checkpoint"):
        load_checkpoint(foreign)
    with pytest.raises(ArtifactError, match="no checkpoint"):
        load_checkpoint(tmp_path / "missing.pt")
