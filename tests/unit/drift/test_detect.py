"""The verdict from three families, on synthetic samples with known shifts (fixed seeds)."""

from __future__ import annotations

import numpy as np
import pytest

from visionops.config import DriftSettings
from visionops.drift.detect import ChiSquareTest, compare, reduce_embeddings
from visionops.drift.samples import Sample
from visionops.errors import DriftError
from visionops.tasks import ClassificationTask

LABELS = ["a", "b", "c"]
TASK = ClassificationTask(LABELS)
SETTINGS = DriftSettings(permutations=199, pca_dim=8)


def _sample(
    rng: np.random.Generator, n: int, *, brightness: float = 0.5, embed_shift: float = 0.0,
    class_probs: tuple[float, ...] = (1 / 3, 1 / 3, 1 / 3),
) -> Sample:  # fmt: skip
    classes = rng.choice(3, size=n, p=class_probs)
    logits = rng.normal(size=(n, 3)) + 3 * np.eye(3)[classes]
    outputs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return Sample(
        source="synthetic",
        count=n,
        embeddings=(rng.normal(size=(n, 24)) + embed_shift).astype(np.float32),
        outputs=outputs,
        classes=outputs.argmax(1),
        features={
            "mean": rng.normal(brightness, 0.05, n),
            "std": rng.normal(0.2, 0.03, n),
            "sharpness": rng.gamma(2.0, 0.01, n),
        },
    )


def test_same_distribution_is_not_drift() -> None:
    rng = np.random.default_rng(0)
    result = compare(
        _sample(rng, 300), _sample(rng, 200), task=TASK,
        settings=SETTINGS,
    )  # fmt: skip
    assert not result.drifted
    assert result.p_value >= 0.05
    assert [f.name for f in result.families] == ["embeddings", "outputs", "images"]
    assert result.what_drifted == []
    assert all(not f.drifted for f in result.families)


def test_brightness_shift_is_found_and_named() -> None:
    rng = np.random.default_rng(1)
    result = compare(
        _sample(rng, 300), _sample(rng, 200, brightness=0.56), task=TASK, settings=SETTINGS,
    )  # fmt: skip
    assert result.drifted
    images = result.family("images")
    assert images is not None and images.drifted
    hits = [row.name for row in images.tests if row.drifted]
    assert hits == ["brightness"]
    assert result.what_drifted[0].startswith("images are brighter: brightness up")


def test_class_mix_shift_fires_the_output_family() -> None:
    rng = np.random.default_rng(2)
    result = compare(
        _sample(rng, 300), _sample(rng, 200, class_probs=(0.7, 0.2, 0.1)),
        task=TASK, settings=SETTINGS,
    )  # fmt: skip
    outputs = result.family("outputs")
    assert outputs is not None and outputs.drifted
    chi = next(row for row in outputs.tests if isinstance(row, ChiSquareTest))
    assert chi.drifted and chi.statistic > 0.2
    assert chi.current_counts[0] > chi.current_counts[2]


def test_embedding_shift_fires_mmd() -> None:
    rng = np.random.default_rng(3)
    result = compare(
        _sample(rng, 300), _sample(rng, 200, embed_shift=0.3), task=TASK, settings=SETTINGS,
    )  # fmt: skip
    embeddings = result.family("embeddings")
    assert embeddings is not None and embeddings.drifted
    assert "PCA 24→8" in embeddings.note


def test_false_alarm_rate_of_the_overall_verdict_is_at_most_alpha() -> None:
    rng = np.random.default_rng(4)
    settings = DriftSettings(permutations=49, pca_dim=8)
    alarms = sum(
        compare(
            _sample(rng, 120), _sample(rng, 60), task=TASK,
            settings=settings,
        ).drifted
        for _ in range(40)
    )  # fmt: skip
    assert alarms / 40 <= 0.05 + 2.5 * np.sqrt(0.05 * 0.95 / 40)


def test_too_few_images_is_refused_with_the_minimum() -> None:
    rng = np.random.default_rng(5)
    with pytest.raises(DriftError, match="has 12 images; drift tests need at least 30"):
        compare(
            _sample(rng, 100), _sample(rng, 12), task=TASK,
            settings=SETTINGS,
        )  # fmt: skip
    with pytest.raises(DriftError, match="reference sample has 12 images") as small:
        compare(_sample(rng, 12), _sample(rng, 100), task=TASK, settings=SETTINGS)
    assert "`visionops drift reference RUN DATASET --split val`" in str(small.value)


def test_embedding_size_mismatch_is_a_foreign_log() -> None:
    rng = np.random.default_rng(6)
    current = _sample(rng, 50)
    current.embeddings = np.zeros((50, 7), np.float32)
    with pytest.raises(DriftError, match="another bundle"):
        compare(_sample(rng, 100), current, task=TASK, settings=SETTINGS)


def test_pca_is_fitted_on_reference_rows_the_test_does_not_use() -> None:
    rng = np.random.default_rng(7)
    reference = rng.normal(size=(200, 40)).astype(np.float32)
    current = rng.normal(size=(50, 40)).astype(np.float32)
    tested, reduced, note = reduce_embeddings(
        reference, current, dim=8, fraction=0.25, min_samples=30, rng=rng
    )
    assert tested.shape == (150, 8) and reduced.shape == (50, 8)
    assert "fitted on 50 reference images" in note
    small, _, note = reduce_embeddings(
        reference[:35], current, dim=8, fraction=0.25, min_samples=30, rng=rng
    )
    assert small.shape == (35, 40) and "too small" in note


def _measure_only(sample: Sample, rows: np.ndarray) -> Sample:
    """The sample as serve logs it under load: pixel statistics on some rows only."""
    for name, column in sample.features.items():
        column[~rows] = np.nan
        sample.features[name] = column
    return sample


def test_a_random_share_of_measured_images_still_finds_a_brightness_shift() -> None:
    rng = np.random.default_rng(8)
    measured = rng.random(1000) < 0.2
    current = _measure_only(_sample(rng, 1000, brightness=0.56), measured)
    result = compare(_sample(rng, 300), current, task=TASK, settings=SETTINGS)
    images = result.family("images")
    assert images is not None and images.drifted
    assert f"pixel statistics of {measured.sum()} of 1000 current images" in images.note
    assert any("brightness" in text for text in result.what_drifted)


def test_too_few_measured_images_leave_the_image_family_out_and_say_why() -> None:
    rng = np.random.default_rng(9)
    current = _measure_only(_sample(rng, 200), np.arange(200) < 12)
    result = compare(_sample(rng, 300), current, task=TASK, settings=SETTINGS)
    assert result.family("images") is None
    assert any(
        "only 12 of 200 current images have image statistics (minimum 30" in note
        and "drift.statistics_cpu_share" in note
        for note in result.notes
    )
