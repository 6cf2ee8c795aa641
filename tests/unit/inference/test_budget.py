"""The CPU budget that samples optional per-item work (serve's image statistics)."""

from __future__ import annotations

import random

import pytest

from visionops.inference.budget import CpuBudget


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def drive(
    budget: CpuBudget, clock: Clock, *, per_second: int, cost_s: float, seconds: int
) -> tuple[int, int, float]:
    """Items arriving evenly; returns (arrived, admitted, CPU spent) over the last half."""
    arrived = admitted = 0
    spent = 0.0
    for step in range(per_second * seconds):
        clock.now = step / per_second
        take = budget.admit()
        if take:
            budget.spend(cost_s)
        if step >= per_second * seconds // 2:
            arrived += 1
            admitted += take
            spent += cost_s if take else 0.0
    return arrived, admitted, spent


def test_every_item_is_measured_while_the_work_fits_its_share() -> None:
    clock = Clock()
    budget = CpuBudget(0.02, cores=2, clock=clock, rng=random.Random(0))
    # 20 items/s x 1 ms = 20 ms of CPU per second, under the 40 ms the share allows.
    arrived, admitted, _ = drive(budget, clock, per_second=20, cost_s=0.001, seconds=10)
    assert admitted == arrived
    status = budget.status()
    assert status.probability == 1.0 and status.skipped == 0
    assert status.cost_ms == pytest.approx(1.0)


def test_under_load_a_random_share_keeps_the_cpu_within_the_budget() -> None:
    clock = Clock()
    budget = CpuBudget(0.02, cores=2, clock=clock, rng=random.Random(0))
    # 160 items/s x 1 ms = 160 ms/s wanted; the share allows 40 ms/s: a quarter of them.
    arrived, admitted, spent = drive(budget, clock, per_second=160, cost_s=0.001, seconds=20)
    assert admitted / arrived == pytest.approx(0.25, abs=0.03)
    assert spent / 10 == pytest.approx(0.04, rel=0.12)  # CPU seconds per second
    status = budget.status()
    assert status.probability == pytest.approx(0.25)
    assert status.admitted + status.skipped == 160 * 20


def test_the_sample_is_random_not_every_kth_item() -> None:
    """A client sending cameras A, B, C, D in turn gets each measured at the same rate."""
    clock = Clock()
    budget = CpuBudget(0.02, cores=2, clock=clock, rng=random.Random(1))
    counts = [0, 0, 0, 0]
    for step in range(160 * 30):
        clock.now = step / 160
        if budget.admit():
            budget.spend(0.001)
            if step >= 160 * 5:
                counts[step % 4] += 1
    assert min(counts) / max(counts) > 0.8


def test_the_probability_recovers_when_the_load_goes() -> None:
    clock = Clock()
    budget = CpuBudget(0.02, cores=1, clock=clock, rng=random.Random(2))
    drive(budget, clock, per_second=200, cost_s=0.001, seconds=5)
    assert budget.status().probability < 0.2
    clock.now += 60.0  # a quiet minute, then one request
    assert budget.admit()
    assert budget.status().probability == 1.0


def test_a_share_outside_its_range_is_refused() -> None:
    with pytest.raises(ValueError, match="share"):
        CpuBudget(0.0, cores=2)
