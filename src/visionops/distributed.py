"""Data-parallel training helpers: the process group of a ``torchrun``-started worker.

``visionops train --nproc-per-node N`` re-runs the same command in N processes
(:mod:`visionops.train.launch`); each process then finds ``RANK``/``WORLD_SIZE`` in its
environment, joins the process group here (NCCL on CUDA, gloo on CPU), trains on its shard of
every batch, and only rank 0 writes files and logs.
"""

from __future__ import annotations

import os
import socket
from collections.abc import MutableMapping
from dataclasses import dataclass
from typing import TypeVar, cast

import torch
import torch.distributed as dist
from torch.distributed import PrefixStore, Store  # type: ignore[attr-defined]

from visionops.errors import ConfigError

__all__ = [
    "NODE_RANK_ENV",
    "DistContext",
    "adopt_launcher_environment",
    "broadcast_flag",
    "broadcast_from_main",
    "check_same_data",
    "check_same_device",
    "cleanup_distributed",
    "gather_objects",
    "in_torchrun",
    "init_distributed",
]

T = TypeVar("T")

NODE_RANK_ENV = "VISIONOPS_NODE_RANK"
"""This machine's ``--node-rank``, set by :mod:`visionops.train.elastic` for its workers."""


@dataclass(frozen=True)
class DistContext:
    """Where this process sits in a data-parallel job.

    Attributes:
        rank: Global rank (0 for a single process).
        world_size: Number of processes.
        local_rank: Rank on this machine (selects the GPU).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Whether this process writes files and logs."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        """Whether more than one process takes part."""
        return self.world_size > 1


def in_torchrun() -> bool:
    """Whether this process was started by ``torch.distributed.run`` (``torchrun``)."""
    return "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ


def adopt_launcher_environment(
    env: MutableMapping[str, str] | None = None, *, slurm: bool = True
) -> None:
    """Fill in a worker's ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` from its launcher.

    * Under :mod:`visionops.train.elastic` with ``--node-rank R``: the c10d rendezvous numbers
      nodes in an order of its own; the worker's global rank becomes
      ``R * LOCAL_WORLD_SIZE + LOCAL_RANK`` so that node 0 (the one at the endpoint) holds
      rank 0 and writes the run.
    * Under ``srun`` (SLURM, one task per process) with ``MASTER_ADDR``/``MASTER_PORT``
      exported: ``SLURM_PROCID``, ``SLURM_NTASKS`` and ``SLURM_LOCALID``.

    Args:
        env: The environment to update (default ``os.environ``).
        slurm: Read SLURM's variables (``False`` when ``--nnodes`` was given: then ``srun``
            started one launcher per node, not the workers themselves).
    """
    env = os.environ if env is None else env
    node_rank = env.get(NODE_RANK_ENV)
    if node_rank and "LOCAL_RANK" in env and "LOCAL_WORLD_SIZE" in env:
        rank = int(node_rank) * int(env["LOCAL_WORLD_SIZE"]) + int(env["LOCAL_RANK"])
        env["RANK"] = str(rank)
        return
    needed = ("SLURM_PROCID", "SLURM_NTASKS", "MASTER_ADDR", "MASTER_PORT")
    if (
        slurm
        and "LOCAL_RANK" not in env
        and all(env.get(name) for name in needed)
        and int(env["SLURM_NTASKS"]) > 1
    ):
        env["RANK"] = env["SLURM_PROCID"]
        env["WORLD_SIZE"] = env["SLURM_NTASKS"]
        env["LOCAL_RANK"] = env.get("SLURM_LOCALID", "0")


def init_distributed(device: torch.device) -> DistContext:
    """Join the process group ``torchrun`` set up, if any.

    Args:
        device: The device chosen for training; CUDA uses NCCL and one GPU per local rank,
            anything else gloo.

    Returns:
        The rank and world size (``DistContext()`` outside ``torchrun``).

    Raises:
        ConfigError: More CUDA processes than visible GPUs.
    """
    if not in_torchrun() or int(os.environ["WORLD_SIZE"]) < 2:
        return DistContext()
    context = DistContext(
        rank=int(os.environ["RANK"]),
        world_size=int(os.environ["WORLD_SIZE"]),
        local_rank=int(os.environ["LOCAL_RANK"]),
    )
    if dist.is_initialized():
        return context
    # The launcher's store first (as init_process_group would build it): every rank states
    # its device there, so a mix of CUDA and CPU nodes is one clear error instead of NCCL
    # and gloo process groups that wait for each other forever.
    timeout = dist.constants.default_pg_timeout
    store, _, _ = next(dist.rendezvous("env://", timeout=timeout))  # type: ignore[attr-defined]
    store.set_timeout(timeout)
    check_same_device(PrefixStore("visionops", store), context, device.type)
    store = PrefixStore("default_pg", store)
    if device.type == "cuda":
        gpus = torch.cuda.device_count()
        if context.local_rank >= gpus:
            raise ConfigError(
                f"{context.world_size} processes per node but only {gpus} CUDA device(s)"
                f" are visible — use --nproc-per-node {gpus}"
            )
        torch.cuda.set_device(context.local_rank)
        dist.init_process_group(
            "nccl",
            store=store,
            rank=context.rank,
            world_size=context.world_size,
            device_id=torch.device("cuda", context.local_rank),
        )
    else:
        dist.init_process_group(
            "gloo", store=store, rank=context.rank, world_size=context.world_size
        )
    return context


def check_same_device(store: Store, context: DistContext, device_type: str) -> None:
    """Refuse to train when ranks chose different device types (CUDA on some nodes only).

    Every rank writes its device type to the launcher's store and reads every other rank's,
    so each one raises the same error before any process group exists.

    Raises:
        ConfigError: A rank's device type is not rank 0's.
    """
    store.set(f"device/{context.rank}", f"{device_type}|{_node_label(context)}")
    keys = [f"device/{rank}" for rank in range(context.world_size)]
    store.wait(keys)
    entries = [store.get(key).decode().split("|", 1) for key in keys]
    # Rank 0 may host the store (env:// launchers): it leaves only after everyone has read.
    store.set(f"device-read/{context.rank}", "1")
    if context.rank == 0:
        store.wait([f"device-read/{rank}" for rank in range(context.world_size)])
    reference_type, reference_node = entries[0]
    for other_type, other_node in entries[1:]:
        if other_type != reference_type:
            cuda_node, cpu_node = (
                (reference_node, other_node)
                if reference_type == "cuda"
                else (other_node, reference_node)
            )
            raise ConfigError(
                f"{cuda_node} trains on CUDA but {cpu_node} on the CPU — every node must use"
                " the same device: give every node a GPU, or pass --device cpu on all of them"
            )


def cleanup_distributed() -> None:
    """Leave the process group (no-op outside one)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def check_same_data(fingerprint: str, context: DistContext) -> None:
    """Refuse to train when any rank's prepared dataset differs from rank 0's.

    Every rank gathers every rank's fingerprint, so each one raises the same error before
    the first step (no rank is left waiting for a collective that never comes).

    Raises:
        ConfigError: A rank's dataset fingerprint is not rank 0's.
    """
    if not context.enabled:
        return
    here = (_node_label(context), fingerprint)
    gathered: list[tuple[str, str] | None] = [None] * context.world_size
    dist.all_gather_object(gathered, here)
    reference = gathered[0]
    assert reference is not None
    for item in gathered[1:]:
        if item is not None and item[1] != reference[1]:
            raise ConfigError(
                f"{item[0]} has other data than {reference[0]}: prepared dataset fingerprint"
                f" {item[1][:16]} vs {reference[1][:16]} — give every node the same prepared"
                " dataset (`dvc pull`, or copy data/prepared/ from node 0)"
            )


def _node_label(context: DistContext) -> str:
    node = os.environ.get(NODE_RANK_ENV) or os.environ.get("GROUP_RANK")
    where = f"node {node}" if node else "a node"
    return f"{where} ({socket.gethostname()}, rank {context.rank})"


def broadcast_from_main(value: T, context: DistContext) -> T:
    """Rank 0's ``value`` (any picklable object: a checkpoint, a record) on every rank."""
    if not context.enabled:
        return value
    box: list[object] = [value if context.is_main else None]
    dist.broadcast_object_list(box, src=0)
    return cast("T", box[0])


def gather_objects(value: T, context: DistContext) -> list[T]:
    """Every rank's ``value``, in rank order, on every rank (``[value]`` for one process)."""
    if not context.enabled:
        return [value]
    gathered: list[T | None] = [None] * context.world_size
    dist.all_gather_object(gathered, value)
    return cast("list[T]", gathered)


def broadcast_flag(flag: bool, context: DistContext, device: torch.device) -> bool:
    """Rank 0's ``flag`` on every rank (so all ranks stop at the same epoch)."""
    if not context.enabled:
        return flag
    tensor = torch.tensor([1 if flag else 0], dtype=torch.int32, device=device)
    dist.broadcast(tensor, src=0)
    return bool(tensor.item())
