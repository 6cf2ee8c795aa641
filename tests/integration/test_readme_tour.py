"""The README's tour runs as written on a CPU machine, each line a real `visionops` process.

Two changes keep it small and safe on a shared machine, and nothing else: `--epochs 20`
becomes `--epochs 1`, and the server's port 8000 becomes a free one. A `visionops.yaml` in the
folder shrinks the demo (the same file a user would write); every flag is the README's.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from s3_helpers import free_port
from serve_helpers import wait_ready

README = Path(__file__).resolve().parents[2] / "README.md"
SMALL = """\
data:
  image_size: 32
  demo: {images_per_class: 12, image_size: 32}
model: {name: mobilenet_v3_small}
train: {batch_size: 16}
"""


def _tour() -> list[list[str]]:
    text = README.read_text(encoding="utf-8")
    section = text[text.index("-line tour") :]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block is not None
    lines = [line.split(" #")[0].strip() for line in block.group(1).splitlines()]
    return [shlex.split(line) for line in lines if line]


@pytest.mark.slow
def test_the_readme_tour_runs_as_written_on_a_cpu(tmp_path: Path) -> None:
    (tmp_path / "visionops.yaml").write_text(SMALL, encoding="utf-8")
    env = {**os.environ, "NO_COLOR": "1", "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    tour = _tour()
    words = " ".join(" ".join(line) for line in tour)
    heading = README.read_text(encoding="utf-8").split("-line tour")[0].rsplit("## ", 1)[1]
    counts = {"five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9}
    assert counts[heading.strip().removeprefix("A ").removeprefix("An ")] == len(tour)
    assert "--device cuda" not in words  # a CPU machine runs the tour as written
    *batch, serve = tour
    for line in batch:
        command = line[1:]
        if "--epochs" in command:
            command[command.index("--epochs") + 1] = "1"
        done = subprocess.run(
            [sys.executable, "-m", "visionops", *command],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, f"{' '.join(line)}:\n{done.stdout}\n{done.stderr}"
    assert (tmp_path / "runs" / "latest" / "eval" / "report.html").is_file()
    assert (tmp_path / "scores.csv").read_text().count("\n") > 1

    assert serve[:2] == ["visionops", "serve"] and "8000" in serve
    port = free_port()
    command = [str(port) if word == "8000" else word for word in serve[1:]]
    process = subprocess.Popen(
        [sys.executable, "-m", "visionops", *command],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_ready(
            lambda path: httpx.get(f"http://127.0.0.1:{port}{path}", timeout=1.0),
            alive=lambda: process.poll() is None,
        )
    finally:
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=60)
    assert process.returncode in (0, 130), output
