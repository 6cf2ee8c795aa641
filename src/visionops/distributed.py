"""Data-parallel training helpers: the process group of a ``torchrun``-started worker.

``visionops train --nproc-per-node N`` re-runs the same command in N processes
(:mod:`visionops.train.launch`); each process then finds ``RANK``/``WORLD_SIZE`` in its
environment, joins the process group here (NCCL on CUDA, gloo on CPU), trains on its shard of
every batch, and only rank 0 writes files and logs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from visionops.errors import ConfigError

__all__ = [
    "DistContext",
    "broadcast_flag",
    "cleanup_distributed",
    "in_torchrun",
    "init_distributed",
]


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
    if not dist.is_initialized():
        if device.type == "cuda":
            gpus = torch.cuda.device_count()
            if context.local_rank >= gpus:
                raise ConfigError(
                    f"{context.world_size} processes per node but only {gpus} CUDA device(s)"
                    f" are visible — use --nproc-per-node {gpus}"
                )
            torch.cuda.set_device(context.local_rank)
            dist.init_process_group("nccl", device_id=torch.device("cuda", context.local_rank))
        else:
            dist.init_process_group("gloo")
    return context


def cleanup_distributed() -> None:
    """Leave the process group (no-op outside one)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def broadcast_flag(flag: bool, context: DistContext, device: torch.device) -> bool:
    """Rank 0's ``flag`` on every rank (so all ranks stop at the same epoch)."""
    if not context.enabled:
        return flag
    tensor = torch.tensor([1 if flag else 0], dtype=torch.int32, device=device)
    dist.broadcast(tensor, src=0)
    return bool(tensor.item())
