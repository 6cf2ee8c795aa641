"""The CLI conventions of docs/reference/conventions.md, checked on a click command tree.

:func:`violations` walks every command and subcommand of a Typer app and returns one line per
broken rule, so a new command that breaks a convention fails ``test_conventions.py``.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import typer

SETTINGS_OPTIONS = ("--config", "--recipe", "--print-config")
"""With a ``KEY=VALUE`` argument: what every command that resolves settings takes."""
SETTINGS_EXEMPT = {
    "visionops config show": "prints the resolved settings itself (--print-config is its job)",
    "visionops init": "--recipe is the recipe it writes into visionops.yaml; it reads no settings",
}
NO_RESULT = {
    "visionops serve": "runs until stopped; it prints no result",
}
OPEN_CHOICES = {"--device": "cuda:N takes any GPU index"}
"""Options whose help lists values but whose values are open (checked by the core)."""
OUTPUT_FILE, OUTPUT_DIR = "--out", "--out-dir"
FORBIDDEN = {
    "--exist-ok": "--force/-f",
    "--overwrite": "--force/-f",
    "--output": "--out (a file) or --out-dir (a folder)",
}
OUTPUT_POLICY = {
    # refuses: an output that exists is replaced only with --force/-f (else exit 2).
    "visionops train": "refuses",
    "visionops export": "refuses",
    "visionops predict": "refuses",
    "visionops init": "refuses",
    "visionops data fetch": "refuses",
    "visionops data preprocess": "refuses",
    "visionops runs compare": "refuses",
    "visionops runs history": "refuses",
    "visionops deploy k8s": "refuses",
    "visionops deploy cloudrun": "refuses",
    "visionops drift simulate": "refuses",
    # new: every call writes under a new name and never replaces an earlier one.
    "visionops quickstart": "new",
    "visionops drift report": "new",
    "visionops serve": "new",
    # rebuilds: recomputes files inside a run or bundle from that run alone.
    "visionops eval": "rebuilds",
    "visionops drift reference": "rebuilds",
    # writes nothing on disk.
    "visionops models": "none",
    "visionops sweep": "none",
    "visionops benchmark": "none",
    "visionops doctor": "none",
    "visionops data info": "none",
    "visionops runs list": "none",
    "visionops config show": "none",
    "visionops recipes list": "none",
    "visionops recipes show": "none",
}
"""The output-safety class of every command (docs/reference/conventions.md, "Outputs")."""
OUTPUT_OPTIONS = ("--out", "--out-dir", "--curves", "--csv")
"""Options that name where a command writes: their command must refuse or write anew."""
_ARGUMENT_NAME = re.compile(r"^\[?[A-Z][A-Z0-9_|=\[\]. -]*$")
_LISTS_VALUES = re.compile(r"\b[\w.:-]+ \| [\w.:-]+\b")


def walk(command: Any, path: str) -> Iterator[tuple[str, Any]]:
    """Every command below ``command`` (groups included), with its full path."""
    yield path, command
    for name, sub in getattr(command, "commands", {}).items():
        if not sub.hidden:
            yield from walk(sub, f"{path} {name}")


def _is_option(param: Any) -> bool:
    return bool(param.param_type_name == "option")


def _long(option: Any) -> str:
    longs = [name for name in option.opts if name.startswith("--")]
    return longs[0] if longs else option.opts[0]


def _command_violations(path: str, command: Any) -> list[str]:
    problems: list[str] = []
    options = [p for p in command.params if _is_option(p)]
    arguments = [p for p in command.params if p.param_type_name == "argument"]
    names = {name for option in options for name in option.opts}
    for option in options:
        long = _long(option)
        where = f"{path} {long}"
        if long in FORBIDDEN:
            problems.append(f"{where}: use {FORBIDDEN[long]}")
        is_flag = bool(option.is_flag or option.count)
        if long == "--verbose" and not option.count:
            problems.append(f"{where}: -v/--verbose is a count (-v, -vv)")
        if is_flag or option.hidden or long in {"--help", "--version"}:
            continue
        choice = option.type_descriptor.is_choice
        if _LISTS_VALUES.search(option.help or "") and not choice and long not in OPEN_CHOICES:
            problems.append(f"{where}: lists its values in help but takes any string (Literal)")
        default_known = option.default is not None and option.show_default is not False
        if (
            not option.required
            and not default_known
            and "default" not in (option.help or "").lower()
        ):
            problems.append(f"{where}: shows no default (say what happens without it)")
        if long == OUTPUT_FILE and option.type_descriptor.parameter_info.file_okay is False:
            problems.append(f"{where}: --out names a file; a folder is --out-dir")
        if long == OUTPUT_DIR and option.type_descriptor.parameter_info.file_okay is not False:
            problems.append(f"{where}: --out-dir names a folder (file_okay=False)")
    for argument in arguments:
        if argument.metavar is None or not _ARGUMENT_NAME.match(argument.metavar):
            problems.append(
                f"{path} argument {argument.name}: name it in capitals with metavar"
                f" (got {argument.metavar!r})"
            )
    if getattr(command, "commands", None):
        return problems
    for required in ("--verbose", "--quiet"):
        if required not in names:
            problems.append(f"{path}: has no {required}")
    if "--json" not in names and path not in NO_RESULT:
        problems.append(f"{path}: prints a result but has no --json")
    takes_overrides = any("KEY=VALUE" in (a.metavar or "") for a in arguments)
    settings = [name in names for name in SETTINGS_OPTIONS] + [takes_overrides]
    if any(settings) and not all(settings) and path not in SETTINGS_EXEMPT:
        missing = [
            name
            for name, has in zip([*SETTINGS_OPTIONS, "KEY=VALUE"], settings, strict=True)
            if not has
        ]
        problems.append(f"{path}: resolves settings but lacks {', '.join(missing)}")
    return problems


def _short_option_violations(commands: list[tuple[str, Any]]) -> list[str]:
    shorts_of: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    longs_of: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    metavars_of: dict[str, dict[str | None, list[str]]] = defaultdict(lambda: defaultdict(list))
    for path, command in commands:
        for option in command.params:
            if not _is_option(option) or option.hidden:
                continue
            long = _long(option)
            if not (option.is_flag or option.count):
                metavars_of[long][option.metavar].append(path)
            short = next((o for o in option.opts if not o.startswith("--")), "no short option")
            shorts_of[long][short].append(path)
            if short != "no short option":
                longs_of[short][long].append(path)
    problems = []
    for long, seen in sorted(metavars_of.items()):
        if len(seen) > 1 and any(name is not None for name in seen):
            detail = "; ".join(
                f"{m or 'its type'} in {', '.join(paths)}" for m, paths in seen.items()
            )
            problems.append(f"{long} has different placeholders: {detail}")
    for long, seen in sorted(shorts_of.items()):
        if len(seen) > 1:
            detail = "; ".join(f"{s} in {', '.join(paths)}" for s, paths in seen.items())
            problems.append(f"{long} has different short options: {detail}")
    for short, seen in sorted(longs_of.items()):
        if len(seen) > 1:
            detail = "; ".join(f"{long} in {', '.join(paths)}" for long, paths in seen.items())
            problems.append(f"{short} means different options: {detail}")
    return problems


def violations(app: typer.Typer, name: str = "visionops") -> list[str]:
    """Every broken convention in ``app``, one line each (empty when all hold)."""
    root: Any = typer.main.get_command(app)
    commands = list(walk(root, name))
    problems = [p for path, command in commands for p in _command_violations(path, command)]
    return problems + _short_option_violations(commands)


def output_violations(
    app: typer.Typer, name: str = "visionops", policy: dict[str, str] | None = None
) -> list[str]:
    """Commands that break the output-safety rule, one line each (empty when all hold).

    Every command has a class in ``policy`` (a new command must be given one); a command that
    refuses has ``--force/-f``; one with an option naming an output refuses or writes anew.
    """
    policy = OUTPUT_POLICY if policy is None else policy
    problems = []
    for path, command in walk(typer.main.get_command(app), name):
        if getattr(command, "commands", None):
            continue
        options = {o for p in command.params if _is_option(p) for o in p.opts}
        kind = policy.get(path)
        if kind is None:
            problems.append(f"{path}: no output-safety class (refuses, new, rebuilds or none)")
            continue
        if kind == "refuses" and not {"--force", "-f"} <= options:
            problems.append(f"{path}: refuses an existing output but has no --force/-f")
        named = sorted(options & set(OUTPUT_OPTIONS))
        if named and kind not in {"refuses", "new"}:
            problems.append(f"{path} {named[0]}: names an output, so it refuses or writes anew")
    return problems


def help_problems(text: str) -> list[str]:
    """What rendered help must not show: a value on a flag, a cut value."""
    problems = []
    if "<bool>" in text:
        problems.append("a flag shows a <bool> value")
    if "…" in text:
        problems.append("a value is cut (…)")
    return problems


_BOX = re.compile(r"[\u2500-\u257f]")
_DROPPED_NOTE = re.compile(r"not shown at this width:.*?\(--json has them\)", re.DOTALL)
_EXAMPLE_LINE = re.compile(r"^ {5}(visionops .*)$")


def _tokens(text: str) -> set[str]:
    """The words of rendered ``text``: box drawing removed, a choice list split at ``|``."""
    return {
        piece
        for word in _BOX.sub(" ", text).split()
        for piece in word.split("|")
        if piece and piece != "\\"
    }


def _examples(text: str) -> list[str]:
    """The example commands of rendered help, continuation lines (`` \\``) joined."""
    lines, found = text.splitlines(), []
    for index, line in enumerate(lines):
        match = _EXAMPLE_LINE.match(line.rstrip())
        if match is None:
            continue
        command = match.group(1)
        while command.endswith(" \\") and index + 1 < len(lines):
            index += 1
            command = command[:-2] + " " + lines[index].strip()
        found.append(command)
    return found


def width_problems(narrow: str, wide: str, width: int) -> list[str]:
    """What ``narrow`` (rendered at ``width``) breaks, next to ``wide`` (the same, unbounded).

    A word of ``narrow`` that is no word of ``wide`` was split inside (or folded); ``…`` is a
    cut value; an example command must read the same once its `` \\`` continuations are
    joined; no line may be wider than ``width``.
    """
    problems = []
    if "…" in narrow:
        problems.append("a value is cut (…)")
    # The caption naming the columns left out at this width is the one text only it shows.
    kept = _DROPPED_NOTE.sub(" ", narrow)
    broken = sorted(_tokens(kept) - _tokens(wide))
    if broken:
        problems.append(f"words broken inside: {broken[:6]}")
    if _examples(narrow) != _examples(wide):
        problems.append(f"an example is split: {_examples(narrow)} != {_examples(wide)}")
    too_wide = [line for line in narrow.splitlines() if len(line.rstrip()) > width]
    if too_wide:
        problems.append(f"{len(too_wide)} lines wider than {width}: {too_wide[0]!r}")
    return problems


__all__ = ["help_problems", "output_violations", "violations", "walk", "width_problems"]
