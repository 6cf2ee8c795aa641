"""Threshold choice on held-out images."""

from __future__ import annotations

import numpy as np
import pytest

from visionops.anomaly.threshold import choose_threshold
from visionops.errors import DataError


def test_f1_optimal_with_labelled_defects() -> None:
    scores = np.array([0.1, 0.2, 0.35, 0.3, 0.8, 0.9])
    labels = np.array([0, 0, 0, 1, 1, 1])
    threshold = choose_threshold(scores, labels)
    assert threshold.method == "f1"
    assert threshold.value == pytest.approx(0.3)  # F1 0.857 there, 0.8 at 0.8


def test_good_only_keeps_the_false_positive_rate() -> None:
    scores = np.linspace(0.0, 1.0, 100)
    threshold = choose_threshold(scores, np.zeros(100, int), target_fpr=0.05)
    assert threshold.method == "fpr"
    assert int((scores >= threshold.value).sum()) == 5


def test_defect_only_validation_is_refused() -> None:
    with pytest.raises(DataError, match="no threshold possible"):
        choose_threshold(np.array([0.5, 0.7]), np.array([1, 1]))


def test_no_validation_images_is_refused() -> None:
    with pytest.raises(DataError, match="val_ratio"):
        choose_threshold(np.zeros(0), np.zeros(0, int))
