"""What every command shares: options, settings resolution, console, progress, errors."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.measure import Measurement
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.syntax import Syntax
from rich.table import Table
from rich.text import Text

from visionops.cli._text import safe
from visionops.config import Settings, load_settings, settings_to_yaml
from visionops.errors import ConfigError
from visionops.logs import configure_logging
from visionops.progress import ProgressTask

console = Console(stderr=True, highlight=False)
"""Messages, logs and progress go to stderr; results (tables, JSON) go to stdout."""
out = Console(highlight=False, soft_wrap=True)

Verbose = Annotated[
    int,
    typer.Option(
        "--verbose",
        "-v",
        count=True,
        help="More detail; -vv for debug logs and tracebacks.",
        show_default=False,
    ),
]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="Only warnings, errors and results.")]
ConfigFile = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help="YAML settings file, above visionops.yaml and below flags (default: none).",
        exists=False,
        dir_okay=False,
    ),
]
Recipe = Annotated[
    str | None,
    typer.Option(
        "--recipe",
        "-r",
        help="Start from a shipped recipe, below visionops.yaml (`visionops recipes list`;"
        " default: none).",
    ),
]
PrintConfig = Annotated[
    bool, typer.Option("--print-config", help="Print the resolved settings and exit.")
]
Device = Annotated[
    str | None,
    typer.Option("--device", "-d", help="auto | cpu | cuda | cuda:N | mps (default: auto)."),
]
JsonOutput = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
OVERRIDES = "KEY=VALUE"
"""How every command names its ``key=value`` setting overrides in help and usage."""
Overrides = Annotated[
    list[str] | None,
    typer.Argument(
        help="Setting overrides as key=value, e.g. train.epochs=5 model.name=resnet34.",
        show_default=False,
        metavar=OVERRIDES,
    ),
]


def default_of(key: str) -> str:
    """The built-in default of setting ``key`` (``train.epochs``) as YAML writes it."""
    import yaml

    value: Any = Settings()
    for part in key.split("."):
        value = getattr(value, part)
    if isinstance(value, Path):
        value = str(value)
    return str(yaml.safe_dump(value, default_flow_style=True)).removesuffix("\n...\n").strip()


def from_setting(key: str, text: str) -> str:
    """Help for a flag that sets ``key``: ``text`` and where its default comes from."""
    return f"{text.rstrip('.')} (default: {default_of(key)}, the {key} setting)."


class _State:
    verbose: int = 0


STATE = _State()


def setup(verbose: int = 0, quiet: bool = False) -> None:
    """Configure console logging for one command invocation."""
    STATE.verbose = max(STATE.verbose, verbose)
    level = "WARNING" if quiet else ("DEBUG" if STATE.verbose >= 2 else "INFO")
    configure_logging(lambda message: console.print(message.rstrip("\n"), markup=False), level)
    STATE.quiet = quiet  # type: ignore[attr-defined]


def split_args(args: Sequence[str] | None) -> tuple[list[str], list[str]]:
    """Split variadic arguments into positionals and ``key=value`` overrides."""
    positionals: list[str] = []
    overrides: list[str] = []
    for item in args or []:
        (overrides if "=" in item and not Path(item).exists() else positionals).append(item)
    return positionals, overrides


def one_positional(args: Sequence[str] | None, name: str) -> tuple[str | None, list[str]]:
    """Split variadic arguments into at most one positional ``name`` and ``key=value`` overrides.

    Raises:
        typer.BadParameter: More than one positional was given.
    """
    positionals, overrides = split_args(args)
    if len(positionals) > 1:
        raise typer.BadParameter(
            f"one {name} at a time, got {len(positionals)}: {' '.join(positionals)}"
            " (settings are key=value)",
            param_hint=name,
        )
    return (positionals[0] if positionals else None), overrides


def resolve_settings(
    *,
    config_file: Path | None,
    overrides: Sequence[str],
    recipe: str | None = None,
    print_config: bool = False,
    **flags: Any,
) -> Settings:
    """Resolve settings for a command; with ``--print-config`` print them and exit 0.

    Args:
        config_file: ``--config`` value.
        overrides: ``key=value`` strings.
        recipe: ``--recipe`` value.
        print_config: Whether ``--print-config`` was given.
        **flags: Dotted setting keys with ``__`` for dots (``train__epochs=5``); None = unset.
    """
    dotted = {key.replace("__", "."): value for key, value in flags.items()}
    with flag_errors(dotted):
        settings = load_settings(
            recipe=recipe, config_file=config_file, overrides=overrides, flags=dotted
        )
    if print_config:
        print_settings(settings)
        raise typer.Exit(0)
    return settings


@contextmanager
def flag_errors(flags: Mapping[str, Any]) -> Iterator[None]:
    """Report a settings error on a key a flag set as a bad value of that flag (exit 2).

    Flags are the top settings layer, so when the setting a flag gave is invalid, the flag's
    value is what is wrong: typer's "Invalid value for --port" says so, not "fix your config".

    Args:
        flags: Dotted setting keys to the flag values given (None = flag not given).
    """
    try:
        yield
    except ConfigError as exc:
        given = {key: value for key, value in flags.items() if value is not None}
        raise _flag_error(exc, given) from None


def _flag_error(exc: ConfigError, given: dict[str, Any]) -> Exception:
    """A settings error caused by a flag, reported as typer reports a bad flag value."""
    message = str(exc).split(" — ")[0]
    key = next((k for k in given if f"setting '{k}'" in message), None)
    if key is None:
        return exc
    detail = message.split(": ", 1)[-1].removeprefix("Value error, ")
    return typer.BadParameter(
        f"{given[key]!r}: {detail} (the {key} setting)", param_hint=_flag_name(given[key])
    )


def _flag_name(value: Any) -> str | None:
    """The option of the running command that holds ``value`` (``--port``)."""
    from typer._click.globals import get_current_context

    context = get_current_context(silent=True)
    if context is None:
        return None
    for param in context.command.params:
        if param.param_type_name == "option" and context.params.get(param.name) == value:
            return "/".join(param.opts)
    return None


def print_wrapped(markup: str, *, bullet: str = "") -> None:
    """Print a prose line on stdout wrapped between words at the terminal's width.

    ``markup`` is visionops' own rich markup (user text inside it went through ``safe``).
    With a ``bullet`` (``"  • "``) the wrapped lines hang under the text, not the bullet.
    """
    text = Text.from_markup(markup)
    if not bullet:
        out.print(text, soft_wrap=False)
        return
    grid = Table.grid()
    grid.add_column(no_wrap=True)
    grid.add_column(overflow="fold")
    grid.add_row(bullet, text)
    out.print(grid, soft_wrap=False)


def print_settings(settings: Settings) -> None:
    """Print resolved settings as YAML on stdout (what ``--print-config`` shows)."""
    out.print(Syntax(settings_to_yaml(settings), "yaml", background_color="default"))


def print_json(payload: Any) -> None:
    """Print JSON to stdout (no colour, no wrapping)."""
    sys.stdout.write(json.dumps(payload, indent=2, default=str) + "\n")


class _RichTask:
    def __init__(self, progress: Progress, task: TaskID) -> None:
        self._progress = progress
        self._task = task

    def advance(self, amount: float = 1, **fields: Any) -> None:
        info = "  ".join(
            f"{key}={value:.4g}" if isinstance(value, float) else f"{key}={value}"
            for key, value in fields.items()
        )
        if info:
            self._progress.update(self._task, advance=amount, info=info)
        else:
            self._progress.update(self._task, advance=amount)

    def close(self) -> None:
        task = next(task for task in self._progress.tasks if task.id == self._task)
        if task.total is not None and task.completed < task.total:
            # Cut short (Ctrl-C, an error): a half bar left on screen would look live.
            self._progress.remove_task(self._task)
        else:
            self._progress.stop_task(self._task)


class FittingProgress(Progress):
    """Progress bars that fit the terminal: columns give way rather than being cut with ``…``.

    The first layout that fits is drawn: every column, then without the ``elapsed``/``left``
    labels, a shorter bar, no elapsed time, no metrics, and last no time left at all.
    """

    def __init__(self, *, console: Console, disable: bool) -> None:
        spinner, description = SpinnerColumn(), TextColumn("[bold]{task.description}")
        count, elapsed, left = MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn()
        info = TextColumn("{task.fields[info]}", markup=False)
        labels = TextColumn("[dim]elapsed[/]"), TextColumn("[dim]left[/]")
        wide, short, tiny = BarColumn(), BarColumn(bar_width=20), BarColumn(bar_width=8)
        self._screen = console
        self._layouts: list[tuple[ProgressColumn, ...]] = [
            (spinner, description, wide, count, labels[0], elapsed, labels[1], left, info),
            (spinner, description, wide, count, elapsed, left, info),
            (spinner, description, short, count, elapsed, left, info),
            (spinner, description, tiny, count, left, info),
            (spinner, description, tiny, count, left),
            (spinner, description, count),
        ]
        super().__init__(*self._layouts[0], console=console, disable=disable, transient=False)

    def make_tasks_table(self, tasks: Iterable[Task]) -> Table:
        """The rows in the widest layout that fits the console."""
        tasks = list(tasks)
        for layout in self._layouts:
            self.columns = layout
            table = super().make_tasks_table(tasks)
            wide_open = self._screen.options.update_width(10_000)
            width = Measurement.get(self._screen, wide_open, table).maximum
            if width <= self._screen.width:
                break
        self.columns = self._layouts[0]
        return table


class RichProgress:
    """A :class:`~visionops.progress.ProgressReporter` drawing rich bars on stderr."""

    def __init__(self, enabled: bool = True) -> None:
        self._progress = FittingProgress(console=console, disable=not enabled)

    def __enter__(self) -> RichProgress:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def start(self, description: str, total: float | None = None) -> ProgressTask:
        """Start a bar."""
        task = self._progress.add_task(safe(description), total=total, info="")
        return _RichTask(self._progress, task)


def progress() -> RichProgress:
    """A rich progress reporter, disabled with ``--quiet`` or when stderr is not a terminal."""
    return RichProgress(enabled=not getattr(STATE, "quiet", False))
