"""``visionops train`` as one call: settings (a resumed run's own), data-parallel launch, errors.

:func:`run_training` is what the CLI calls. With ``nproc_per_node`` above 1 it starts the
same command in N processes through torch's elastic launcher (in this process, so its
tracebacks never reach the user) and waits; each worker that fails with a
:class:`~visionops.errors.VisionOpsError` records it with :func:`record_worker_error`
instead of printing it, and the launcher raises the first one again here: one line, printed
once, with that error's exit code.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from visionops import errors
from visionops.config import Settings, load_settings
from visionops.distributed import in_torchrun
from visionops.errors import TrainingError, VisionOpsError
from visionops.progress import NULL_PROGRESS, ProgressReporter
from visionops.runs import resolve_run
from visionops.train import elastic
from visionops.train.elastic import LaunchPlan, make_plan, plan_from_environment
from visionops.train.loop import TrainResult, train
from visionops.train.restarts import WORKER_DIR_ENV

__all__ = [
    "ERROR_DIR_ENV",
    "TrainRequest",
    "forwarded_args",
    "launch_plan",
    "record_worker_error",
    "resolve_train_settings",
    "run_training",
]

ERROR_DIR_ENV = WORKER_DIR_ENV
"""Environment variable naming the folder where data-parallel workers record their error."""


@dataclass(frozen=True)
class TrainRequest:
    """One ``visionops train`` invocation, as parsed from the command line.

    Attributes:
        dataset: The DATASET argument, if any.
        overrides: ``key=value`` settings.
        flags: Dotted setting keys from flags (``train.epochs``); ``None`` = not given.
        config_file: ``--config``.
        recipe: ``--recipe``.
        name: ``--name``.
        exist_ok: ``--exist-ok``.
        resume: ``--resume RUN`` (``latest`` for ``--resume-latest``).
        reprepare: ``--reprepare``.
        nproc_per_node: ``--nproc-per-node``.
        nnodes: ``--nnodes`` (``N`` or ``MIN:MAX``).
        node_rank: ``--node-rank``.
        rdzv_endpoint: ``--rdzv-endpoint``.
        rdzv_id: ``--rdzv-id``.
        max_restarts: ``--max-restarts``.
        rdzv_timeout: ``--rdzv-timeout``.
        verbose: ``-v`` count (forwarded to workers).
        quiet: ``-q`` (forwarded to workers).
    """

    dataset: str | None = None
    overrides: Sequence[str] = ()
    flags: Mapping[str, Any] = field(default_factory=dict)
    config_file: Path | None = None
    recipe: str | None = None
    name: str | None = None
    exist_ok: bool = False
    resume: str | None = None
    reprepare: bool = False
    nproc_per_node: int | None = None
    nnodes: str | None = None
    node_rank: int | None = None
    rdzv_endpoint: str | None = None
    rdzv_id: str | None = None
    max_restarts: int | None = None
    rdzv_timeout: int | None = None
    verbose: int = 0
    quiet: bool = False


def resolve_train_settings(request: TrainRequest) -> Settings:
    """The settings of a request; a resumed run starts from its own ``config.yaml``.

    Raises:
        ConfigError: Invalid settings.
        ArtifactError: The run to resume does not exist.
    """
    config_file = request.config_file
    if request.resume is not None and config_file is None:
        # The run's own settings, under this command's flags and overrides.
        base = load_settings(
            recipe=request.recipe, overrides=request.overrides, flags=request.flags
        )
        config_file = resolve_run(request.resume, base.runs_root) / "config.yaml"
    return load_settings(
        recipe=request.recipe,
        config_file=config_file,
        overrides=request.overrides,
        flags=request.flags,
    )


def forwarded_args(request: TrainRequest) -> list[str]:
    """The same ``visionops train`` invocation without the launch flags, flags as key=value."""
    args = [*([request.dataset] if request.dataset else []), *request.overrides]
    args += [f"{key}={value}" for key, value in request.flags.items() if value is not None]
    if request.config_file is not None:
        args += ["--config", str(request.config_file)]
    if request.recipe is not None:
        args += ["--recipe", request.recipe]
    if request.name is not None:
        args += ["--name", request.name]
    if request.exist_ok:
        args.append("--exist-ok")
    if request.resume is not None:
        args += ["--resume", request.resume]
    if request.reprepare:
        args.append("--reprepare")
    return args + ["-v"] * request.verbose + (["-q"] if request.quiet else [])


def run_training(
    request: TrainRequest, progress: ProgressReporter = NULL_PROGRESS
) -> TrainResult | None:
    """Run ``visionops train``: in this process, or in N data-parallel processes.

    Args:
        request: The parsed invocation.
        progress: Receives the epoch bars (single process and rank 0).

    Returns:
        The result of this process's training (``rank`` > 0: a stub), or ``None`` when
        workers were launched (rank 0 reported the run itself).

    Raises:
        VisionOpsError: Whatever training raises; from workers, the first error one recorded.
    """
    if not in_torchrun():
        plan = launch_plan(request)
        if plan is not None:
            resolve_train_settings(request)  # validate once, before starting the workers
            _launch(plan, forwarded_args(request), show_launcher_logs=request.verbose >= 2)
            return None
    settings = resolve_train_settings(request)
    return train(
        settings,
        request.dataset,
        name=request.name,
        exist_ok=request.exist_ok,
        resume=request.resume,
        reprepare=request.reprepare,
        progress=progress,
    )


def launch_plan(request: TrainRequest) -> LaunchPlan | None:
    """How this machine takes part: from the flags, else from an outside launcher's variables.

    Raises:
        ConfigError: Flags that do not fit together, or a partial launcher environment.
    """
    plan = make_plan(
        nnodes=request.nnodes,
        node_rank=request.node_rank,
        endpoint=request.rdzv_endpoint,
        nproc_per_node=request.nproc_per_node,
        run_id=request.rdzv_id,
        max_restarts=request.max_restarts,
        rdzv_timeout=request.rdzv_timeout,
    )
    if plan is not None or request.nnodes is not None:
        return plan
    return plan_from_environment(
        os.environ,
        nproc_per_node=request.nproc_per_node,
        max_restarts=request.max_restarts,
        rdzv_timeout=request.rdzv_timeout,
    )


def record_worker_error(error: VisionOpsError) -> None:
    """In a data-parallel worker: leave ``error`` for the launcher, which reports it once."""
    folder = os.environ.get(ERROR_DIR_ENV)
    if not folder:
        return
    rank = os.environ.get("RANK", "0")
    payload = {"type": type(error).__name__, "message": error.message, "code": error.exit_code}
    path = Path(folder) / f"rank{int(rank):05d}.json"
    path.write_text(json.dumps(payload), encoding="utf-8")


def _recorded_error(folder: Path) -> VisionOpsError | None:
    """The error of the lowest rank that recorded one (rank 0's when it has one)."""
    for path in sorted(folder.glob("rank*.json")):
        try:
            payload = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        kind = getattr(errors, str(payload.get("type")), VisionOpsError)
        if not (isinstance(kind, type) and issubclass(kind, VisionOpsError)):
            kind = VisionOpsError
        error = kind(str(payload.get("message", "")))
        error.exit_code = int(payload.get("code", 1))
        return error
    return None


@contextmanager
def _quiet_launcher() -> Iterator[None]:
    """Silence the elastic launcher's own logging (its failure report is a traceback)."""
    logger = logging.getLogger("torch.distributed.elastic")
    level, propagate = logger.level, logger.propagate
    logger.setLevel(logging.CRITICAL + 1)
    logger.propagate = False
    try:
        yield
    finally:
        logger.setLevel(level)
        logger.propagate = propagate


def _launch(plan: LaunchPlan, args: Sequence[str], *, show_launcher_logs: bool = False) -> None:
    """Run ``visionops train ARGS`` in this machine's workers (:func:`elastic.launch`); wait.

    Raises:
        VisionOpsError: The error a worker recorded (the lowest rank's).
        TrainingError: A worker died without recording an error (after every restart).
        KeyboardInterrupt: The workers were interrupted (Ctrl-C).
    """
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    with tempfile.TemporaryDirectory(prefix="visionops-workers-") as folder:
        os.environ[ERROR_DIR_ENV] = folder
        try:
            with contextlib.nullcontext() if show_launcher_logs else _quiet_launcher():
                elastic.launch(plan, args, Path(folder))
        except ChildFailedError as failed:
            recorded = _recorded_error(Path(folder))
            if recorded is not None:
                raise recorded from None
            codes = sorted({failure.exitcode for failure in failed.failures.values()})
            if 130 in codes:
                raise KeyboardInterrupt from None
            restarts = f" after {plan.max_restarts} restart(s)" if plan.max_restarts else ""
            raise TrainingError(
                f"a training process failed{restarts} (exit code"
                f" {', '.join(map(str, codes))}) — its message is above; rerun with -v for"
                " details"
            ) from None
        finally:
            os.environ.pop(ERROR_DIR_ENV, None)
