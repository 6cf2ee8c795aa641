"""The two-sample tests behind ``visionops drift``: MMD² by permutation, KS, chi-square.

Every test answers "could reference and current come from the same distribution?" with a
p-value and an effect size. Families of tests are combined with Benjamini–Hochberg (whose
smallest adjusted p-value is Simes' test of "nothing changed") and the families with
Bonferroni, so the overall verdict raises a false alarm at most at rate α.

The MMD permutation test computes the kernel matrix of the pooled sample once; each
permutation is then an indicator vector, and ``K @ A`` for a block of indicator columns gives
every permuted statistic at once (one triangular matrix product per block of permutations
instead of a kernel per permutation).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "KSResult",
    "MMDResult",
    "benjamini_hochberg",
    "bonferroni",
    "chi_square_test",
    "gaussian_kernel",
    "ks_tests",
    "median_bandwidth",
    "mmd_permutation_test",
]

_PERMUTATION_BLOCK = 128
"""Permutations per matrix product: bounds memory at ``N x 128`` floats."""
_BANDWIDTH_SAMPLE = 2000


@dataclass(frozen=True)
class MMDResult:
    """The outcome of :func:`mmd_permutation_test`.

    Attributes:
        mmd2: Unbiased MMD² of the two samples (0 in expectation when nothing changed).
        p_value: ``(1 + #{permuted ≥ observed}) / (1 + permutations)``.
        bandwidth: The Gaussian kernel's σ (median heuristic).
        permutations: Permutations drawn.
    """

    mmd2: float
    p_value: float
    bandwidth: float
    permutations: int


@dataclass(frozen=True)
class KSResult:
    """Kolmogorov–Smirnov test of one feature.

    Attributes:
        name: The feature.
        statistic: KS distance D (largest gap between the two CDFs; the effect size).
        p_value: Raw two-sided p-value.
        p_adjusted: Benjamini–Hochberg adjusted p-value within its family.
        reference_mean: Mean in the reference.
        current_mean: Mean in the current sample.
    """

    name: str
    statistic: float
    p_value: float
    p_adjusted: float
    reference_mean: float
    current_mean: float


def _squared_distances(a: NDArray[np.float32], b: NDArray[np.float32]) -> NDArray[np.float32]:
    distances = a @ b.T
    distances *= np.float32(-2.0)
    distances += np.einsum("ij,ij->i", a, a)[:, None]
    distances += np.einsum("ij,ij->i", b, b)[None, :]
    np.maximum(distances, 0.0, out=distances)
    return distances


def median_bandwidth(
    pooled: NDArray[np.floating[Any]], rng: np.random.Generator | None = None
) -> float:
    """The median heuristic: σ = median pairwise Euclidean distance (on ≤ 2,000 points).

    Args:
        pooled: ``(N, D)`` points.
        rng: Picks the subsample when there are more than 2,000 points.

    Returns:
        A positive bandwidth (1.0 when every point is identical).
    """
    points = np.asarray(pooled, dtype=np.float32)
    if len(points) > _BANDWIDTH_SAMPLE:
        rng = rng or np.random.default_rng(0)
        points = points[rng.choice(len(points), _BANDWIDTH_SAMPLE, replace=False)]
    return _median_distance(_squared_distances(points, points))


@functools.lru_cache(maxsize=2)
def _above_diagonal(size: int) -> NDArray[np.bool_]:
    """The cells above the diagonal of a ``size x size`` matrix (read-only; reused)."""
    mask = np.tri(size, dtype=bool)
    np.logical_not(mask, out=mask)
    mask.flags.writeable = False
    return mask


def _median_distance(distances: NDArray[np.float32]) -> float:
    """σ of the median heuristic from a matrix of squared distances (1.0 when all are 0)."""
    # A boolean mask reads the upper triangle in np.triu_indices' order at a third of its
    # cost; the online monitor tests a window of one size over and over.
    upper = distances[_above_diagonal(len(distances))]
    positive = upper[upper > 0]
    if positive.size == 0:
        return 1.0
    return float(np.sqrt(np.median(positive)))


def gaussian_kernel(pooled: NDArray[np.floating[Any]], bandwidth: float) -> NDArray[np.float32]:
    """``K[i, j] = exp(-|x_i - x_j|² / (2 σ²))`` as float32 (computed in place)."""
    points = np.asarray(pooled, dtype=np.float32)
    return _kernel_of(_squared_distances(points, points), bandwidth)


def _kernel_of(kernel: NDArray[np.float32], bandwidth: float) -> NDArray[np.float32]:
    """The Gaussian kernel from squared distances, computed in their array."""
    kernel *= np.float32(-0.5 / bandwidth**2)
    np.exp(kernel, out=kernel)
    np.fill_diagonal(kernel, 1.0)  # exactly: float32 cancellation leaves |x - x|² ≈ 1e-4
    return kernel


def _mmd2_from_sums(
    within_x: NDArray[np.float64], x_total: NDArray[np.float64], total: float, m: int, n: int
) -> NDArray[np.float64]:
    """Unbiased MMD² from ``a'Ka`` and ``a's`` (``s = K 1``), for indicator ``a`` of X.

    ``b = 1 - a`` is Y's indicator, so ``a'Kb = a's - a'Ka`` and ``b'Kb = T - 2a's + a'Ka``;
    the diagonal of a Gaussian kernel is 1, so removing it subtracts the group size.
    """
    cross = x_total - within_x
    within_y = total - 2.0 * x_total + within_x
    return (within_x - m) / (m * (m - 1)) + (within_y - n) / (n * (n - 1)) - 2.0 * cross / (m * n)


def _within_sums(
    kernel: NDArray[np.float32], indicators: NDArray[np.float32], group: int
) -> NDArray[np.float64]:
    """``a' K a`` for every indicator column ``a`` (each with ``group`` ones).

    ``K`` is symmetric with a unit diagonal, so ``a'Ka = 2 a'Ua - group`` with ``U`` its upper
    triangle: BLAS ``strmm`` multiplies by the triangle at half the cost of a full product.
    """
    from scipy.linalg.blas import strmm

    # kernel.T is the same symmetric matrix, already in the Fortran order BLAS wants.
    upper_product = strmm(1.0, kernel.T, np.asfortranarray(indicators), lower=0)
    half = np.einsum("ib,ib->b", indicators, upper_product, dtype=np.float64)
    return np.asarray(2.0 * half - group, dtype=np.float64)


def mmd_permutation_test(
    reference: NDArray[np.floating[Any]],
    current: NDArray[np.floating[Any]],
    *,
    permutations: int = 1000,
    rng: np.random.Generator | None = None,
    bandwidth: float | None = None,
) -> MMDResult:
    """Gaussian-kernel MMD² two-sample test with a permutation p-value.

    Args:
        reference: ``(m, D)`` reference embeddings.
        current: ``(n, D)`` current embeddings.
        permutations: Random relabellings drawn (B).
        rng: Random generator (fixed seed → same p-value).
        bandwidth: Kernel σ; None uses the median heuristic on the pooled sample.

    Returns:
        The unbiased MMD², its p-value, the bandwidth and B.

    Examples:
        >>> rng = np.random.default_rng(0)
        >>> same = mmd_permutation_test(rng.normal(size=(80, 4)), rng.normal(size=(60, 4)))
        >>> same.p_value > 0.05
        True
    """
    rng = rng or np.random.default_rng(0)
    m, n = len(reference), len(current)
    if m < 2 or n < 2:
        raise ValueError("MMD needs at least 2 points on each side")
    pooled = np.concatenate(
        [np.asarray(reference, np.float32), np.asarray(current, np.float32)], axis=0
    )
    size = m + n
    if bandwidth is None and size <= _BANDWIDTH_SAMPLE:
        # One distance matrix for both the median heuristic and the kernel.
        distances = _squared_distances(pooled, pooled)
        sigma = _median_distance(distances)
        kernel = _kernel_of(distances, sigma)
    else:
        sigma = bandwidth if bandwidth is not None else median_bandwidth(pooled, rng)
        kernel = gaussian_kernel(pooled, sigma)
    row_sums = kernel.sum(axis=1, dtype=np.float64)
    total = float(row_sums.sum())
    # Indicate the smaller group: the same statistic, with fewer terms summed in float32.
    group, other = (m, n) if m <= n else (n, m)
    observed_indicator = np.zeros(size, np.float32)
    if m <= n:
        observed_indicator[:m] = 1.0
    else:
        observed_indicator[m:] = 1.0

    statistics: list[NDArray[np.float64]] = []
    done = -1  # the first column of the first block is the observed labelling
    while done < permutations:
        block = min(_PERMUTATION_BLOCK, permutations - done)
        indicators = np.zeros((size, block), np.float32)
        start = 0
        if done < 0:
            indicators[:, 0] = observed_indicator
            start = 1
        # The group's members are the `group` smallest of random keys: a uniform subset.
        # argpartition finds the same set as a full sort, at half its cost.
        chosen = np.argpartition(rng.random((block - start, size)), group - 1, axis=1)[:, :group]
        indicators[chosen, np.arange(start, block)[:, None]] = 1.0
        within = _within_sums(kernel, indicators, group)
        x_total = row_sums @ indicators
        statistics.append(_mmd2_from_sums(within, x_total, total, group, other))
        done += block
    values = np.concatenate(statistics)
    observed, permuted = float(values[0]), values[1:]
    # A relative tolerance, so float32 ties with the observed value count as ≥.
    exceed = int((permuted >= observed - 1e-6 * max(1e-12, abs(observed))).sum())
    return MMDResult(
        mmd2=observed,
        p_value=(1 + exceed) / (1 + permutations),
        bandwidth=float(sigma),
        permutations=permutations,
    )


def benjamini_hochberg(p_values: Sequence[float]) -> NDArray[np.float64]:
    """Benjamini–Hochberg adjusted p-values (reject where adjusted ≤ α).

    The smallest adjusted value is Simes' p-value for "no feature changed", which is how a
    family of tests becomes one p-value.

    Examples:
        >>> benjamini_hochberg([0.01, 0.04, 0.03]).round(3).tolist()
        [0.03, 0.04, 0.04]
    """
    values = np.asarray(p_values, dtype=np.float64)
    count = len(values)
    if count == 0:
        return values
    order = np.argsort(values)
    scaled = values[order] * count / np.arange(1, count + 1)
    adjusted_sorted = np.minimum.accumulate(scaled[::-1])[::-1]
    adjusted = np.empty(count)
    adjusted[order] = np.minimum(adjusted_sorted, 1.0)
    return adjusted


def bonferroni(p_values: Sequence[float]) -> float:
    """Bonferroni p-value of "none of these tests is significant": ``min(1, k · min p)``."""
    values = [p for p in p_values if np.isfinite(p)]
    if not values:
        return 1.0
    return float(min(1.0, len(values) * min(values)))


def ks_tests(
    names: Sequence[str],
    reference: NDArray[np.floating[Any]],
    current: NDArray[np.floating[Any]],
) -> list[KSResult]:
    """Two-sample KS per column, BH-adjusted within the set.

    Args:
        names: Column names.
        reference: ``(m, F)`` values.
        current: ``(n, F)`` values.

    Returns:
        One result per column, in column order. A column that is constant in both samples
        (and equal) gets p = 1.
    """
    from scipy.stats import ks_2samp

    raw: list[tuple[float, float]] = []
    for column in range(len(names)):
        ref = np.asarray(reference[:, column], np.float64)
        cur = np.asarray(current[:, column], np.float64)
        ref, cur = ref[np.isfinite(ref)], cur[np.isfinite(cur)]
        if len(ref) == 0 or len(cur) == 0:
            raw.append((0.0, 1.0))
            continue
        result = ks_2samp(ref, cur, method="auto")
        raw.append((float(result.statistic), float(result.pvalue)))
    adjusted = benjamini_hochberg([p for _, p in raw])
    return [
        KSResult(
            name=str(name),
            statistic=statistic,
            p_value=p_value,
            p_adjusted=float(adjusted[i]),
            reference_mean=float(np.nanmean(reference[:, i])) if len(reference) else 0.0,
            current_mean=float(np.nanmean(current[:, i])) if len(current) else 0.0,
        )
        for i, (name, (statistic, p_value)) in enumerate(zip(names, raw, strict=True))
    ]


@dataclass(frozen=True)
class ChiSquareResult:
    """Chi-square test of predicted-class counts.

    Attributes:
        statistic: The χ² statistic.
        p_value: Its p-value (1 when fewer than two classes occur).
        cramers_v: Effect size in 0..1.
        reference_counts: Predicted-class counts in the reference.
        current_counts: Predicted-class counts in the current sample.
    """

    statistic: float
    p_value: float
    cramers_v: float
    reference_counts: list[int]
    current_counts: list[int]


def chi_square_test(
    reference_classes: NDArray[np.integer[Any]],
    current_classes: NDArray[np.integer[Any]],
    num_classes: int,
) -> ChiSquareResult:
    """Chi-square test of homogeneity on predicted classes (2 x K table).

    Classes predicted in neither sample are left out of the table.
    """
    from scipy.stats import chi2_contingency

    ref_counts = np.bincount(np.asarray(reference_classes), minlength=num_classes)[:num_classes]
    cur_counts = np.bincount(np.asarray(current_classes), minlength=num_classes)[:num_classes]
    table = np.stack([ref_counts, cur_counts])
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2 or (table.sum(axis=1) == 0).any():
        return ChiSquareResult(0.0, 1.0, 0.0, ref_counts.tolist(), cur_counts.tolist())
    result = chi2_contingency(table, correction=False)
    statistic = float(result.statistic)
    total = float(table.sum())
    cramers_v = float(np.sqrt(statistic / (total * (min(table.shape) - 1))))
    return ChiSquareResult(
        statistic, float(result.pvalue), cramers_v, ref_counts.tolist(), cur_counts.tolist()
    )
