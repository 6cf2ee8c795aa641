"""Each task's evaluation: metrics with known answers, figures, and serve answers."""

from __future__ import annotations

import numpy as np
import pytest
from task_sources import run_record

from visionops.errors import ArtifactError
from visionops.tasks import ClassificationTask, MultilabelTask, PredictOptions, RegressionTask
from visionops.tasks._results import Outputs, expected_calibration_error
from visionops.tasks.classification import classification_report
from visionops.tasks.multilabel import multilabel_report
from visionops.tasks.regression import regression_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _one_hot(indices: list[int], num_classes: int, confidence: float = 0.9) -> np.ndarray:
    rest = (1 - confidence) / (num_classes - 1)
    probabilities = np.full((len(indices), num_classes), rest)
    probabilities[np.arange(len(indices)), indices] = confidence
    return probabilities


def test_perfect_classifier_scores_one_with_a_diagonal_confusion_matrix() -> None:
    targets = np.array([0, 1, 2, 3, 4, 5, 0, 1, 2, 3, 4, 5])
    scored = classification_report(_one_hot(list(targets), 6, 1.0), targets, list("abcdef"))
    assert scored.metrics["accuracy"] == 1.0
    assert scored.metrics["f1_macro"] == 1.0
    assert scored.metrics["top5_accuracy"] == 1.0
    assert scored.metrics["ece"] == pytest.approx(0.0)
    counts = np.array(scored.extra["confusion_matrix"]["counts"])
    assert np.array_equal(counts, np.diag([2] * 6))
    assert np.array_equal(np.array(scored.extra["confusion_matrix"]["normalized"]), np.eye(6))
    assert [row["class"] for row in scored.rows] == list("abcdef")
    assert all(row["f1"] == 1.0 and row["support"] == 2 for row in scored.rows)


def test_classification_known_mistakes() -> None:
    targets = np.array([0, 0, 1, 1, 2, 2])
    probabilities = np.array(
        [
            [0.7, 0.2, 0.1],
            [0.3, 0.6, 0.1],  # wrong, but the truth is second
            [0.15, 0.8, 0.05],
            [0.2, 0.7, 0.1],
            [0.1, 0.2, 0.7],
            [0.6, 0.3, 0.1],  # wrong, and the truth is last
        ]
    )
    scored = classification_report(probabilities, targets, ["cat", "dog", "fox"])
    assert scored.metrics["accuracy"] == pytest.approx(4 / 6)
    assert scored.metrics["top2_accuracy"] == pytest.approx(5 / 6)  # 3 classes: top-(K-1)
    counts = scored.extra["confusion_matrix"]["counts"]
    assert counts == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    dog = scored.rows[1]
    assert dog["precision"] == pytest.approx(2 / 3)
    assert dog["recall"] == 1.0
    assert dog["predicted"] == 3
    assert "top5_accuracy" not in scored.metrics
    assert scored.metrics["log_loss"] == pytest.approx(
        -np.mean(np.log([0.7, 0.3, 0.8, 0.7, 0.7, 0.1]))
    )


def test_two_classes_have_no_top_k() -> None:
    scored = classification_report(_one_hot([0, 1], 2), np.array([0, 1]), ["no", "yes"])
    assert not any(name.startswith("top") for name in scored.metrics)


def test_expected_calibration_error_known_values() -> None:
    ece, bins = expected_calibration_error([0.95] * 10, [1] * 8 + [0] * 2, n_bins=15)
    assert ece == pytest.approx(0.15)
    assert sum(bins["count"]) == 10
    assert bins["count"][14] == 10
    assert bins["accuracy"][14] == pytest.approx(0.8)
    # Two bins: (0.2, 0.6] holds 0.3 (wrong); (0.6, 1.0] holds 0.9 (right) with n_bins=2.
    ece, _ = expected_calibration_error([0.3, 0.9], [0, 1], n_bins=2)
    assert ece == pytest.approx((0.3 + 0.1) / 2)


def test_multilabel_known_answers() -> None:
    targets = np.array([[1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 0, 0]], dtype=np.float32)
    # Constant scores: AP equals the share of positives; thresholds decide F1.
    probabilities = np.tile([0.8, 0.3, 0.6], (4, 1))
    scored = multilabel_report(probabilities, targets, ["a", "b", "c"], [0.5, 0.5, 0.7])
    a, b, c = scored.rows
    assert a["ap"] == pytest.approx(0.5)
    assert b["ap"] == pytest.approx(0.5)
    assert c["ap"] is None  # no positives: undefined, left out of mAP
    assert scored.metrics["map"] == pytest.approx(0.5)
    assert (a["precision"], a["recall"]) == (0.5, 1.0)
    assert a["f1"] == pytest.approx(2 / 3)
    assert b["f1"] == 0.0
    # TP = 2 (label a), FP = 2 (label a), FN = 2 (label b).
    assert scored.metrics["f1_micro"] == pytest.approx(2 * 2 / (2 * 2 + 2 + 2))
    assert scored.extra["labels_without_positives"] == ["c"]
    assert [row["threshold"] for row in scored.rows] == [0.5, 0.5, 0.7]


def test_multilabel_threshold_count_must_match() -> None:
    with pytest.raises(ArtifactError, match="2 thresholds for 3 labels"):
        multilabel_report(np.zeros((2, 3)), np.zeros((2, 3)), ["a", "b", "c"], [0.5, 0.5])


def test_regression_known_answers() -> None:
    truth = np.array([[1.0, 0.0], [2.0, 2.0], [3.0, 4.0], [4.0, 4.0]])
    exact = regression_report(truth, truth, ["x", "y"], ["kcal", "g"])
    assert exact.metrics["r2"] == 1.0
    assert exact.metrics["mae"] == 0.0
    guess = np.array([[2.5, 1.0], [2.5, 3.0], [2.5, 5.0], [2.5, 5.0]])
    scored = regression_report(guess, truth, ["x", "y"], ["kcal", "g"])
    x, y = scored.rows
    assert x["r2"] == pytest.approx(0.0)  # predicting the mean
    assert x["mae"] == pytest.approx(1.0)
    assert x["rmse"] == pytest.approx(np.sqrt(1.25))
    assert x["unit"] == "kcal"
    assert y["mae"] == pytest.approx(1.0)
    # MAPE leaves out the zero: |3-2|/2, |5-4|/4, |5-4|/4.
    assert y["mape_n"] == 3
    assert y["mape"] == pytest.approx((0.5 + 0.25 + 0.25) / 3)


def test_output_count_mismatch_is_an_artifact_error() -> None:
    with pytest.raises(ArtifactError, match="3 outputs but the run names 2 classes"):
        classification_report(np.full((2, 3), 1 / 3), np.array([0, 1]), ["a", "b"])


def test_eval_shows_the_most_confident_mistakes_in_a_gallery() -> None:
    targets = np.array([0, 1, 2, 0, 1])
    probabilities = np.array(
        [[0.9, 0.05, 0.05], [0.6, 0.3, 0.1], [0.1, 0.2, 0.7], [0.05, 0.9, 0.05], [0.1, 0.8, 0.1]]
    )
    images = np.random.default_rng(0).integers(0, 256, (10, 8, 8, 3), dtype=np.uint8)
    task = ClassificationTask(["a", "b", "c"])
    scored = classification_report(probabilities, targets, ["a", "b", "c"])
    outputs = Outputs(
        main=probabilities, targets=targets, images=images, indices=np.array([2, 3, 5, 7, 9])
    )
    plots = task.eval_plots(scored, outputs)
    gallery = plots[-1]
    assert gallery.filename == "worst_misclassified.png"
    assert gallery.png.startswith(PNG_MAGIC) and "surest" in gallery.caption
    # Two mistakes (rows 1 and 3): no gallery when there are none.
    right = Outputs(
        main=_one_hot([0, 1, 2], 3), targets=np.array([0, 1, 2]), images=images,
        indices=np.array([0, 1, 2]),
    )  # fmt: skip
    right_scored = classification_report(right.main, right.targets, ["a", "b", "c"])
    shown = [plot.filename for plot in task.eval_plots(right_scored, right)]
    assert "worst_misclassified.png" not in shown


def test_task_plots_are_pngs() -> None:
    targets = np.array([0, 1, 2, 0])
    probabilities = _one_hot([0, 1, 1, 0], 3)
    scored = classification_report(probabilities, targets, ["a", "b", "c"])
    task = ClassificationTask(["a", "b", "c"])
    plots = task.plots(scored, probabilities, targets.astype(float))
    assert [plot.filename for plot in plots] == ["confusion_matrix.png", "reliability_diagram.png"]
    assert all(plot.png.startswith(PNG_MAGIC) and plot.caption for plot in plots)
    values = np.array([[1.0, 2.0], [2.0, 3.0], [3.0, 5.0]])
    reg = regression_report(values, values, ["energy (kcal)", "mass"], ["kcal", "g"])
    regression = RegressionTask(["energy (kcal)", "mass"], [0.0, 0.0], [1.0, 1.0], ["kcal", "g"])
    plots = regression.plots(reg, values, values)
    assert [plot.filename for plot in plots] == ["scatter_energy_kcal.png", "scatter_mass.png"]


def test_classification_answer_lists_the_top_k() -> None:
    task = ClassificationTask(["red", "green", "blue", "grey"])
    main = np.array([0.1, 0.6, 0.2, 0.1], np.float32)
    answer = task.answer(main, {}, PredictOptions(default_top_k=2))
    assert answer["label"] == "green"
    assert [e["label"] for e in answer["top_k"]] == ["green", "blue"]
    assert len(task.answer(main, {}, PredictOptions(top_k=10))["top_k"]) == 4
    assert task.predicted_labels(answer) == ["green"]
    assert task.check_options(PredictOptions(threshold=0.5)) is not None
    assert task.check_options(PredictOptions(heatmap=True)) is not None


def test_multilabel_answer_uses_tuned_or_request_thresholds() -> None:
    task = MultilabelTask(["a", "b", "c"], thresholds=[0.5, 0.4, 0.45])
    main = np.array([0.9, 0.42, 0.44], np.float32)
    answer = task.answer(main, {}, PredictOptions())
    assert [e["label"] for e in answer["labels"]] == ["a", "b"]
    assert task.answer(main, {}, PredictOptions(threshold=0.8))["labels"][0]["label"] == "a"
    assert task.describe()["thresholds"] == [0.5, 0.4, 0.45]
    assert task.check_options(PredictOptions(threshold=1.5)) is not None
    assert task.check_options(PredictOptions(threshold=0.3)) is None
    untuned = MultilabelTask(["a", "b", "c"])
    assert untuned.describe()["thresholds"] == [0.5, 0.5, 0.5]


def test_regression_answer_has_names_values_and_units() -> None:
    task = RegressionTask(["energy", "mass"], [0.0, 0.0], [1.0, 1.0], ["kcal", "g"])
    answer = task.answer(np.array([250.0, 80.0], np.float32), {}, PredictOptions())
    assert answer == {
        "values": [
            {"name": "energy", "value": 250.0, "unit": "kcal"},
            {"name": "mass", "value": 80.0, "unit": "g"},
        ]
    }
    assert task.check_options(PredictOptions(threshold=0.5)) is not None


def test_output_columns_for_drift() -> None:
    task = ClassificationTask(["cat", "dog"])
    main = np.array([[0.9, 0.1], [0.2, 0.8]], np.float32)
    columns = task.output_columns(main)
    assert list(columns) == ["p(cat)", "p(dog)"]
    assert task.predicted_classes(main).tolist() == [0, 1]
    regression = RegressionTask(["energy"], [0.0], [1.0])
    assert list(regression.output_columns(np.array([[1.0], [2.0]]))) == ["energy"]
    assert regression.predicted_classes(np.array([[1.0]])) is None


def test_sample_captions_say_prediction_and_truth() -> None:
    classification = ClassificationTask(["cat", "dog"])
    assert classification.caption(np.array([0.3, 0.7]), np.array(0)) == "pred dog (0.70) · true cat"
    multilabel = MultilabelTask(["sky", "sea"], thresholds=[0.5, 0.8])
    caption = multilabel.caption(np.array([0.6, 0.7]), np.array([1.0, 1.0]))
    assert caption == "pred sky · true sky, sea"
    regression = RegressionTask(["energy"], [0.0], [1.0])
    assert regression.caption(np.array([2.5]), np.array([3.0])) == "energy 2.5/3"


def test_importing_the_tasks_does_not_import_torch() -> None:
    import subprocess
    import sys

    code = "import sys, visionops.tasks; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_task_shapes_the_shared_stages_through_its_hooks() -> None:
    from visionops.export.graph import graph_output_names
    from visionops.tasks import AnomalyTask, get_task

    classification = get_task("classification").from_manifest(
        run_record("classification", class_names=["a", "b"])
    )
    assert graph_output_names(classification) == ("probabilities", "embedding")
    assert classification.learns_from(np.array([0, 1, 1])).all()
    anomaly = AnomalyTask.from_manifest(
        run_record(
            "anomaly",
            thresholds=[0.5],
            anomaly={
                "layers": ["layer1"],
                "threshold": {"value": 0.5, "method": "f1"},
                "bank_size": 10,
                "feature_dim": 4,
            },
        )
    )
    assert graph_output_names(anomaly) == ("score", "heatmap", "embedding")
    assert anomaly.learns_from(np.array([0, 1, 0])).tolist() == [True, False, True]
    assert anomaly.record is not None and anomaly.record.bank_size == 10
    assert anomaly.has_masks and not anomaly.trained_by_gradient and not anomaly.mixed_precision


def test_training_data_problems_name_the_fix() -> None:
    assert "at least two" in (ClassificationTask.training_data_problem(["a"], np.zeros(3)) or "")
    missing = MultilabelTask.training_data_problem(["a", "b"], np.array([[1.0, 0.0]]))
    assert "'b'" in (missing or "")
    assert RegressionTask.training_data_problem(["x"], np.zeros((2, 1))) is None
