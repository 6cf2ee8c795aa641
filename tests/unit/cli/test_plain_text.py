"""User and data text keeps its brackets on every path rich renders: help, errors, tables, logs."""

from __future__ import annotations

from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from cli_helpers import run_main as _main
from visionops.cli._common import setup
from visionops.cli._text import DataTable, safe
from visionops.cli.app import app


def test_help_keeps_brackets() -> None:
    result = CliRunner().invoke(app, ["init", "--help"], env={"COLUMNS": "120"})
    assert result.exit_code == 0
    assert "dvc[gs]" in result.output


def test_an_error_keeps_the_brackets_of_a_path(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLUMNS", "200")
    code, _, err = _main(monkeypatch, capsys, "data", "preprocess", "weird[red]dir/x")
    assert code == 2
    assert "weird[red]dir/x" in err


def test_recipes_show_keeps_a_list_value() -> None:
    result = CliRunner().invoke(app, ["recipes", "show", "mvtec"], env={"COLUMNS": "120"})
    assert result.exit_code == 0, result.output
    assert "[layer2, layer3]" in result.output


def test_table_cells_and_titles_are_plain_text() -> None:
    table = DataTable(title="runs in weird[red]dir")
    table.add_column("image")
    table.add_row("weird[red]dir/x.jpg")
    console = Console(width=80, record=True)
    console.print(table)
    text = console.export_text()
    assert "runs in weird[red]dir" in text
    assert "weird[red]dir/x.jpg" in text


def test_log_lines_keep_brackets(capsys: pytest.CaptureFixture[str]) -> None:
    setup(0, False)
    from loguru import logger

    logger.warning("skipped weird[red]dir/x.jpg")
    assert "weird[red]dir/x.jpg" in capsys.readouterr().err


def test_safe_escapes_markup() -> None:
    console = Console(width=80, record=True)
    console.print(f"[bold]{safe('[red]x[/red]')}[/]")
    assert "[red]x[/red]" in console.export_text()
