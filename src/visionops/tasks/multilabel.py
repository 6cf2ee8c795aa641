"""Multi-label classification: BCE with logits, sigmoid, per-class thresholds tuned for F1."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
from numpy.typing import NDArray

from visionops.artifacts import ClassActivationRecord
from visionops.errors import ArtifactError
from visionops.tasks import register_task
from visionops.tasks._base import PredictOptions, class_names_of, meta_field
from visionops.tasks._cam import ExplainedByCam, cam_record_of
from visionops.tasks._results import ArrayLikeFloat, Plot, TaskMetrics, headline

if TYPE_CHECKING:
    import torch

__all__ = ["MultilabelTask", "multilabel_metrics", "multilabel_report", "tune_thresholds"]

DEFAULT_THRESHOLD = 0.5

_CANDIDATES = np.round(np.arange(0.05, 0.951, 0.025), 3)


def tune_thresholds(probabilities: NDArray[np.floating[Any]], targets: NDArray[Any]) -> list[float]:
    """Per-class probability thresholds that maximise each class's F1.

    Candidates are 0.05, 0.075, ..., 0.95; among equally good ones the closest to 0.5 wins,
    and a class without positives keeps 0.5.

    Args:
        probabilities: ``(N, K)`` sigmoid outputs on the validation split.
        targets: ``(N, K)`` 0/1 labels.

    Returns:
        ``K`` thresholds.
    """
    truth = np.asarray(targets) > 0.5
    # (C, N, K): every candidate at once, vectorised over images and classes.
    predicted = probabilities[None, :, :] >= _CANDIDATES[:, None, None]
    tp = (predicted & truth[None]).sum(axis=1)
    fp = (predicted & ~truth[None]).sum(axis=1)
    fn = (~predicted & truth[None]).sum(axis=1)
    f1 = 2 * tp / np.maximum(2 * tp + fp + fn, 1)
    thresholds: list[float] = []
    for k in range(truth.shape[1]):
        if not truth[:, k].any():
            thresholds.append(0.5)
            continue
        best = f1[:, k].max()
        ties = _CANDIDATES[np.isclose(f1[:, k], best)]
        thresholds.append(float(ties[np.argmin(np.abs(ties - 0.5))]))
    return thresholds


def multilabel_metrics(
    probabilities: NDArray[np.floating[Any]],
    targets: NDArray[Any],
    thresholds: Sequence[float] | None = None,
) -> dict[str, float]:
    """Mean average precision (threshold-free) and F1 at the given thresholds.

    Args:
        probabilities: ``(N, K)`` sigmoid outputs.
        targets: ``(N, K)`` 0/1 labels.
        thresholds: Per-class thresholds (0.5 each when None).

    Returns:
        ``{"map", "f1_macro", "f1_micro", "subset_accuracy"}``; ``map`` averages the
        classes that have positives.
    """
    from sklearn.metrics import average_precision_score, f1_score

    truth = (np.asarray(targets) > 0.5).astype(np.int64)
    cut = np.asarray(thresholds if thresholds is not None else [0.5] * truth.shape[1])
    predicted = (probabilities >= cut[None, :]).astype(np.int64)
    present = truth.sum(axis=0) > 0
    average_precision = (
        float(
            average_precision_score(truth[:, present], probabilities[:, present], average="macro")
        )
        if present.any()
        else float("nan")
    )
    return {
        "map": average_precision,
        "f1_macro": float(f1_score(truth, predicted, average="macro", zero_division=0)),
        "f1_micro": float(f1_score(truth, predicted, average="micro", zero_division=0)),
        "subset_accuracy": float((predicted == truth).all(axis=1).mean())
        if len(truth)
        else float("nan"),
    }


def multilabel_report(
    probabilities: ArrayLikeFloat,
    targets: ArrayLikeFloat,
    class_names: Sequence[str],
    thresholds: Sequence[float] | None,
) -> TaskMetrics:
    """Score multi-label predictions.

    The headline starts with the metrics training reports on val
    (:func:`multilabel_metrics`: ``map`` over labels with
    positives, ``f1_macro``, ``f1_micro``, ``subset_accuracy`` at the thresholds) and adds
    ``precision_micro`` and ``recall_micro``.

    Args:
        probabilities: ``(N, K)`` per-label probabilities (sigmoid outputs).
        targets: ``(N, K)`` 0/1 truth.
        class_names: The ``K`` label names.
        thresholds: Per-label decision thresholds tuned on val (None: 0.5 each).

    Returns:
        Headline metrics; per label AP (null without positives), precision, recall, F1,
        support and threshold.

    Raises:
        ArtifactError: Output or threshold count differs from the label count.
    """
    from sklearn.metrics import (
        average_precision_score,
        precision_recall_fscore_support,
        precision_score,
        recall_score,
    )

    probs = np.asarray(probabilities, dtype=np.float64)
    y_true = (np.asarray(targets, dtype=np.float64) > 0.5).astype(np.int64)
    num_labels = len(class_names)
    if probs.ndim != 2 or probs.shape[1] != num_labels:
        raise ArtifactError(
            f"the model gives {probs.shape[-1]} outputs but the run names {num_labels} labels"
            " — the checkpoint and run.json disagree; retrain the run"
        )
    cut = np.full(num_labels, 0.5) if thresholds is None else np.asarray(thresholds, np.float64)
    if cut.shape != (num_labels,):
        raise ArtifactError(
            f"run.json has {cut.size} thresholds for {num_labels} labels — the run is damaged;"
            " retrain it"
        )
    y_pred = (probs >= cut).astype(np.int64)

    metrics = headline(multilabel_metrics(probs, y_true, cut.tolist()))
    metrics["precision_micro"] = float(
        precision_score(y_true, y_pred, average="micro", zero_division=0)
    )
    metrics["recall_micro"] = float(recall_score(y_true, y_pred, average="micro", zero_division=0))

    positives = y_true.sum(axis=0)
    ap: list[float | None] = [
        float(average_precision_score(y_true[:, i], probs[:, i])) if positives[i] > 0 else None
        for i in range(num_labels)
    ]
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, average=None, zero_division=0
    )
    rows = [
        {
            "class": str(name),
            "ap": ap[i],
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "support": int(support[i]),
            "threshold": float(cut[i]),
        }
        for i, name in enumerate(class_names)
    ]
    extra = {
        "thresholds": cut.tolist(),
        "thresholds_from": "run.json" if thresholds is not None else "default 0.5",
        "labels_without_positives": [str(class_names[i]) for i, v in enumerate(ap) if v is None],
    }
    return TaskMetrics(metrics=metrics, rows=rows, extra=extra)


@register_task
class MultilabelTask(ExplainedByCam):
    """Any number of labels per image: BCE with logits, sigmoid, mAP; thresholds tuned on val.

    Args:
        class_names: The label order of the head's outputs.
        label_smoothing: Smooths the 0/1 targets towards 0.5 by this amount.
        thresholds: Per-class thresholds (0.5 each until :meth:`fit_postprocessing`).
    """

    name: ClassVar[str] = "multilabel"
    main_output: ClassVar[str] = "probabilities"
    row_noun: ClassVar[str] = "label"
    target_kind: ClassVar[Literal["class_index", "multi_hot", "values"]] = "multi_hot"
    monitor: ClassVar[str] = "map"
    mode: ClassVar[Literal["max", "min"]] = "max"
    rank_rows_by: ClassVar[str | None] = "ap"
    serve_options: ClassVar[frozenset[str]] = frozenset({"top_k", "threshold", "heatmap"})

    def __init__(
        self,
        class_names: Sequence[str],
        label_smoothing: float = 0.0,
        thresholds: Sequence[float] | None = None,
        cam: ClassActivationRecord | None = None,
    ) -> None:
        if not class_names:
            raise ArtifactError("the multilabel dataset has no class names — preprocess it again")
        self.class_names = list(class_names)
        self.label_smoothing = label_smoothing
        self.cam = cam
        fitted = thresholds is not None and len(thresholds) == len(self.class_names)
        self.thresholds_from = "run.json" if fitted else f"default {DEFAULT_THRESHOLD}"
        self.thresholds = (
            [float(t) for t in thresholds or []]
            if fitted
            else [DEFAULT_THRESHOLD] * len(self.class_names)
        )

    @classmethod
    def from_manifest(cls, manifest: Any, *, label_smoothing: float = 0.0) -> MultilabelTask:
        """Build from ``class_names`` (and ``thresholds`` when the manifest is a run's)."""
        thresholds = meta_field(manifest, "thresholds")
        return cls(
            class_names_of(manifest),
            label_smoothing,
            thresholds if isinstance(thresholds, list) else None,
            cam_record_of(manifest),
        )

    @property
    def labels(self) -> list[str]:
        """The label names."""
        return self.class_names

    # ------------------------------------------------------------ torch-free half

    def answer(
        self,
        main: NDArray[np.float32],
        extra: Mapping[str, NDArray[np.float32]],
        options: PredictOptions,
    ) -> dict[str, Any]:
        """Labels over their thresholds, every label's probability and the thresholds used.

        With ``heatmap``, also the activation map of the most probable label.
        """
        if options.threshold is not None:
            thresholds = [options.threshold] * len(self.class_names)
        else:
            thresholds = self.thresholds
        order = np.argsort(-main, kind="stable")
        chosen = [
            {"label": self.class_names[i], "probability": float(main[i])}
            for i in order
            if main[i] >= thresholds[i]
        ]
        if options.top_k is not None:
            chosen = chosen[: options.top_k]
        answer: dict[str, Any] = {
            "labels": chosen,
            "probabilities": {self.class_names[i]: float(p) for i, p in enumerate(main)},
            "thresholds": dict(zip(self.class_names, thresholds, strict=True)),
        }
        heatmap = self.cam_answer(main, extra, options)
        if heatmap is not None:
            answer["heatmap"] = heatmap
        return answer

    def check_options(self, options: PredictOptions, default_top_k: int = 5) -> str | None:
        """A threshold is a probability, between 0 and 1."""
        if options.threshold is not None and not 0.0 <= options.threshold <= 1.0:
            return "a multilabel threshold is between 0 and 1"
        return super().check_options(options, default_top_k)

    def describe(self) -> dict[str, Any]:
        """The per-label thresholds."""
        return {"thresholds": list(self.thresholds)}

    @classmethod
    def flat_answer(cls, answer: Mapping[str, Any]) -> dict[str, Any]:
        """``labels`` joined by ``;`` and one ``p_<label>`` column per label."""
        labels = [item["label"] for item in answer.get("labels", [])]
        probabilities = answer.get("probabilities") or {}
        return {"labels": ";".join(labels), **{f"p_{k}": v for k, v in probabilities.items()}}

    def caption(self, prediction: NDArray[Any], target: NDArray[Any]) -> str:
        """``pred <labels over their thresholds> · true <labels>``."""
        names = self.class_names
        guessed = [n for n, p, c in zip(names, prediction, self.thresholds, strict=True) if p >= c]
        truth = [n for n, t in zip(names, target, strict=True) if t > 0.5]
        return f"pred {', '.join(guessed) or '-'} · true {', '.join(truth) or '-'}"

    @classmethod
    def answer_text(cls, answer: Mapping[str, Any]) -> str:
        """The labels over their thresholds with their probabilities."""
        chosen = answer["labels"]
        return ", ".join(f"{a['label']} ({a['probability']:.2f})" for a in chosen) or "—"

    def predicted_labels(self, answer: Mapping[str, Any]) -> list[str]:
        """Every label over its threshold."""
        return [str(entry["label"]) for entry in answer["labels"]]

    def score(self, outputs: NDArray[Any], targets: NDArray[Any]) -> TaskMetrics:
        """See :func:`multilabel_report` (at the run's tuned thresholds)."""
        fitted = self.thresholds_from == "run.json"
        return multilabel_report(
            outputs, targets, self.class_names, self.thresholds if fitted else None
        )

    def plots(
        self, scored: TaskMetrics, outputs: NDArray[Any], targets: NDArray[Any]
    ) -> list[Plot]:
        """Average precision and F1 per label."""
        from visionops.tasks import figures as eval_plots

        del outputs, targets
        rows = scored.rows
        return [
            Plot(
                "per_label_scores.png",
                "Average precision and F1 (at the tuned thresholds) per label.",
                eval_plots.per_class_bars_png(
                    [row["class"] for row in rows],
                    {
                        "average precision": [row["ap"] for row in rows],
                        "F1": [row["f1"] for row in rows],
                    },
                    title="Per-label scores",
                ),
            )
        ]

    def output_columns(self, main: NDArray[Any]) -> dict[str, NDArray[np.float64]]:
        """One probability column per label."""
        values = np.asarray(main, np.float64).reshape(len(main), -1)
        return {f"p({name})": values[:, i] for i, name in enumerate(self.class_names)}

    @classmethod
    def training_data_problem(cls, names: Sequence[str], train: NDArray[Any]) -> str | None:
        """A label that is on no training image."""
        missing = [n for i, n in enumerate(names) if not np.any(train[:, i] >= 0.5)]
        if missing:
            return (
                f"label {', '.join(repr(m) for m in missing[:5])} is on no usable training image"
                " — add images with it, or drop the label"
            )
        return None

    # ------------------------------------------------------------- training half

    @property
    def num_outputs(self) -> int:
        """One logit per label."""
        return len(self.class_names)

    def encode_targets(self, targets: torch.Tensor) -> torch.Tensor:
        """0/1 float targets, smoothed when asked."""
        targets = targets.float()
        if self.label_smoothing:
            targets = targets * (1 - self.label_smoothing) + 0.5 * self.label_smoothing
        return targets

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Binary cross-entropy with logits, mean over images and labels."""
        from torch.nn import functional

        return functional.binary_cross_entropy_with_logits(outputs.float(), targets)

    def postprocess(self, outputs: torch.Tensor) -> torch.Tensor:
        """Sigmoid probabilities."""
        return outputs.float().sigmoid()

    def metrics(
        self, predictions: NDArray[np.floating[Any]], targets: NDArray[Any]
    ) -> dict[str, float]:
        """See :func:`multilabel_metrics` (at the current thresholds)."""
        return multilabel_metrics(predictions, targets, self.thresholds)

    def fit_postprocessing(
        self, predictions: NDArray[np.floating[Any]], targets: NDArray[Any]
    ) -> None:
        """Tune the per-class thresholds for F1 (see :func:`tune_thresholds`)."""
        self.thresholds = tune_thresholds(predictions, targets)
        self.thresholds_from = "run.json"

    def run_fields(self) -> dict[str, Any]:
        """``thresholds`` for ``run.json``."""
        return {"thresholds": list(self.thresholds)}
