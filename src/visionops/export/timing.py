"""Wall-clock timing of repeated calls, interleaved so background load hits every entry alike.

Used by ``visionops benchmark``, export's int8 speed-up and the scripts in ``benchmarks/``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from visionops.inference.runtime import INPUT_NAME, to_layout

if TYPE_CHECKING:
    import onnxruntime

__all__ = ["Timing", "compare_latency", "time_interleaved"]


@dataclass(frozen=True)
class Timing:
    """Wall times of repeated calls, in milliseconds."""

    samples_ms: tuple[float, ...]

    @property
    def p50(self) -> float:
        """Median."""
        return float(np.percentile(self.samples_ms, 50))

    @property
    def p95(self) -> float:
        """95th percentile."""
        return float(np.percentile(self.samples_ms, 95))


def time_interleaved(
    calls: Mapping[str, Callable[[], object]],
    *,
    warmup: int = 3,
    min_calls: int = 10,
    min_seconds: float = 1.0,
    max_calls: int = 1000,
) -> dict[str, Timing]:
    """Time several calls in round-robin, after ``warmup`` untimed calls of each.

    Each round calls every entry once, so a burst of load from another process slows every
    engine alike instead of whichever happened to be measured at the time. Rounds repeat
    until ``min_calls`` rounds and ``min_seconds`` per entry are reached (or ``max_calls``).

    Args:
        calls: Named zero-argument callables (one engine on one prepared batch each).
        warmup: Untimed calls of each before timing.
        min_calls: Fewest timed calls of each.
        min_seconds: Least time spent per entry.
        max_calls: Most timed calls of each.

    Returns:
        The per-call wall times of each entry.

    Examples:
        >>> timings = time_interleaved({"sum": lambda: sum(range(1000))}, min_seconds=0.01)
        >>> timings["sum"].p50 > 0
        True
    """
    for call in calls.values():
        for _ in range(warmup):
            call()
    samples: dict[str, list[float]] = {name: [] for name in calls}
    budget = min_seconds * max(1, len(calls))
    began = time.perf_counter()
    rounds = 0
    while rounds < max_calls and (rounds < min_calls or time.perf_counter() - began < budget):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            samples[name].append((time.perf_counter() - start) * 1000.0)
        rounds += 1
    return {name: Timing(tuple(values)) for name, values in samples.items()}


def compare_latency(
    sessions: Mapping[str, onnxruntime.InferenceSession],
    images_nhwc: NDArray[np.uint8],
    layout: str,
    *,
    min_seconds: float = 0.25,
) -> dict[str, float]:
    """Median latency (ms) of ONNX Runtime sessions on one prepared batch, interleaved."""
    feed = {INPUT_NAME: to_layout(images_nhwc, layout)}
    timings = time_interleaved(
        {name: partial(session.run, None, feed) for name, session in sessions.items()},
        min_seconds=min_seconds,
    )
    return {name: timing.p50 for name, timing in timings.items()}
