"""The statistical tests: exact algebra, calibrated false alarms and power on fixed seeds."""

from __future__ import annotations

import numpy as np
import pytest

from visionops.drift.stats import (
    benjamini_hochberg,
    bonferroni,
    chi_square_test,
    gaussian_kernel,
    ks_tests,
    median_bandwidth,
    mmd_permutation_test,
)


def _naive_unbiased_mmd2(x: np.ndarray, y: np.ndarray, sigma: float) -> float:
    def k(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        d = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
        return np.asarray(np.exp(-d / (2 * sigma**2)))

    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    m, n = len(x), len(y)
    return float(
        (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
        + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
        - 2 * kxy.mean()
    )


@pytest.mark.parametrize(("m", "n"), [(40, 25), (25, 40)])
def test_mmd2_matches_the_textbook_formula(m: int, n: int) -> None:
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(m, 5)), rng.normal(0.5, 1, size=(n, 5))
    result = mmd_permutation_test(x, y, permutations=50, bandwidth=2.0)
    assert result.mmd2 == pytest.approx(_naive_unbiased_mmd2(x, y, 2.0), rel=1e-4, abs=1e-6)


def test_permuted_statistics_are_those_of_recomputed_kernels() -> None:
    # The indicator algebra must give, for a relabelling, what a fresh kernel on the
    # relabelled samples gives: check the whole null distribution's p-value both ways.
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(30, 3)), rng.normal(0.3, 1, size=(20, 3))
    fast = mmd_permutation_test(x, y, permutations=199, rng=np.random.default_rng(5), bandwidth=1.5)
    pooled = np.concatenate([x, y])
    replay = np.random.default_rng(5)
    exceed = 0
    for _ in range(199):
        order = np.argsort(replay.random(50))
        group = np.zeros(50, bool)
        group[order[:20]] = True  # the smaller group, as the fast path indicates it
        value = _naive_unbiased_mmd2(pooled[~group], pooled[group], 1.5)
        exceed += value >= fast.mmd2 - 1e-6 * abs(fast.mmd2)
    assert fast.p_value == pytest.approx((1 + exceed) / 200, abs=1.5 / 200)


def test_p_value_formula_and_range() -> None:
    rng = np.random.default_rng(3)
    result = mmd_permutation_test(
        rng.normal(size=(50, 4)), rng.normal(3, 1, size=(50, 4)), permutations=99
    )
    assert result.p_value == pytest.approx(1 / 100)  # nothing beats a 3-sd shift
    assert result.permutations == 99


def test_mmd_false_alarms_and_power_on_synthetic_embeddings() -> None:
    rng = np.random.default_rng(4)
    trials, alpha = 60, 0.05
    false_alarms = detections = 0
    for _ in range(trials):
        reference = rng.normal(size=(150, 16))
        same = rng.normal(size=(60, 16))
        shifted = rng.normal(size=(60, 16)) + 0.3  # 1.2 sd along the diagonal
        false_alarms += (
            mmd_permutation_test(reference, same, permutations=99, rng=rng).p_value < alpha
        )
        detections += (
            mmd_permutation_test(reference, shifted, permutations=99, rng=rng).p_value < alpha
        )
    assert false_alarms / trials <= 0.12  # 0.05 + 2.5 binomial standard errors
    assert detections / trials >= 0.9


def test_median_bandwidth_and_kernel() -> None:
    points = np.array([[0.0, 0.0], [3.0, 4.0], [6.0, 8.0]])
    assert median_bandwidth(points) == pytest.approx(5.0)
    kernel = gaussian_kernel(points, 5.0)
    assert kernel[0, 1] == pytest.approx(np.exp(-0.5), rel=1e-6)
    assert np.allclose(np.diag(kernel), 1.0)
    assert median_bandwidth(np.zeros((4, 3))) == 1.0


def test_benjamini_hochberg_and_bonferroni() -> None:
    adjusted = benjamini_hochberg([0.01, 0.04, 0.03, 0.5])
    assert adjusted.tolist() == pytest.approx([0.04, 0.0533333, 0.0533333, 0.5])
    assert bonferroni([0.01, 0.2, 0.5]) == pytest.approx(0.03)
    assert bonferroni([0.9, 0.8]) == 1.0


def test_ks_tests_find_the_shifted_column_only() -> None:
    rng = np.random.default_rng(6)
    reference = rng.normal(size=(300, 3))
    current = rng.normal(size=(200, 3))
    current[:, 1] += 0.8
    results = ks_tests(["a", "b", "c"], reference, current)
    assert [r.name for r in results] == ["a", "b", "c"]
    assert results[1].p_adjusted < 1e-6 and results[1].statistic > 0.25
    assert results[0].p_adjusted > 0.05 and results[2].p_adjusted > 0.05
    assert results[1].current_mean - results[1].reference_mean == pytest.approx(0.8, abs=0.4)


def test_chi_square_on_predicted_classes() -> None:
    same = chi_square_test(np.repeat([0, 1, 2], 50), np.repeat([0, 1, 2], 20), 4)
    assert same.p_value == pytest.approx(1.0) and same.cramers_v == pytest.approx(0.0)
    assert same.reference_counts == [50, 50, 50, 0]
    skewed = chi_square_test(np.repeat([0, 1, 2], 50), np.repeat([0, 0, 2], 20), 4)
    assert skewed.p_value < 1e-4 and skewed.cramers_v > 0.3
    single = chi_square_test(np.zeros(10, int), np.zeros(10, int), 3)
    assert single.p_value == 1.0


def test_mmd_results_are_those_of_the_first_implementation() -> None:
    """Speed-ups keep every value: drift reports and their verdicts stay reproducible.

    The values were computed by the implementation of 2026-12-06 (full sorts for the
    permutations, np.triu_indices for the median heuristic, the distances computed twice).
    The p-values are exact; the statistics to 1e-3 relative: the float32 distances come from
    BLAS kernels that round differently on another CPU (the Xeon that made them, an EPYC), and
    a distance next to the median can move the median heuristic's bandwidth (2e-4 seen).
    """
    rng = np.random.default_rng(42)
    reference = rng.normal(size=(90, 16))
    current = rng.normal(size=(400, 16)) + 0.15
    shifted = mmd_permutation_test(
        reference, current, permutations=499, rng=np.random.default_rng(7)
    )
    assert (shifted.mmd2, shifted.p_value, shifted.bandwidth) == (
        pytest.approx(0.006306987471909498, rel=1e-3),
        0.002,
        pytest.approx(5.563071250915527, rel=1e-3),
    )
    same = mmd_permutation_test(
        reference, reference[::-1] + 0.0, permutations=499, rng=np.random.default_rng(7)
    )
    assert (same.mmd2, same.p_value, same.bandwidth) == (
        pytest.approx(-0.008832865571955839, rel=1e-3),
        1.0,
        pytest.approx(5.5290985107421875, rel=1e-3),
    )
