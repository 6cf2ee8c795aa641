"""The local ``predict`` engine: decoding threads feed ONNX Runtime, batch after batch.

As in ``serve``'s in-process path, a thread pool (one thread per core) reads and decodes the
next batches while ONNX Runtime, which releases the GIL, computes the current one. Only
:data:`LOOKAHEAD` batches are in flight at any time and each finished batch goes straight to
the sinks (the ``--out`` writer, the prediction log), so memory stays flat however many
images there are.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from visionops.inference.batch import BatchOutcome, BatchPredictor, Loaded
from visionops.inference.runtime import available_cores
from visionops.progress import NULL_PROGRESS, ProgressReporter

__all__ = ["LOOKAHEAD", "Sink", "StreamSummary", "stream_predictions"]

LOOKAHEAD = 3
KEPT_FAILURES = 100
Sink = Callable[[BatchOutcome], None]


@dataclass
class StreamSummary:
    """What a streamed job did.

    Attributes:
        inputs: Inputs read.
        predicted: Inputs with an answer.
        failures: ``(input, reason)`` of the first :data:`KEPT_FAILURES` that failed.
        failed: Inputs that could not be read or decoded.
        seconds: Wall time, session start excluded.
    """

    inputs: int = 0
    predicted: int = 0
    failed: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0


def _chunks(items: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def stream_predictions(
    predictor: BatchPredictor,
    inputs: Sequence[str],
    sinks: Sequence[Sink],
    *,
    batch_size: int = 16,
    decode_threads: int = 0,
    progress: ProgressReporter = NULL_PROGRESS,
) -> StreamSummary:
    """Predict every input, handing each finished batch to every sink in order.

    Args:
        predictor: The bundle's predictor.
        inputs: Local paths or URLs (see :func:`~visionops.inference.inputs.list_inputs`).
        sinks: Called with each batch's outcome, in input order.
        batch_size: Images per model call.
        decode_threads: Threads reading and decoding (0: one per core, as ``serve``).
        progress: Progress reporter (one step per input).

    Returns:
        Counts, the first failures and the wall time.
    """
    summary = StreamSummary()
    started = time.perf_counter()
    threads = decode_threads or available_cores()
    chunks = _chunks(inputs, batch_size)
    bar = progress.start(f"predict {len(inputs)} images", total=len(inputs))
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="decode") as pool:
        pending: deque[list[Future[Loaded]]] = deque()

        def submit_next() -> None:
            chunk = next(chunks, None)
            if chunk is not None:
                pending.append([pool.submit(predictor.load, path) for path in chunk])

        try:
            for _ in range(LOOKAHEAD):
                submit_next()
            while pending:
                loaded = [future.result() for future in pending.popleft()]
                submit_next()
                outcome = predictor.predict(loaded)
                for sink in sinks:
                    sink(outcome)
                for prediction in outcome.predictions:
                    if prediction.error is not None:
                        summary.failed += 1
                        if len(summary.failures) < KEPT_FAILURES:
                            summary.failures.append((prediction.path, prediction.error))
                summary.inputs += len(loaded)
                summary.predicted += len(outcome.records)
                bar.advance(len(loaded))
        finally:
            for futures in pending:
                for future in futures:
                    future.cancel()
            bar.close()
    summary.seconds = time.perf_counter() - started
    return summary
