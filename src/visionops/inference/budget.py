"""A share of the machine's CPU that optional per-item work may take, kept by sampling items.

``serve`` measures each upload's image statistics, the drift input, at about 0.9 ms of CPU
per upload: a tenth of an int8 ResNet-18's. While the server has room every upload is
measured; under load that cost would come straight out of the model's throughput.
:class:`CpuBudget` admits each item at random, with the probability that keeps the work's
measured CPU time under its share of the machine: every item at low load, a random sample
above it. The choice is random rather than every k-th item, so that a client sending the same
cameras in the same order every time cannot bias which ones are measured. The drift tests
compare distributions, and a uniform random sample keeps them.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["BudgetStatus", "CpuBudget"]


@dataclass(frozen=True)
class BudgetStatus:
    """Where a :class:`CpuBudget` stands.

    Attributes:
        probability: The chance that the next item is admitted (1 while there is room).
        admitted: Items admitted so far.
        skipped: Items left out so far.
        cost_ms: The work's mean CPU milliseconds per admitted item (None before the first).
    """

    probability: float
    admitted: int
    skipped: int
    cost_ms: float | None


class CpuBudget:
    """Admit items at random so that their work stays within a share of the machine's CPU.

    Every ``window_s`` the admission probability is set from the last window's arrivals and
    the work's mean CPU cost per item (an average that halves the weight of older windows):
    ``min(1, share x cores / (arrivals per second x cost))``. Safe to call from several
    threads.

    Args:
        share: The most of the machine's CPU time the work may take (0 < share <= 1).
        cores: Cores of the machine (or of this worker process).
        window_s: Seconds between updates of the probability.
        clock: Wall clock in seconds (tests pass their own).
        rng: The random source of the decisions.

    Examples:
        >>> budget = CpuBudget(0.02, cores=2)
        >>> if budget.admit():  # doctest: +SKIP
        ...     started = time.thread_time()
        ...     measure(image)
        ...     budget.spend(time.thread_time() - started)
    """

    def __init__(
        self,
        share: float,
        cores: int,
        *,
        window_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        if not 0 < share <= 1:
            raise ValueError(f"share must be in (0, 1], not {share}")
        self.cpu_per_second = share * max(1, cores)
        self.window_s = window_s
        self._clock = clock
        self._random = (rng or random.Random()).random
        self._lock = threading.Lock()
        self._probability = 1.0
        self._cost: float | None = None
        self._window_start = clock()
        self._arrivals = 0
        self._spent = 0.0
        self._spent_items = 0
        self._admitted = 0
        self._skipped = 0

    def admit(self) -> bool:
        """Whether to do the work for the next item (call once per item)."""
        with self._lock:
            self._arrivals += 1
            now = self._clock()
            if now - self._window_start >= self.window_s:
                self._update(now)
            admitted = self._probability >= 1.0 or self._random() < self._probability
            if admitted:
                self._admitted += 1
            else:
                self._skipped += 1
            return admitted

    def spend(self, cpu_seconds: float) -> None:
        """Record the CPU time one admitted item's work took."""
        with self._lock:
            self._spent += cpu_seconds
            self._spent_items += 1

    def status(self) -> BudgetStatus:
        """The probability now and the counts so far."""
        with self._lock:
            cost = self._cost
            if self._spent_items:
                cost = self._blend(self._spent / self._spent_items)
            return BudgetStatus(
                probability=self._probability,
                admitted=self._admitted,
                skipped=self._skipped,
                cost_ms=None if cost is None else cost * 1000.0,
            )

    def _blend(self, window_cost: float) -> float:
        return window_cost if self._cost is None else (self._cost + window_cost) / 2.0

    def _update(self, now: float) -> None:
        elapsed = now - self._window_start
        if self._spent_items:
            self._cost = self._blend(self._spent / self._spent_items)
        # The item that triggers the update is not counted: it arrived after the window.
        arrivals_per_second = (self._arrivals - 1) / elapsed
        demand = arrivals_per_second * (self._cost or 0.0)
        self._probability = 1.0 if demand <= self.cpu_per_second else self.cpu_per_second / demand
        self._window_start = now
        self._arrivals = 1
        self._spent = 0.0
        self._spent_items = 0
