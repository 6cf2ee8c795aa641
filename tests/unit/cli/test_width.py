"""Help and tables fit the terminal: no cut value, no ``<bool>``, at 80 and at 120 columns."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from visionops.cli.app import app

from .conventions import help_problems, walk

_COMMANDS = [path.split()[1:] for path, _ in walk(typer.main.get_command(app), "visionops")]


def _run(args: list[str], width: int) -> str:
    result = CliRunner().invoke(app, args, env={"COLUMNS": str(width)})
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.parametrize("width", [80, 120])
def test_every_help_fits_and_shows_no_value_on_a_flag(width: int) -> None:
    for command in _COMMANDS:
        text = _run([*command, "--help"], width)
        assert help_problems(text) == [], (command, text)
        lines = text.splitlines()
        too_long = [line for line in lines if len(line.rstrip()) > width]
        assert too_long == [], (command, too_long)
        for index, line in enumerate(lines):
            if line.strip() == "Example:":  # the example below it is indented as code
                assert lines[index + 1].startswith("     visionops "), (command, lines[index + 1])


@pytest.mark.parametrize("width", [80, 120])
def test_train_help_leaves_room_for_descriptions(width: int) -> None:
    text = _run(["train", "--help"], width)
    line = next(line for line in text.splitlines() if "--reprepare" in line)
    # The description starts within the first 40 columns, whatever the width.
    assert line.index("Prepare the dataset") < 40, line


@pytest.mark.parametrize("width", [80, 120])
def test_runs_list_never_cuts_a_value(handmade_runs: Path, width: int) -> None:
    text = _run(["runs", "list", "--runs-root", str(handmade_runs / "runs")], width)
    assert "…" not in text
    for name in ("colours-run", "tags-run", "dishes-run"):
        assert name in text
    assert "data/prepared/colours" in text or "colours" in text


@pytest.mark.parametrize("width", [80, 120])
def test_models_keeps_each_value_on_one_line(width: int) -> None:
    text = _run(["models"], width)
    assert "…" not in text
    assert "resnet18" in text
    if width >= 120:
        assert "IMAGENET1K_V1" in text  # whole, not one letter a line
    else:
        assert "not shown at this width: --pretrained weights" in text


@pytest.mark.parametrize("width", [80, 120])
def test_recipes_show_mvtec_fits(width: int) -> None:
    text = _run(["recipes", "show", "mvtec"], width)
    assert "…" not in text
    assert "kaggle:ipythonx/mvtec-ad" in text  # a data source is never cut
    assert "[block8, block11]" in text
