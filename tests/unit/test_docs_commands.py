"""Every `visionops ...` command in README.md and docs/ names real commands and real options.

The commands are taken from code blocks and inline code; each is walked through the Typer
app: subcommands must exist, every option must belong to the command (or the root), and a
value given to an option with fixed choices must be one of them. The cheap ones (recipes,
config show, --print-config, --help) are also run.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from visionops.cli.app import app

ROOT = Path(__file__).resolve().parents[2]
_PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
_BLOCK = re.compile(r"```[a-z]*\n(.*?)```", re.S)
_INLINE = re.compile(r"`(visionops [^`\n]+)`")
_CHEAP = (("recipes", "list"), ("recipes", "show"), ("config", "show"))
_PLACEHOLDER = re.compile(r"^[\[A-Z][A-Z_\[\].=|-]*$")  # COMMAND, [OPTIONS], RECIPE


def _commands(text: str) -> list[str]:
    found: list[str] = []
    for block in _BLOCK.findall(text):
        for line in block.splitlines():
            line = line.strip().removeprefix("$ ")
            found += [part.strip() for part in re.split(r"&&|\|\||;|\|", line.split(" #")[0])]
    found += _INLINE.findall(_BLOCK.sub("", text))
    return [c for c in found if c.startswith("visionops ") and "<" not in c]


def _all_commands() -> list[tuple[str, str]]:
    return [
        (str(page.relative_to(ROOT)), command)
        for page in _PAGES
        for command in _commands(page.read_text(encoding="utf-8"))
    ]


def _problems(command: str) -> list[str]:
    try:
        words = shlex.split(command)[1:]
    except ValueError as exc:
        return [f"cannot parse: {exc}"]
    root = _ROOT
    node, path = root, ["visionops"]
    options = _options(root)
    problems: list[str] = []
    position = 0
    while position < len(words):
        word = words[position]
        position += 1
        if word.startswith("-") and word not in ("-", "--"):
            name = word.split("=", 1)[0]
            if name.startswith("-") and not name.startswith("--") and len(name) > 2:
                names = [f"-{letter}" for letter in name[1:]]  # -vv
            else:
                names = [name]
            for flag in names:
                param = options.get(flag)
                if param is None:
                    problems.append(f"{' '.join(path)} has no option {flag}")
                    continue
                takes_value = not (getattr(param, "is_flag", False) or param.count)
                if takes_value and "=" not in word and position < len(words):
                    value = words[position]
                    position += 1
                    choices = param.type_descriptor.choices
                    if choices and value not in {str(c) for c in choices}:
                        problems.append(f"{flag} {value}: not one of {list(choices)}")
            continue
        commands = getattr(node, "commands", None)
        if _PLACEHOLDER.match(word):
            continue
        if commands is not None:
            if word not in commands:
                problems.append(f"{' '.join(path)} has no command {word!r}")
                return problems
            node = commands[word]
            path.append(word)
            options = _options(node)
    return problems


class _Help:
    count = False
    is_flag = True


def _options(command: Any) -> dict[str, Any]:
    found = {name: p for p in command.params for name in [*p.opts, *p.secondary_opts]}
    return found | {"-h": _Help(), "--help": _Help()}


_COMMANDS = _all_commands()
_ROOT: Any = typer.main.get_command(app)


def test_the_docs_hold_commands() -> None:
    assert len(_COMMANDS) > 50
    pages = {page for page, _ in _COMMANDS}
    assert "README.md" in pages


@pytest.mark.parametrize(("page", "command"), _COMMANDS, ids=[c for _, c in _COMMANDS])
def test_a_documented_command_uses_real_commands_and_options(page: str, command: str) -> None:
    assert _problems(command) == [], f"{page}: {command}"


def test_the_checker_catches_a_wrong_command() -> None:
    assert _problems("visionops train --epoch 3") == ["visionops train has no option --epoch"]
    assert _problems("visionops export --quantize int4")
    assert _problems("visionops runs show")


_RUNNABLE = sorted(
    {
        command
        for _, command in _COMMANDS
        if "--help" in command.split()
        or "--print-config" in command.split()
        or any(tuple(command.split()[1 : 1 + len(p)]) == p for p in _CHEAP)
    }
    - {"visionops recipes show"}  # prose naming the command, no recipe
)
_RUNNABLE = sorted(
    command
    for command in _RUNNABLE
    if not any(_PLACEHOLDER.match(word) for word in command.split()[1:])
)


@pytest.mark.parametrize("command", _RUNNABLE)
def test_a_cheap_documented_command_runs(
    command: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, shlex.split(command)[1:], env={"COLUMNS": "120"})
    assert result.exit_code == 0, result.output
