"""``--help`` wraps each paragraph at the terminal's width, never at the docstring's breaks."""

from __future__ import annotations

import itertools

import pytest
from typer.testing import CliRunner

from visionops.cli._help import reflow
from visionops.cli.app import app


def _description(width: int) -> list[str]:
    result = CliRunner().invoke(app, ["train", "--help"], env={"COLUMNS": str(width)})
    assert result.exit_code == 0, result.output
    lines = [line.rstrip() for line in result.output.splitlines()]
    start = next(i for i, line in enumerate(lines) if "With no DATASET" in line)
    end = next(i for i in range(start, len(lines)) if not lines[i].strip())
    return lines[start:end]


@pytest.mark.parametrize("width", [80, 120])
def test_train_help_paragraph_fills_each_line(width: int) -> None:
    paragraph = _description(width)
    assert len(paragraph) >= 2
    for line, following in itertools.pairwise(paragraph):
        next_word = following.split()[0]
        # A line that stops early although the next word would have fitted is a hard break.
        assert len(line) + 1 + len(next_word) > width - 2, (line, following)


def test_reflow_keeps_examples_and_lists_on_their_lines() -> None:
    text = "Joined\ntext here.\n\n  visionops a\n  visionops b\n\n- one\n- two"
    assert reflow(text) == "Joined text here.\n\n  visionops a\n  visionops b\n\n- one\n- two"
