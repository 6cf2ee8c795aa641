"""Micro-batching: group concurrent requests into one model call, off the event loop.

Requests put items into a bounded queue and await a future. One batcher task takes up to
``max_batch`` items, waiting at most ``max_wait_s`` for the batch to fill, and runs the batch
function in a worker thread (ONNX Runtime releases the GIL, so the loop keeps answering
``/health`` and parsing uploads meanwhile). Up to ``concurrency`` batches compute at once;
while they do the next one gathers, so under load batches fill without any waiting.

The queue is bounded: :meth:`MicroBatcher.submit` raises :class:`QueueFullError` instead of
letting latency grow without limit (the server answers 503 with ``Retry-After``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import traceback
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from loguru import logger

__all__ = ["BatchResult", "MicroBatcher", "QueueFullError", "StoppedError"]

P = TypeVar("P")
R = TypeVar("R")


class QueueFullError(Exception):
    """The queue has no room for the request (answer 503 with Retry-After)."""


class StoppedError(Exception):
    """The batcher is shutting down and takes no new work (answer 503)."""


@dataclass(frozen=True)
class BatchResult(Generic[R]):
    """What a request gets back: its value and where its time went.

    Attributes:
        value: The batch function's result for this item.
        queue_s: Seconds from submission until its batch started computing.
        compute_s: Seconds the batch function ran.
        batch_size: Items in the batch it ran in.
    """

    value: R
    queue_s: float
    compute_s: float
    batch_size: int


@dataclass
class _Item(Generic[P, R]):
    payload: P
    future: asyncio.Future[BatchResult[R]]
    submitted: float = field(default_factory=time.perf_counter)


BatchFunction = Callable[[Sequence[P]], Sequence[R]]


def _traceback_text(exc: BaseException) -> str:
    return "".join(traceback.format_exception(exc)).rstrip()


class MicroBatcher(Generic[P, R]):
    """Group items into batches and run ``function`` on them in ``executor``.

    Args:
        function: Maps a list of payloads to a list of results of the same length. Runs in
            ``executor``; an exception fails every item of that batch.
        executor: Where ``function`` runs.
        max_batch: Most items per call.
        max_wait_s: Longest time the first item of a batch waits for others (0: never wait).
        queue_size: Most items waiting; more are refused with :class:`QueueFullError`.
        on_batch: Called on the loop after each batch with ``(batch_size, compute_s)``.
        describe_error: Turns a failed batch's exception into the text logged (default: its
            traceback without variable values; a server passes one that scrubs secrets).
        after: Called with a batch's payloads and results in ``after_executor`` before the
            batch's futures resolve (the server writes the prediction log here). It runs
            while the next batch computes; with one worker and ``concurrency`` 1, batches
            finish in order. An exception fails every item of that batch.
        after_executor: Where ``after`` runs.
        concurrency: Batches computing at once (``executor`` needs as many workers). A batch
            takes its items when a slot is free, so with 1 batches run one after another.
    """

    def __init__(
        self,
        function: BatchFunction[P, R],
        *,
        executor: Executor,
        max_batch: int,
        max_wait_s: float,
        queue_size: int,
        on_batch: Callable[[int, float], None] | None = None,
        describe_error: Callable[[BaseException], str] | None = None,
        after: Callable[[Sequence[P], Sequence[R]], None] | None = None,
        after_executor: Executor | None = None,
        concurrency: int = 1,
    ) -> None:
        self._function = function
        self._executor = executor
        self.max_batch = max(1, max_batch)
        self.max_wait_s = max(0.0, max_wait_s)
        self.queue_size = max(1, queue_size)
        self._on_batch = on_batch
        self._describe_error = describe_error or _traceback_text
        if after is not None and after_executor is None:
            raise ValueError("an after-step needs its own executor (one worker keeps order)")
        self._after = after
        self._after_executor = after_executor
        self.concurrency = max(1, concurrency)
        self._slots: asyncio.Semaphore | None = None
        self._computing: set[asyncio.Task[None]] = set()
        self._finishing: set[asyncio.Task[None]] = set()
        self._pending: deque[_Item[P, R]] = deque()
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._running = 0

    @property
    def depth(self) -> int:
        """Items waiting for a batch (not yet computing)."""
        return len(self._pending)

    @property
    def in_flight(self) -> int:
        """Items whose batch is computing right now."""
        return self._running

    def start(self) -> None:
        """Start the batcher task on the running loop."""
        self._wakeup = asyncio.Event()
        self._slots = asyncio.Semaphore(self.concurrency)
        self._stopping = False
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="micro-batcher")

    def submit(self, payloads: Sequence[P]) -> list[asyncio.Future[BatchResult[R]]]:
        """Queue payloads that belong to one request (all of them or none).

        Returns:
            One future per payload, resolved with a :class:`BatchResult`.

        Raises:
            QueueFullError: Not enough room for every payload.
            StoppedError: The batcher is stopping.
        """
        if self._stopping or self._wakeup is None:
            raise StoppedError("the server is shutting down")
        if len(self._pending) + len(payloads) > self.queue_size:
            raise QueueFullError(
                f"{len(self._pending)} images are waiting, the queue holds {self.queue_size}"
            )
        loop = asyncio.get_running_loop()
        items = [_Item[P, R](payload, loop.create_future()) for payload in payloads]
        self._pending.extend(items)
        self._wakeup.set()
        return [item.future for item in items]

    async def stop(self) -> None:
        """Refuse new work, finish everything queued (after-steps too), then end the task."""
        self._stopping = True
        if self._wakeup is not None:
            self._wakeup.set()
        if self._task is not None:
            await self._task
            self._task = None

    async def _wait_for_items(self) -> None:
        assert self._wakeup is not None
        while not self._pending and not self._stopping:
            self._wakeup.clear()
            await self._wakeup.wait()
        if self.max_wait_s <= 0 or self._stopping:
            return
        deadline = asyncio.get_running_loop().time() + self.max_wait_s
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout_at(deadline):
                while len(self._pending) < self.max_batch and not self._stopping:
                    self._wakeup.clear()
                    await self._wakeup.wait()

    def _take_batch(self) -> list[_Item[P, R]]:
        batch: list[_Item[P, R]] = []
        while self._pending and len(batch) < self.max_batch:
            item = self._pending.popleft()
            # A request that timed out or disconnected cancelled its future: skip its work.
            if not item.future.done():
                batch.append(item)
        return batch

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        assert self._slots is not None
        while True:
            # A free slot first, then the items: a batch takes what gathered meanwhile.
            await self._slots.acquire()
            await self._wait_for_items()
            if self._stopping and not self._pending:
                self._slots.release()
                break
            batch = self._take_batch()
            if not batch:
                self._slots.release()
                continue
            self._running += len(batch)
            task = loop.create_task(self._compute(batch))
            self._computing.add(task)
            task.add_done_callback(self._computing.discard)
        if self._computing:
            await asyncio.wait(set(self._computing))
        if self._finishing:
            await asyncio.wait(set(self._finishing))

    async def _compute(self, batch: list[_Item[P, R]]) -> None:
        assert self._slots is not None
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        try:
            results = await loop.run_in_executor(
                self._executor, self._function, [item.payload for item in batch]
            )
            if len(results) != len(batch):
                raise RuntimeError(
                    f"batch function returned {len(results)} results for {len(batch)} items"
                )
        except Exception as exc:
            self._fail(batch, exc)
            return
        finally:
            self._running -= len(batch)
            self._slots.release()
        compute_s = time.perf_counter() - started
        if self._on_batch is not None:
            self._on_batch(len(batch), compute_s)
        if self._after is None:
            self._resolve(batch, results, started, compute_s)
        else:
            # The next batch computes while this one's after-step runs.
            task = loop.create_task(self._finish(batch, results, started, compute_s))
            self._finishing.add(task)
            task.add_done_callback(self._finishing.discard)

    async def _finish(
        self, batch: list[_Item[P, R]], results: Sequence[R], started: float, compute_s: float
    ) -> None:
        assert self._after is not None
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(
                self._after_executor, self._after, [item.payload for item in batch], results
            )
        except Exception as exc:
            self._fail(batch, exc)
            return
        self._resolve(batch, results, started, compute_s)

    def _fail(self, batch: list[_Item[P, R]], exc: Exception) -> None:
        logger.error(
            "inference failed for a batch of {}: {}", len(batch), self._describe_error(exc)
        )
        for item in batch:
            if not item.future.done():
                item.future.set_exception(exc)

    def _resolve(
        self, batch: list[_Item[P, R]], results: Sequence[R], started: float, compute_s: float
    ) -> None:
        for item, value in zip(batch, results, strict=True):
            if not item.future.done():
                item.future.set_result(
                    BatchResult(value, started - item.submitted, compute_s, len(batch))
                )
