"""``scripts/real-data``: a tampered file is one line, and a failed step leaves nothing behind."""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "real_data.py"


@pytest.fixture(scope="module")
def real_data() -> ModuleType:
    spec = importlib.util.spec_from_file_location("real_data_script", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_a_file_with_another_hash_is_one_line_saying_what_to_do(
    real_data: ModuleType, tmp_path: Path
) -> None:
    file = tmp_path / "weights.pth"
    file.write_bytes(b"tampered")
    expected = hashlib.sha256(b"original").hexdigest()
    with pytest.raises(real_data.Failure) as info:
        real_data.check_sha(file, expected)
    message = str(info.value)
    assert "\n" not in message and "delete it and rerun scripts/real-data" in message
    with pytest.raises(real_data.Failure, match="is missing — rerun scripts/real-data"):
        real_data.check_sha(tmp_path / "absent.pth", expected)


def test_a_failed_step_leaves_no_folder_and_a_finished_one_is_not_redone(
    real_data: ModuleType, tmp_path: Path
) -> None:
    def broken(out: Path) -> None:
        (out / "half.png").write_bytes(b"x")
        raise real_data.Failure("the source is damaged")

    with pytest.raises(real_data.Failure):
        real_data.step(tmp_path, "part", lambda: broken)
    assert list(tmp_path.iterdir()) == []  # neither the step's folder nor its temporary one

    def fine(out: Path) -> None:
        (out / "image.png").write_bytes(b"png")

    real_data.step(tmp_path, "part", lambda: fine)
    assert (tmp_path / "part" / "image.png").is_file()

    def must_not_run() -> None:
        raise AssertionError("a finished step fetched its sources again")

    real_data.step(tmp_path, "part", must_not_run)  # cached: offline once filled
