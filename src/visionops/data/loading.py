"""Batches for training, read straight from a prepared dataset's memory-mapped arrays.

:class:`BatchLoader` replaces a ``torch.utils.data.DataLoader`` with worker processes: the
images are already decoded and resized, so a batch is one fancy-indexing gather from
``images.npy`` (indices sorted for locality) and a zero-copy view as ``(B, C, H, W)``.
A background thread prepares the next batch while the model works on the current one.
Augmentation is applied later, on these uint8 batches, by the training engine.
"""

from __future__ import annotations

import math
import queue
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from visionops.data.prepared import PreparedDataset

__all__ = ["BatchLoader", "shard_indices"]

Batch = tuple[torch.Tensor, torch.Tensor]


def shard_indices(
    indices: NDArray[np.int64],
    *,
    shuffle: bool,
    seed: int,
    epoch: int,
    rank: int,
    world_size: int,
) -> NDArray[np.int64]:
    """The indices one rank reads in one epoch, like ``torch.utils.data.DistributedSampler``.

    The (optionally shuffled with ``seed + epoch``) index list is padded by repeating its
    start until it divides evenly, then rank ``r`` takes every ``world_size``-th item
    starting at ``r``; so every rank gets the same number of items and, across ranks,
    every item is seen at least once per epoch.

    Args:
        indices: Dataset indices of the split.
        shuffle: Permute them first.
        seed: Base seed; the permutation uses ``seed + epoch``.
        epoch: Epoch number.
        rank: This process's rank, ``0 <= rank < world_size``.
        world_size: Number of processes.

    Returns:
        This rank's indices in reading order.
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside 0..{world_size - 1}")
    order = np.asarray(indices, dtype=np.int64)
    if shuffle:
        order = order[np.random.default_rng(seed + epoch).permutation(len(order))]
    if world_size > 1 and len(order):
        total = math.ceil(len(order) / world_size) * world_size
        if total > len(order):
            order = np.resize(order, total)  # repeats from the start, as DistributedSampler pads
        order = order[rank:total:world_size]
    return order


class BatchLoader:
    """Iterate over ``(images, targets)`` batches of one split of a prepared dataset.

    Images are uint8 tensors ``(B, C, H, W)`` in channels-last memory format (a permuted
    view of the NHWC gather, no extra copy); targets are int64 ``(B,)`` (classification,
    anomaly) or float32 ``(B, K)`` (multilabel, regression in original units).

    Args:
        dataset: An opened prepared dataset.
        split: ``train``, ``val`` or ``test``.
        batch_size: Images per batch.
        shuffle: Reshuffle every epoch (deterministically from ``seed + epoch``).
        seed: Base seed of the shuffle.
        drop_last: Drop the last batch when it is smaller than ``batch_size``.
        rank: This process's rank for distributed training.
        world_size: Number of distributed processes; each reads its own shard.
        prefetch: Prepare the next batch in a background thread.
        pin_memory: Put batches in pinned memory (for faster copies to a CUDA device).

    Examples:
        >>> loader = BatchLoader(dataset, "train", 64, shuffle=True)  # doctest: +SKIP
        >>> for epoch in range(3):
        ...     loader.set_epoch(epoch)
        ...     for images, targets in loader:
        ...         ...
    """

    def __init__(
        self,
        dataset: PreparedDataset,
        split: str,
        batch_size: int,
        *,
        shuffle: bool,
        seed: int = 0,
        drop_last: bool = False,
        rank: int = 0,
        world_size: int = 1,
        prefetch: bool = True,
        pin_memory: bool = False,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} / world_size {world_size} is not a valid shard")
        self.dataset = dataset
        self.split = split
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last
        self.rank = rank
        self.world_size = world_size
        self.prefetch = prefetch
        self.pin_memory = pin_memory and torch.cuda.is_available()
        self.epoch = 0
        self.start_batch = 0
        self.split_indices = dataset.indices(split)

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Choose the epoch whose shuffle the next iteration uses (call before each epoch).

        Args:
            epoch: The epoch number (seeds the shuffle).
            start_batch: Batches of that epoch to skip (a resume in the middle of an epoch):
                the next iteration yields batch ``start_batch`` onwards, in the same order.
        """
        self.epoch = epoch
        self.start_batch = start_batch

    @property
    def num_samples(self) -> int:
        """Images this rank reads per epoch (including the padding of sharding)."""
        n = len(self.split_indices)
        return math.ceil(n / self.world_size) if self.world_size > 1 else n

    def __len__(self) -> int:
        if self.drop_last:
            return self.num_samples // self.batch_size
        return math.ceil(self.num_samples / self.batch_size)

    def epoch_indices(self) -> NDArray[np.int64]:
        """This rank's indices for the current epoch, in reading order."""
        return shard_indices(
            self.split_indices,
            shuffle=self.shuffle,
            seed=self.seed,
            epoch=self.epoch,
            rank=self.rank,
            world_size=self.world_size,
        )

    def _batches(self) -> Iterator[NDArray[np.int64]]:
        order = self.epoch_indices()
        first = self.start_batch * self.batch_size
        for start in range(first, len(self) * self.batch_size, self.batch_size):
            yield np.sort(order[start : start + self.batch_size])

    def _gather(self, rows: NDArray[np.int64]) -> Batch:
        images = torch.from_numpy(np.ascontiguousarray(self.dataset.images[rows]))
        targets = torch.from_numpy(np.ascontiguousarray(self.dataset.targets[rows]))
        if self.pin_memory:
            images, targets = images.pin_memory(), targets.pin_memory()
        # NHWC storage viewed as NCHW: exactly torch.channels_last, without copying.
        return images.permute(0, 3, 1, 2), targets

    def __iter__(self) -> Iterator[Batch]:
        if not self.prefetch:
            for rows in self._batches():
                yield self._gather(rows)
            return
        yield from _Prefetcher(self)


class _Prefetcher:
    """Runs the gathers of one epoch in a thread, at most two batches ahead."""

    _DONE = object()

    def __init__(self, loader: BatchLoader) -> None:
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=2)
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._work, args=(loader,), name="visionops-prefetch", daemon=True
        )
        self._thread.start()

    def _put(self, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _work(self, loader: BatchLoader) -> None:
        try:
            for rows in loader._batches():
                if not self._put(loader._gather(rows)):
                    return
        except BaseException as exc:  # handed to the consumer, raised there
            self._put(exc)
            return
        self._put(self._DONE)

    def __iter__(self) -> Iterator[Batch]:
        try:
            while True:
                item = self._queue.get()
                if item is self._DONE:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            # The consumer may stop early (break, exception): release the thread.
            self._stop.set()
            self._thread.join(timeout=5)
