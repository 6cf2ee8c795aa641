"""Help and tables keep the docs' rules at 80 and at 120 columns.

Every command's ``--help`` and every command that prints a table is rendered at the width
under test and at 1,000 columns; :func:`width_problems` fails on a word of the narrow output
that is no word of the wide one (split inside), a value cut with ``…``, an example command
that does not read the same once its ``\\`` continuations are joined, and a line wider than
the terminal.
"""

from __future__ import annotations

import io
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import typer
from PIL import Image
from rich.console import Console
from typer.testing import CliRunner

from visionops.cli._common import FittingProgress
from visionops.cli._help import example_lines
from visionops.cli._text import DataTable
from visionops.cli.app import app
from visionops.config import available_recipes
from visionops.train.loop import LINE_WIDTH, epoch_line

from .conventions import help_problems, walk, width_problems

_COMMANDS = [path.split()[1:] for path, _ in walk(typer.main.get_command(app), "visionops")]
WIDTHS = [80, 120]
WIDE = 1000
_NUMBER = re.compile(r"\b[0-9a-f]{7,}\b|\d+(\.\d+)?(e[-+]?\d+)?")
"""Times, rates and hashes change between two runs of a command: masked before comparing."""


def _run(args: list[str], width: int, code: int = 0) -> str:
    result = CliRunner().invoke(app, args, env={"COLUMNS": str(width)})
    assert result.exit_code == code, result.output
    return result.output


def _problems(args: list[str], width: int) -> list[str]:
    """The width problems of ``visionops ARGS`` at ``width``; numbers (times) are masked."""
    narrow, wide = _run(args, width), _run(args, WIDE)
    return width_problems(_NUMBER.sub("0", narrow), _NUMBER.sub("0", wide), width)


@pytest.mark.parametrize("width", WIDTHS)
def test_every_help_keeps_words_examples_and_width(width: int) -> None:
    for command in _COMMANDS:
        args = [*command, "--help"]
        assert help_problems(_run(args, width)) == [], command
        assert _problems(args, width) == [], command


@pytest.mark.parametrize("width", WIDTHS)
def test_table_commands_keep_words_and_width(handmade_runs: Path, width: int) -> None:
    commands = [
        ["runs", "list", "--runs-root", str(handmade_runs / "runs")],
        ["models"],
        ["models", "resnet*"],
        ["models", "--all", "--family", "torchvision"],
        ["recipes", "list"],
        *(["recipes", "show", name] for name in available_recipes()),
        ["data", "info", str(handmade_runs / "data" / "prepared" / "colours")],
        ["config", "show"],
    ]
    for args in commands:
        assert _problems(args, width) == [], args


@pytest.fixture(scope="module")
def colours(classification_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private copy of the hand-made project, colours-run exported, 12 images to predict."""
    root = tmp_path_factory.mktemp("width") / "p"
    shutil.copytree(classification_bundle.parents[2], root, symlinks=True)
    rng = np.random.default_rng(0)
    for index, colour in enumerate([(220, 30, 30), (30, 200, 30), (30, 30, 220)] * 4):
        pixels = np.clip(np.array(colour) + rng.normal(0, 8, (32, 32, 3)), 0, 255)
        (root / "images").mkdir(exist_ok=True)
        Image.fromarray(pixels.astype(np.uint8)).save(root / "images" / f"{index}.png")
    return root


@pytest.mark.parametrize("width", WIDTHS)
def test_stage_tables_keep_words_and_width(
    colours: Path, width: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(colours)
    commands = [
        ["export", "colours-run", "--force"],
        ["eval", "colours-run"],
        ["predict", "colours-run", "images"],
        ["drift", "report", "colours-run", "--current", "images", "drift.min_samples=5"],
    ]
    for args in commands:
        assert _problems(args, width) == [], args


@pytest.mark.parametrize("width", WIDTHS)
def test_the_issues_offenders_now_keep_their_words(handmade_runs: Path, width: int) -> None:
    # Each value the issue saw split or dropped at 80 columns shows whole on one line.
    runs = _run(["runs", "list", "--runs-root", str(handmade_runs / "runs")], width)
    assert "classification" in runs and "created" in runs
    assert "ResNet101_Weights.IMAGENET1K_V2" in _run(["models", "resnet*"], width)
    assert "anomaly.coreset_ratio" in _run(["recipes", "show", "demo-anomaly"], width)
    train = _run(["train", "--help"], width)
    assert "classification|" in train and "regression" in train and "|anomaly>" in train


def test_the_checker_fails_each_broken_rule() -> None:
    wide = " Example:\n     visionops train --epochs 20 --resume run-001\n│ classification │\n"
    narrow = (
        " Example:\n     visionops train --epochs 20\n     --resume run-001\n"
        "│ classifica │\n│ tion       │\n│ ResNet…    │\n" + "x" * 81 + "\n"
    )
    found = "\n".join(width_problems(narrow, wide, 80))
    assert "a value is cut (…)" in found
    assert "words broken inside: [" in found and "'classifica'" in found
    assert "an example is split" in found
    assert "1 lines wider than 80" in found
    continued = " Example:\n     visionops train --epochs 20 \\\n       --resume run-001\n"
    assert width_problems(continued + "│ classification │\n", wide, 80) == []


def test_an_example_breaks_only_between_options_and_pastes_back_whole() -> None:
    command = "visionops predict s3://archive/2026-11/ --out s3://archive/scores.parquet --resume"
    lines = example_lines(command, 60)
    assert len(lines) > 1 and all(len(line) <= 60 for line in lines)
    assert all(line.endswith(" \\") for line in lines[:-1])
    assert " ".join(line.removesuffix(" \\").strip() for line in lines) == command
    assert lines[1].lstrip().startswith("--out s3://")  # an option keeps its value


def test_epoch_lines_fit_80_columns() -> None:
    scores = "epoch 100/100  train loss 123.4567  val loss 234.5678  accuracy 0.4896  (best)"
    line = epoch_line(scores, seconds=1234.5, images_per_s=12345.0)
    assert len(line) <= LINE_WIDTH and line.startswith(scores)
    short = epoch_line("epoch 1/2  train loss 1.8147", seconds=2.1, images_per_s=218.0)
    assert short.endswith("2.1 s  218 img/s")


def _render(table: DataTable, width: int) -> str:
    console = Console(width=width, file=io.StringIO(), color_system=None)
    console.print(table)
    return console.file.getvalue()  # type: ignore[attr-defined]


def test_tables_have_one_box_style() -> None:
    headed, plain = DataTable(title="headed"), DataTable(show_header=False)
    for table in (headed, plain):
        table.add_column("what")
        table.add_column("value")
        table.add_row("task", "classification")
    for text in (_render(headed, 80), _render(plain, 80)):
        assert text.lstrip().splitlines()[-1].startswith("╰") and "╭" in text
        assert not {"┏", "┌", "└"} & set(text)


def test_a_column_is_never_narrower_than_its_longest_word() -> None:
    table = DataTable()
    for header in ("name", "task", "what it does"):
        table.add_column(header)
    table.add_row("run-001", "classification", "a long description " * 4)
    text = _render(table, 50)
    assert "classification" in text and "run-001" in text
    assert all(len(line) <= 50 for line in text.splitlines())


def test_a_value_too_wide_side_by_side_stacks_the_row() -> None:
    source = "kaggle:kritikseth/fruit-and-vegetable-image-recognition"
    table = DataTable(title="recipe")
    for header in ("setting", "value", "default"):
        table.add_column(header)
    table.add_row("data.source", source, "demo:shapes")
    text = _render(table, 70)
    assert source in text and "demo:shapes" in text  # whole, one row as a block
    assert any(line.startswith("│ value") for line in text.splitlines())


@pytest.mark.parametrize("width", [60, *WIDTHS])
def test_progress_bars_drop_columns_instead_of_cutting_them(width: int) -> None:
    console = Console(width=width, file=io.StringIO(), color_system=None)
    bars = FittingProgress(console=console, disable=False)
    task = bars.add_task("generating demo:shapes", total=2048, info="loss=1.815  img_s=166.8")
    bars.update(task, completed=1024)
    console.print(bars.get_renderable())
    text = console.file.getvalue()  # type: ignore[attr-defined]
    assert "1024/2048" in text and "generating demo:shapes" in text
    assert "…" not in text and all(len(line.rstrip()) <= width for line in text.splitlines())
    if width >= 120:
        assert "loss=1.815  img_s=166.8" in text
