"""Every command follows docs/reference/conventions.md; a command that does not fails here."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import pytest
import typer
from typer.testing import CliRunner

from visionops.cli._common import ConfigFile, JsonOutput, Quiet, Verbose
from visionops.cli.app import app

from .conventions import OUTPUT_POLICY, output_violations, violations


def test_every_command_follows_the_conventions() -> None:
    assert violations(app) == []


def test_every_writing_command_follows_the_output_safety_rule() -> None:
    assert output_violations(app) == []
    # Every class named in the docs' table is the one the checker holds the command to.
    text = (Path(__file__).parents[3] / "docs" / "reference" / "conventions.md").read_text()
    section = text.split("\n## Outputs\n")[1].split("\n## ")[0]
    rows = {line.split("|")[1].strip(): line for line in section.splitlines() if line[:2] == "| "}
    for path, kind in OUTPUT_POLICY.items():
        command = path.removeprefix("visionops ")
        assert f"`{command}`" in rows[kind].split("|")[3], (command, kind)


def test_the_output_checker_fails_a_command_that_breaks_the_rule() -> None:
    policy = {"bad export": "refuses", "bad serve": "rebuilds"}
    bad = typer.Typer()

    @bad.command("export")
    def export(
        out: Annotated[Path | None, typer.Option("--out", help="File (default: none).")] = None,
    ) -> None:
        """Writes --out without --force."""

    @bad.command("serve")
    def serve(
        out: Annotated[Path | None, typer.Option("--out-dir", help="Dir (default: none).")] = None,
    ) -> None:
        """Writes --out-dir in place."""

    @bad.command("other")
    def other() -> None:
        """Not classified."""

    found = "\n".join(output_violations(bad, name="bad", policy=policy))
    assert "bad export: refuses an existing output but has no --force/-f" in found
    assert "bad serve --out-dir: names an output" in found
    assert "bad other: no output-safety class" in found


def _bad_app() -> typer.Typer:
    """A throwaway app breaking one rule per option (and two commands disagreeing)."""
    bad = typer.Typer()

    @bad.command("export")
    def export(
        run: Annotated[str | None, typer.Argument()] = None,
        quantize: Annotated[
            str | None, typer.Option("--quantize", help="int8 | none (default: none).")
        ] = None,
        epochs: Annotated[int | None, typer.Option("--epochs", help="Epochs.")] = None,
        exist_ok: Annotated[bool, typer.Option("--exist-ok", help="Replace it.")] = False,
        out: Annotated[
            Path | None, typer.Option("--out", file_okay=False, help="Folder (default: here).")
        ] = None,
        workers: Annotated[int, typer.Option("--workers", "-w", help="Processes.")] = 1,
        log_dir: Annotated[
            str | None, typer.Option("--log-dir", metavar="URL", help="Logs (default: none).")
        ] = None,
        verbose: Annotated[int, typer.Option("--verbose", "-v", help="Detail.")] = 0,
        config: ConfigFile = None,
        quiet: Quiet = False,
    ) -> None:
        """A command that breaks the rules."""

    @bad.command("serve")
    def serve(
        workers: Annotated[int, typer.Option("--workers", "-j", help="Processes.")] = 1,
        log_dir: Annotated[
            str | None, typer.Option("--log-dir", metavar="DIR|URL", help="Logs (default: none).")
        ] = None,
        json_output: JsonOutput = False,
        verbose: Verbose = 0,
        quiet: Quiet = False,
    ) -> None:
        """Another command."""

    return bad


def test_the_checker_fails_a_command_that_breaks_each_rule() -> None:
    found = "\n".join(violations(_bad_app(), name="bad"))
    expected = [
        "bad export --quantize: lists its values in help but takes any string",
        "bad export --epochs: shows no default",
        "bad export --exist-ok: use --force/-f",
        "bad export --out: --out names a file; a folder is --out-dir",
        "bad export --verbose: -v/--verbose is a count",
        "bad export argument run: name it in capitals",
        "bad export: prints a result but has no --json",
        "bad export: resolves settings but lacks --recipe, --print-config, KEY=VALUE",
        "--workers has different short options: -w in bad export; -j in bad serve",
        "--log-dir has different placeholders: URL in bad export; DIR|URL in bad serve",
    ]
    for line in expected:
        assert line in found, found
    assert "bad serve:" not in found


def test_a_bad_flag_value_names_the_flag() -> None:
    result = CliRunner().invoke(app, ["export", "--quantize", "int4"])
    assert result.exit_code == 2
    assert "--quantize" in result.output
    assert "config" not in result.output.lower()


def test_a_bad_settings_flag_names_the_flag_not_a_config_file() -> None:
    result = CliRunner().invoke(app, ["serve", "--port", "99999", "--print-config"])
    assert result.exit_code == 2
    assert "--port" in result.output
    assert "serve.port" in result.output
    assert "config" not in result.output.lower().replace("--print-config", "")


def test_doctor_exits_1_when_the_requested_device_is_missing() -> None:
    result = CliRunner().invoke(app, ["doctor", "--device", "cuda:99"], env={"COLUMNS": "200"})
    assert result.exit_code == 1, result.output
    assert "cuda:99 is not usable here" in result.output
    assert CliRunner().invoke(app, ["doctor", "--device", "cpu"]).exit_code == 0


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ["export", "--quantize", "int4"],
            "error: invalid value for --quantize: 'int4' is not one of 'int8', 'none'"
            " — see `visionops export -h`",
        ),
        (["trian"], "error: no such command 'trian'; did you mean 'train'? — see `visionops -h`"),
        (["train", "--epochs", "x"], "error: invalid value for --epochs/-e: "),
        (["runs", "compare"], "error: missing argument 'RUN_A' — see `visionops runs compare -h`"),
    ],
)
def test_usage_errors_are_one_error_line(args: list[str], expected: str) -> None:
    result = CliRunner().invoke(app, args, env={"COLUMNS": "80"}, prog_name="visionops")
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(expected), result.output
    assert "Value error" not in result.output and "Usage:" not in result.output
