"""The micro-batcher: batching, bounded queue, failures, cancellation, draining on stop."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import pytest
from loguru import logger

from visionops.serve.batcher import MicroBatcher, QueueFullError, StoppedError


class Recorder:
    """A batch function that doubles numbers and remembers every batch it saw.

    ``entered`` is set as soon as a batch starts computing; with a ``gate`` the batch then
    holds until the gate opens, so a test knows exactly what is computing and what waits.
    """

    def __init__(self, gate: threading.Event | None = None) -> None:
        self.batches: list[list[int]] = []
        self.threads: set[str] = set()
        self.gate = gate
        self.entered = threading.Event()

    def __call__(self, items: Sequence[int]) -> list[int]:
        self.entered.set()
        if self.gate is not None:
            self.gate.wait(timeout=10)
        self.threads.add(threading.current_thread().name)
        self.batches.append(list(items))
        return [2 * item for item in items]


def make(function: Recorder, **options: float) -> tuple[MicroBatcher[int, int], ThreadPoolExecutor]:
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")
    settings = {"max_batch": 4, "max_wait_s": 0.05, "queue_size": 16, **options}
    batcher: MicroBatcher[int, int] = MicroBatcher(
        function,
        executor=executor,
        max_batch=int(settings["max_batch"]),
        max_wait_s=settings["max_wait_s"],
        queue_size=int(settings["queue_size"]),
    )
    return batcher, executor


def test_groups_up_to_max_batch_off_the_loop() -> None:
    recorder = Recorder()

    async def scenario() -> list[int]:
        batcher, executor = make(recorder, max_wait_s=0.2)
        batcher.start()
        futures = batcher.submit(list(range(10)))
        results = await asyncio.gather(*futures)
        await batcher.stop()
        executor.shutdown()
        return [r.value for r in results] + [r.batch_size for r in results]

    values = asyncio.run(scenario())
    assert values[:10] == [2 * i for i in range(10)]
    assert [len(b) for b in recorder.batches] == [4, 4, 2]
    assert values[10:] == [4] * 8 + [2] * 2
    assert recorder.threads == {"inference_0"}


def test_no_wait_runs_what_is_there() -> None:
    recorder = Recorder()

    async def scenario() -> None:
        batcher, executor = make(recorder, max_wait_s=0.0)
        batcher.start()
        first = await batcher.submit([1])[0]
        assert first.batch_size == 1
        assert first.queue_s >= 0
        assert first.compute_s >= 0
        await batcher.stop()
        executor.shutdown()

    asyncio.run(scenario())
    assert recorder.batches == [[1]]


def test_bounded_queue_refuses_whole_requests() -> None:
    gate = threading.Event()
    recorder = Recorder(gate)

    async def scenario() -> None:
        batcher, executor = make(recorder, max_batch=1, max_wait_s=0.0, queue_size=3)
        batcher.start()
        first = batcher.submit([0])
        # Wait until the first item is computing (held by the gate), not for a guessed time.
        assert await asyncio.to_thread(recorder.entered.wait, 10)
        assert batcher.in_flight == 1
        queued = batcher.submit([1, 2, 3])
        assert batcher.depth == 3
        with pytest.raises(QueueFullError):
            batcher.submit([4])
        assert batcher.depth == 3  # the refused request left nothing behind
        gate.set()
        await asyncio.gather(*first, *queued)
        (again,) = batcher.submit([5])  # room again
        assert (await again).value == 10
        await batcher.stop()
        executor.shutdown()

    asyncio.run(scenario())
    assert [item for batch in recorder.batches for item in batch] == [0, 1, 2, 3, 5]


def test_a_failing_batch_fails_its_items_only() -> None:
    calls: list[list[int]] = []

    def flaky(items: Sequence[int]) -> list[int]:
        calls.append(list(items))
        if 13 in items:
            raise ValueError("unlucky")
        return list(items)

    async def scenario() -> None:
        executor = ThreadPoolExecutor(max_workers=1)
        batcher: MicroBatcher[int, int] = MicroBatcher(
            flaky, executor=executor, max_batch=2, max_wait_s=0.0, queue_size=8
        )
        batcher.start()
        bad = batcher.submit([13])
        with pytest.raises(ValueError, match="unlucky"):
            await bad[0]
        good = await batcher.submit([7])[0]
        assert good.value == 7
        await batcher.stop()
        executor.shutdown()

    asyncio.run(scenario())


def test_cancelled_items_are_skipped() -> None:
    gate = threading.Event()
    recorder = Recorder(gate)

    async def scenario() -> None:
        batcher, executor = make(recorder, max_batch=1, max_wait_s=0.0)
        batcher.start()
        running = batcher.submit([1])
        assert await asyncio.to_thread(recorder.entered.wait, 10)
        abandoned = batcher.submit([2])
        abandoned[0].cancel()  # what a request that hit its deadline does
        kept = batcher.submit([3])
        gate.set()
        await asyncio.gather(*running, *kept)
        await batcher.stop()
        executor.shutdown()

    asyncio.run(scenario())
    assert recorder.batches == [[1], [3]]


def test_stop_finishes_queued_work_and_refuses_new() -> None:
    recorder = Recorder()

    async def scenario() -> None:
        batcher, executor = make(recorder, max_batch=8, max_wait_s=5.0)
        batcher.start()
        pending = batcher.submit([1, 2, 3])  # would wait 5 s for the batch to fill
        await batcher.stop()
        assert all(f.done() for f in pending)
        assert [f.result().value for f in pending] == [2, 4, 6]
        with pytest.raises(StoppedError):
            batcher.submit([4])
        executor.shutdown()

    asyncio.run(scenario())
    assert recorder.batches == [[1, 2, 3]]


def test_a_failing_batch_is_logged_through_describe_error() -> None:
    logged: list[str] = []
    handler = logger.add(logged.append, level="ERROR", format="{message}")

    def broken(items: Sequence[int]) -> list[int]:
        secret = "hunter2"  # a local a traceback with variable values would show
        raise RuntimeError(f"boom {len(secret)}")

    async def scenario() -> None:
        executor = ThreadPoolExecutor(max_workers=1)
        batcher: MicroBatcher[int, int] = MicroBatcher(
            broken,
            executor=executor,
            max_batch=1,
            max_wait_s=0.0,
            queue_size=2,
            describe_error=lambda exc: f"described: {exc}",
        )
        batcher.start()
        with pytest.raises(RuntimeError):
            await batcher.submit([1])[0]
        await batcher.stop()
        executor.shutdown()

    try:
        asyncio.run(scenario())
    finally:
        logger.remove(handler)
    assert logged == ["inference failed for a batch of 1: described: boom 7\n"]
    assert "hunter2" not in "".join(logged)


def test_the_after_step_runs_while_the_next_batch_computes() -> None:
    recorder = Recorder()
    writing = threading.Event()
    release = threading.Event()
    written: list[tuple[list[int], list[int], str]] = []

    def after(items: Sequence[int], results: Sequence[int]) -> None:
        if items[0] == 1:  # the first batch's write holds until released
            writing.set()
            release.wait(timeout=10)
        written.append((list(items), list(results), threading.current_thread().name))

    async def scenario() -> None:
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")
        log_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="log")
        batcher: MicroBatcher[int, int] = MicroBatcher(
            recorder,
            executor=executor,
            max_batch=1,
            max_wait_s=0.0,
            queue_size=8,
            after=after,
            after_executor=log_pool,
        )
        batcher.start()
        (first,) = batcher.submit([1])
        assert await asyncio.to_thread(writing.wait, 10)
        (second,) = batcher.submit([2])
        # The second batch computes although the first one's after-step has not finished...
        for _ in range(1000):
            if recorder.batches == [[1], [2]]:
                break
            await asyncio.sleep(0.001)
        assert recorder.batches == [[1], [2]]
        # ...and no answer is given before its after-step is done.
        assert not first.done()
        assert not second.done()
        release.set()
        assert (await first).value == 2
        assert (await second).value == 4
        await batcher.stop()
        executor.shutdown()
        log_pool.shutdown()

    asyncio.run(scenario())
    assert written == [([1], [2], "log_0"), ([2], [4], "log_0")]  # in order, in its thread


def test_a_failing_after_step_fails_its_batch() -> None:
    def after(items: Sequence[int], results: Sequence[int]) -> None:
        raise OSError("disk full")

    async def scenario() -> None:
        executor, log_pool = ThreadPoolExecutor(1), ThreadPoolExecutor(1)
        batcher: MicroBatcher[int, int] = MicroBatcher(
            Recorder(),
            executor=executor,
            max_batch=4,
            max_wait_s=0.0,
            queue_size=8,
            after=after,
            after_executor=log_pool,
        )
        batcher.start()
        with pytest.raises(OSError, match="disk full"):
            await batcher.submit([1])[0]
        await batcher.stop()
        executor.shutdown()
        log_pool.shutdown()

    asyncio.run(scenario())


def test_concurrency_runs_that_many_batches_at_once() -> None:
    both_in = threading.Barrier(2, timeout=10)  # breaks (and fails the batch) if alone
    seen: list[list[int]] = []

    def function(items: Sequence[int]) -> list[int]:
        both_in.wait()
        seen.append(list(items))
        return [2 * item for item in items]

    async def scenario() -> list[int]:
        executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="inference")
        batcher: MicroBatcher[int, int] = MicroBatcher(
            function, executor=executor, max_batch=2, max_wait_s=0, queue_size=16, concurrency=2
        )
        batcher.start()
        first = batcher.submit([1, 2])
        await asyncio.sleep(0)  # the batcher takes the first batch before the second comes
        second = batcher.submit([3, 4])
        results = await asyncio.gather(*first, *second)
        await batcher.stop()
        executor.shutdown()
        return [r.value for r in results]

    assert asyncio.run(scenario()) == [2, 4, 6, 8]
    assert sorted(seen) == [[1, 2], [3, 4]]
