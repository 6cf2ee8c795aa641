"""Data-parallel launch on one or several machines, on torch's elastic agent (c10d rendezvous).

A :class:`LaunchPlan` says how this machine takes part: how many nodes (``N`` or ``MIN:MAX``),
which one this is, where the rendezvous is, how many processes per node and how often the group
may restart. :func:`plan_from_environment` builds one from an outside launcher's environment
(Vertex AI and Kubeflow's PyTorchJob set ``MASTER_ADDR``, ``MASTER_PORT``, ``WORLD_SIZE`` and
``RANK`` per *node*), so ``visionops train`` joins without flags there. :func:`launch` runs the
workers under torch's ``LocalElasticAgent``: when a worker dies the agents of every node
restart the group (up to ``max_restarts``), but a worker that stopped on a
:class:`~visionops.errors.VisionOpsError` (bad input: retrying cannot help) ends the job.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import sys
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from visionops.distributed import NODE_RANK_ENV
from visionops.errors import ConfigError

__all__ = [
    "DEFAULT_RDZV_TIMEOUT_S",
    "NODE_RANK_ENV",
    "LaunchPlan",
    "launch",
    "parse_endpoint",
    "parse_nnodes",
    "plan_from_environment",
]

DEFAULT_RDZV_TIMEOUT_S = 900


@dataclass(frozen=True)
class LaunchPlan:
    """How this machine takes part in a data-parallel job.

    Attributes:
        min_nodes: Fewest nodes the job runs with.
        max_nodes: Most nodes (equal to ``min_nodes`` unless elastic).
        node_rank: This node's rank (``None`` with elastic membership: arrival order decides).
        endpoint: ``HOST:PORT`` of the c10d rendezvous (node 0 hosts it); ``None`` = this machine.
        nproc_per_node: Processes on this machine.
        run_id: Rendezvous id; every node of one job must use the same.
        max_restarts: How often the group restarts after a worker dies.
        rdzv_timeout: Seconds to wait for the other nodes.
    """

    min_nodes: int
    max_nodes: int
    node_rank: int | None
    endpoint: str | None
    nproc_per_node: int
    run_id: str
    max_restarts: int
    rdzv_timeout: int = DEFAULT_RDZV_TIMEOUT_S

    @property
    def processes(self) -> int:
        """Processes taking part (at least)."""
        return self.min_nodes * self.nproc_per_node


def parse_nnodes(value: str) -> tuple[int, int]:
    """``--nnodes`` as ``(min, max)``: ``"2"`` is ``(2, 2)``, ``"1:4"`` is ``(1, 4)``.

    Raises:
        ConfigError: Not ``N`` or ``MIN:MAX`` with ``1 <= MIN <= MAX``.
    """
    match = re.fullmatch(r"\s*(\d+)\s*(?::\s*(\d+)\s*)?", value)
    if match is None:
        raise ConfigError(f"--nnodes {value!r}: use a node count N or MIN:MAX, e.g. --nnodes 2")
    low = int(match.group(1))
    high = int(match.group(2)) if match.group(2) else low
    if not 1 <= low <= high:
        raise ConfigError(
            f"--nnodes {value}: needs 1 <= MIN <= MAX, e.g. --nnodes 2 or --nnodes 2:4"
        )
    return low, high


def parse_endpoint(value: str, flag: str = "--rdzv-endpoint") -> tuple[str, int]:
    """``HOST:PORT`` as ``(host, port)``.

    Raises:
        ConfigError: No port, or a port outside 1..65535.
    """
    host, sep, port = value.strip().rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{flag} {value!r}: use HOST:PORT, e.g. {flag} 10.0.0.1:29500")
    return host.strip("[]"), int(port)


def make_plan(
    *,
    nnodes: str | None,
    node_rank: int | None,
    endpoint: str | None,
    nproc_per_node: int | None,
    run_id: str | None,
    max_restarts: int | None,
    rdzv_timeout: int | None,
) -> LaunchPlan | None:
    """The plan the flags ask for; ``None`` when they ask for a normal one-process run.

    Raises:
        ConfigError: Flags that do not fit together (a node rank outside ``0..N-1``, several
            nodes without ``--rdzv-endpoint``, ...).
    """
    low, high = parse_nnodes(nnodes) if nnodes is not None else (1, 1)
    nproc = nproc_per_node or 1
    if nnodes is None:
        for flag, value in (("--node-rank", node_rank), ("--rdzv-endpoint", endpoint)):
            if value is not None:
                raise ConfigError(f"{flag} needs --nnodes: e.g. --nnodes 2 {flag} ...")
    if high == 1 and nproc == 1:
        return None
    if high > 1 and endpoint is None:
        raise ConfigError(
            f"--nnodes {nnodes} needs --rdzv-endpoint HOST:PORT (node 0's address), e.g."
            " --rdzv-endpoint 10.0.0.1:29500"
        )
    if endpoint is not None:
        parse_endpoint(endpoint)
    if node_rank is not None:
        if low != high:
            raise ConfigError(
                f"--node-rank with elastic --nnodes {nnodes}: nodes take their rank in the"
                " order they join — drop --node-rank, or give a fixed --nnodes N"
            )
        if not 0 <= node_rank < high:
            raise ConfigError(
                f"--node-rank {node_rank} is outside 0..{high - 1} for --nnodes {high}"
                f" — number the nodes 0 to {high - 1}"
            )
    elif high > 1 and low == high:
        raise ConfigError(
            f"--nnodes {nnodes} needs --node-rank 0..{high - 1} (0 on the machine at"
            " --rdzv-endpoint)"
        )
    if max_restarts is not None and max_restarts < 0:
        raise ConfigError(f"--max-restarts {max_restarts}: use 0 or more, e.g. --max-restarts 3")
    if rdzv_timeout is not None and rdzv_timeout < 1:
        raise ConfigError(f"--rdzv-timeout {rdzv_timeout}: use seconds >= 1, e.g. 900")
    return LaunchPlan(
        min_nodes=low,
        max_nodes=high,
        node_rank=node_rank if high > 1 else 0,
        endpoint=endpoint,
        nproc_per_node=nproc,
        run_id=run_id or ("visionops" if high > 1 else str(uuid.uuid4())),
        max_restarts=3 if max_restarts is None else max_restarts,
        rdzv_timeout=rdzv_timeout or DEFAULT_RDZV_TIMEOUT_S,
    )


def plan_from_environment(
    env: Mapping[str, str],
    *,
    nproc_per_node: int | None,
    max_restarts: int | None,
    rdzv_timeout: int | None,
) -> LaunchPlan | None:
    """A node-level plan from an outside launcher's variables (Vertex AI, Kubeflow PyTorchJob).

    Those launchers start one ``visionops train`` per node with ``WORLD_SIZE`` nodes,
    ``RANK`` this node and ``MASTER_ADDR``/``MASTER_PORT`` node 0; this process then starts
    the per-node workers itself. ``None`` when there is no such environment (or one node).

    Raises:
        ConfigError: A partial environment (``RANK`` without ``WORLD_SIZE``, no
            ``MASTER_ADDR``...), or values that are not numbers.
    """
    if "LOCAL_RANK" in env:
        return None  # a worker of torchrun (or of this launcher), not a node
    names = ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK")
    present = [name for name in names if env.get(name)]
    if not present:
        return None
    missing = [name for name in names if not env.get(name)]
    if missing:
        raise ConfigError(
            f"the launcher set {', '.join(present)} but not {', '.join(missing)} — set all of"
            " MASTER_ADDR, MASTER_PORT, WORLD_SIZE and RANK, or none (then pass --nnodes,"
            " --node-rank and --rdzv-endpoint)"
        )
    try:
        world, rank, port = int(env["WORLD_SIZE"]), int(env["RANK"]), int(env["MASTER_PORT"])
    except ValueError:
        raise ConfigError(
            f"WORLD_SIZE={env['WORLD_SIZE']!r}, RANK={env['RANK']!r},"
            f" MASTER_PORT={env['MASTER_PORT']!r}: all three must be whole numbers"
        ) from None
    if world < 2 and not (nproc_per_node and nproc_per_node > 1):
        return None
    if not 0 <= rank < world:
        raise ConfigError(f"RANK={rank} is outside 0..{world - 1} for WORLD_SIZE={world}")
    return make_plan(
        nnodes=str(world),
        node_rank=rank,
        endpoint=f"{env['MASTER_ADDR']}:{port}",
        nproc_per_node=nproc_per_node,
        run_id=env.get("TORCHELASTIC_RUN_ID") or env.get("CLOUD_ML_JOB_ID"),
        max_restarts=max_restarts,
        rdzv_timeout=rdzv_timeout,
    )


def launch(plan: LaunchPlan, args: Sequence[str], errors: Path) -> None:
    """Run ``visionops train ARGS`` in ``plan.nproc_per_node`` workers here and wait.

    Args:
        plan: How this machine takes part.
        args: The worker command's arguments (after ``visionops train``).
        errors: Folder where the workers record a :class:`~visionops.errors.VisionOpsError`.

    Raises:
        ConfigError: The rendezvous never completed (no answer at the endpoint, or too few
            nodes joined within ``rdzv_timeout``).
        KeyboardInterrupt: The workers were interrupted (Ctrl-C, SIGTERM).
        torch.distributed.elastic.multiprocessing.errors.ChildFailedError: Workers failed.
    """
    from torch.distributed.elastic.agent.server.api import RunResult, WorkerSpec, WorkerState
    from torch.distributed.elastic.agent.server.local_elastic_agent import LocalElasticAgent
    from torch.distributed.elastic.multiprocessing import DefaultLogsSpecs
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.elastic.rendezvous import RendezvousParameters
    from torch.distributed.elastic.rendezvous import registry as rdzv_registry
    from torch.distributed.elastic.rendezvous.api import RendezvousError

    class _Agent(LocalElasticAgent):
        """Restarts the group after a crash, never after a recorded usage error."""

        def _monitor_workers(self, worker_group):  # type: ignore[no-untyped-def]
            result: RunResult = super()._monitor_workers(worker_group)
            if result.state == WorkerState.FAILED and any(errors.glob("rank*.json")):
                self._remaining_restarts = 0
            return result

    if "OMP_NUM_THREADS" not in os.environ:
        # What torchrun does: N processes with all cores' threads each would thrash.
        os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // plan.nproc_per_node))
    os.environ[NODE_RANK_ENV] = "" if plan.node_rank is None else str(plan.node_rank)
    # The workers get a store of their own (hosted by global rank 0) rather than the agents'
    # rendezvous store: with the shared store, a worker SIGKILLed mid-epoch could leave the
    # other node's agent with a reset connection to the rendezvous, so the restart hung
    # (3 of 6 tries under load); with separate stores every try restarted and resumed.
    os.environ.setdefault("TORCH_DISABLE_SHARE_RDZV_TCP_STORE", "1")
    configs: dict[str, Any] = {
        "join_timeout": plan.rdzv_timeout,
        "read_timeout": plan.rdzv_timeout,
    }
    if plan.node_rank is not None and plan.max_nodes > 1:
        configs["is_host"] = plan.node_rank == 0
    params = RendezvousParameters(
        backend="c10d",
        endpoint=plan.endpoint or "localhost:0",
        run_id=plan.run_id,
        min_nodes=plan.min_nodes,
        max_nodes=plan.max_nodes,
        **configs,
    )
    try:
        with _native_stderr_silenced():
            handler = rdzv_registry.get_rendezvous_handler(params)
    except (RendezvousError, RuntimeError, ValueError) as exc:
        raise _no_rendezvous(plan, exc) from None
    spec = WorkerSpec(
        role="visionops-train",
        local_world_size=plan.nproc_per_node,
        entrypoint=sys.executable,
        args=("-m", "visionops", "train", *args),
        rdzv_handler=handler,
        max_restarts=plan.max_restarts,
        monitor_interval=0.2,
    )
    agent = _Agent(spec=spec, logs_specs=DefaultLogsSpecs(), start_method="spawn")
    shutdown = True
    try:
        result = agent.run()
    except SignalException:
        shutdown = False  # leave the rendezvous open for the other nodes' restart
        raise KeyboardInterrupt from None
    except RendezvousError as exc:
        raise _no_rendezvous(plan, exc) from None
    finally:
        if shutdown:
            with contextlib.suppress(Exception):  # the job's outcome matters more
                handler.shutdown()
    if result.is_failed():
        raise ChildFailedError(name="visionops train", failures=result.failures)


@contextlib.contextmanager
def _native_stderr_silenced() -> Iterator[None]:
    """Keep c10d's C++ log (a stack dump per failed connection) off the user's terminal.

    The Python exception it comes with becomes one line; C++ writes to file descriptor 2
    directly, so redirecting ``sys.stderr`` would not be enough.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w", encoding="utf-8") as sink:
            os.dup2(sink.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _no_rendezvous(plan: LaunchPlan, exc: BaseException) -> ConfigError:
    where = plan.endpoint or "this machine"
    return ConfigError(
        f"the rendezvous at {where} did not complete within {plan.rdzv_timeout} s"
        f" ({type(exc).__name__}) — start node 0 there first, check the address and port"
        f" ({socket.gethostname()} must reach it), and give every node the same --nnodes"
        " and --rdzv-id"
    )
