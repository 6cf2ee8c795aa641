"""Split planning: which image goes to train, val and test.

Pure functions of content hashes, strata and ratios (no files, no decoding), so the rules are
testable on their own:

- when the source gives no splits, whole groups of identical images (same SHA-256) go to one
  split, test first and then val out of the rest, stratified by class (or label set, defect
  type, regression quantile) and seeded;
- when the source gives splits, they are kept; a file that is in two splits at once leaks, so
  only its copy in the earliest split (train before val before test) stays and the others are
  reported as dropped; a missing val split is carved out of train (or out of test, for layouts
  such as MVTec AD whose train split holds only good images).

Examples:
    >>> plan = plan_splits(["a", "b", "c", "d"], ["x", "x", "y", "y"], None,
    ...                    val_ratio=0.25, test_ratio=0.25, seed=0)
    >>> sorted(plan.splits.tolist())
    [0, 0, 1, 2]
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray

__all__ = ["TEST", "TRAIN", "VAL", "SplitPlan", "plan_splits", "regression_strata", "take"]

TRAIN: Final = 0
VAL: Final = 1
TEST: Final = 2
_RARE: Final = "\0rare"


@dataclass(frozen=True)
class SplitPlan:
    """Where each image goes.

    Attributes:
        splits: ``(N,)`` uint8 split code per image (0 train, 1 val, 2 test).
        dropped: Image position → position of the identical image that was kept in an
            earlier split (only when the source gives the splits).
        from_source: Whether the splits came from the source.
    """

    splits: NDArray[np.uint8]
    dropped: dict[int, int] = field(default_factory=dict)
    from_source: bool = False

    @property
    def kept(self) -> list[int]:
        """Positions of the images that stay, ascending."""
        return [p for p in range(len(self.splits)) if p not in self.dropped]


def _rare_merged(strata: Sequence[str]) -> list[str]:
    """Merge strata too small to stratify (one member) so scikit-learn can still stratify."""
    counts = Counter(strata)
    merged = [s if counts[s] >= 2 else _RARE for s in strata]
    merged_counts = Counter(merged)
    if merged_counts.get(_RARE) == 1:
        common = max((s for s in merged_counts if s != _RARE), key=merged_counts.__getitem__)
        merged = [common if s == _RARE else s for s in merged]
    return merged


def take(
    members: Sequence[int], strata: Sequence[str], fraction: float, seed: int
) -> tuple[list[int], list[int]]:
    """Split ``members`` into (kept, taken) with ``round(fraction * n)`` taken, stratified.

    Args:
        members: Positions to split.
        strata: ``strata[i]`` is the stratum of ``members[i]``.
        fraction: Share to take.
        seed: Random seed.

    Returns:
        ``(kept, taken)``, each ascending. Falls back to an unstratified shuffle where a
        stratified split is impossible (e.g. fewer taken items than strata).
    """
    from sklearn.model_selection import train_test_split

    count = round(len(members) * fraction)
    if count <= 0 or len(members) < 2:
        return list(members), []
    if count >= len(members):
        return [], list(members)
    labels = _rare_merged(strata)
    try:
        kept, taken = train_test_split(
            list(members), test_size=count, random_state=seed, shuffle=True, stratify=labels
        )
    except ValueError:
        kept, taken = train_test_split(
            list(members), test_size=count, random_state=seed, shuffle=True
        )
    return sorted(int(i) for i in kept), sorted(int(i) for i in taken)


def regression_strata(targets: NDArray[Any]) -> list[str]:
    """Quantile bins of the first target, so every split sees small and large values.

    Args:
        targets: ``(N, T)`` regression targets.

    Returns:
        One stratum name per row (all empty when there are too few rows to bin).
    """
    bins = max(1, min(5, len(targets) // 10))
    if bins == 1:
        return [""] * len(targets)
    edges = np.quantile(targets[:, 0], np.linspace(0, 1, bins + 1)[1:-1])
    return [str(int(b)) for b in np.digitize(targets[:, 0], edges)]


class _Groups:
    """Identical images (same hash), so a split takes or leaves a whole group."""

    def __init__(self, hashes: Sequence[str], strata: Sequence[str]) -> None:
        self.hashes = hashes
        self.strata = strata
        self.members: dict[str, list[int]] = defaultdict(list)
        for position, sha in enumerate(hashes):
            self.members[sha].append(position)

    def split(
        self, positions: Sequence[int], fraction: float, seed: int
    ) -> tuple[list[int], list[int]]:
        """(kept, taken) among ``positions``, moving identical images together."""
        leaders = sorted({self.members[self.hashes[p]][0] for p in positions})
        kept, taken = take(leaders, [self.strata[p] for p in leaders], fraction, seed)
        chosen = set(positions)

        def expand(picked: list[int]) -> list[int]:
            return sorted(
                p for lead in picked for p in self.members[self.hashes[lead]] if p in chosen
            )

        return expand(kept), expand(taken)


def plan_splits(
    hashes: Sequence[str],
    strata: Sequence[str],
    source_splits: Sequence[int | None] | None,
    *,
    val_ratio: float,
    test_ratio: float,
    seed: int,
    carve_val_from: int = TRAIN,
) -> SplitPlan:
    """Decide the split of every image.

    Args:
        hashes: Content hash per image (identical images share one).
        strata: What to stratify by, per image (class name, label set, quantile bin).
        source_splits: The split each image has in the source (None for an image the source
            leaves unsplit, counted as train), or None when visionops makes the splits.
        val_ratio: Share of all images for val (made splits), or of ``carve_val_from``
            when the source has no val split.
        test_ratio: Share of all images for test (made splits only).
        seed: Random seed; the same inputs and seed always give the same plan.
        carve_val_from: The source split that val is taken from when the source has none
            (0 = train; 2 = test, e.g. MVTec AD, where val then gets
            ``val_ratio / (val_ratio + test_ratio)`` of test).

    Returns:
        The plan.
    """
    if len(strata) != len(hashes) or (
        source_splits is not None and len(source_splits) != len(hashes)
    ):
        raise ValueError("hashes, strata and source_splits must have one entry per image")
    groups = _Groups(hashes, strata)
    splits = np.zeros(len(hashes), dtype=np.uint8)

    if source_splits is None:
        rest, test = groups.split(range(len(hashes)), test_ratio, seed)
        _, val = groups.split(rest, val_ratio / (1.0 - test_ratio), seed)
        splits[val] = VAL
        splits[test] = TEST
        return SplitPlan(splits, {}, False)

    for position, split in enumerate(source_splits):
        splits[position] = TRAIN if split is None else split
    dropped: dict[int, int] = {}
    for members in groups.members.values():
        first = min(members, key=lambda p: (splits[p], p))
        for position in members:
            if splits[position] > splits[first]:
                dropped[position] = first
    present = {int(s) for p, s in enumerate(splits) if p not in dropped}
    if VAL not in present and val_ratio > 0:
        if carve_val_from == TEST:
            total = val_ratio + test_ratio
            fraction = val_ratio / total if total else 0.5
        else:
            fraction = val_ratio
        members = [
            p for p in range(len(hashes)) if splits[p] == carve_val_from and p not in dropped
        ]
        _, val = groups.split(members, fraction, seed)
        splits[val] = VAL
    return SplitPlan(splits, dropped, True)
