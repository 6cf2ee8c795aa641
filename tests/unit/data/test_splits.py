"""Split planning on its own: ratios, strata, seeds, duplicates, source splits, carving val."""

from collections import Counter

import numpy as np
import pytest

from visionops.data.splits import TEST, TRAIN, VAL, plan_splits, regression_strata, take


def _unique(n: int) -> list[str]:
    return [f"h{i}" for i in range(n)]


def test_made_splits_follow_the_ratios_and_stratify() -> None:
    strata = ["a"] * 60 + ["b"] * 40
    plan = plan_splits(_unique(100), strata, None, val_ratio=0.2, test_ratio=0.1, seed=0)
    assert not plan.from_source
    assert plan.dropped == {}
    assert Counter(plan.splits.tolist()) == {TRAIN: 70, VAL: 20, TEST: 10}
    for code, expected in ((VAL, {"a": 12, "b": 8}), (TEST, {"a": 6, "b": 4})):
        chosen = Counter(s for s, split in zip(strata, plan.splits, strict=True) if split == code)
        assert chosen == expected


def test_same_seed_same_plan_other_seed_other_plan() -> None:
    strata = ["a", "b"] * 25
    one = plan_splits(_unique(50), strata, None, val_ratio=0.2, test_ratio=0.2, seed=1)
    two = plan_splits(_unique(50), strata, None, val_ratio=0.2, test_ratio=0.2, seed=1)
    other = plan_splits(_unique(50), strata, None, val_ratio=0.2, test_ratio=0.2, seed=2)
    np.testing.assert_array_equal(one.splits, two.splits)
    assert not np.array_equal(one.splits, other.splits)


def test_identical_images_stay_in_one_made_split() -> None:
    hashes = [f"h{i // 4}" for i in range(40)]  # ten groups of four copies
    plan = plan_splits(hashes, ["x"] * 40, None, val_ratio=0.2, test_ratio=0.2, seed=0)
    for group in range(10):
        assert len(set(plan.splits[group * 4 : group * 4 + 4].tolist())) == 1
    assert plan.kept == list(range(40))


def test_source_splits_are_kept_and_unsplit_items_count_as_train() -> None:
    source = [0, 0, 1, 2, None, 0]
    plan = plan_splits(_unique(6), ["x"] * 6, source, val_ratio=0.5, test_ratio=0.1, seed=0)
    assert plan.from_source
    assert plan.splits.tolist() == [0, 0, 1, 2, 0, 0]


def test_a_copy_in_a_later_source_split_is_dropped() -> None:
    hashes = ["same", "x", "y", "same", "z", "same"]
    source = [2, 0, 1, 0, 2, 1]
    plan = plan_splits(hashes, ["s"] * 6, source, val_ratio=0.2, test_ratio=0.2, seed=0)
    assert plan.dropped == {0: 3, 5: 3}  # the train copy at position 3 is kept
    assert plan.kept == [1, 2, 3, 4]


def test_val_is_carved_from_train_when_the_source_has_none() -> None:
    source = [0] * 20 + [2] * 5
    plan = plan_splits(_unique(25), ["x"] * 25, source, val_ratio=0.25, test_ratio=0.2, seed=0)
    assert Counter(plan.splits.tolist()) == {TRAIN: 15, VAL: 5, TEST: 5}


def test_val_is_carved_from_test_for_layouts_that_say_so() -> None:
    source = [0] * 10 + [2] * 20  # MVTec: train holds only good images
    plan = plan_splits(
        _unique(30), ["g"] * 30, source, val_ratio=0.1, test_ratio=0.3, seed=0, carve_val_from=2
    )
    assert Counter(plan.splits.tolist()) == {TRAIN: 10, VAL: 5, TEST: 15}  # 20 × 0.1/0.4
    assert all(plan.splits[:10] == TRAIN)


def test_take_merges_singleton_strata_and_falls_back_when_it_cannot_stratify() -> None:
    kept, taken = take(list(range(10)), ["a"] * 9 + ["lonely"], 0.3, seed=0)
    assert len(taken) == 3
    assert sorted(kept + taken) == list(range(10))
    kept, taken = take([0, 1, 2], ["a", "b", "c"], 0.34, seed=0)  # 1 taken, 3 strata
    assert len(taken) == 1
    assert take([7], ["a"], 0.5, seed=0) == ([7], [])
    assert take([1, 2], ["a", "a"], 1.0, seed=0) == ([], [1, 2])


def test_regression_strata_are_quantile_bins_of_the_first_target() -> None:
    targets = np.arange(50, dtype=np.float32).reshape(50, 1)
    strata = regression_strata(targets)
    assert Counter(strata) == {str(b): 10 for b in range(5)}
    assert strata[0] == "0" and strata[-1] == "4"
    assert regression_strata(targets[:9]) == [""] * 9


def test_lengths_must_agree() -> None:
    with pytest.raises(ValueError, match="one entry per image"):
        plan_splits(_unique(3), ["x"] * 2, None, val_ratio=0.1, test_ratio=0.1, seed=0)
