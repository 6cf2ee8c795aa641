"""Single-label classification: cross-entropy, softmax, accuracy."""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
from numpy.typing import NDArray

from visionops.artifacts import ClassActivationRecord
from visionops.errors import ArtifactError
from visionops.tasks import register_task
from visionops.tasks._base import PredictOptions, class_names_of
from visionops.tasks._cam import ExplainedByCam, cam_record_of
from visionops.tasks._results import (
    CALIBRATION_BINS,
    ArrayLikeFloat,
    Outputs,
    Plot,
    TaskMetrics,
    expected_calibration_error,
    finite,
    headline,
    json_floats,
)

if TYPE_CHECKING:
    import torch

__all__ = ["ClassificationTask", "classification_metrics", "classification_report"]

_GALLERY_SIZE = 12
"""Misclassified images the eval report shows."""


def _short_name(name: str, limit: int = 16) -> str:
    return name if len(name) <= limit else name[: limit - 1] + "…"


def classification_metrics(
    probabilities: NDArray[np.floating[Any]], targets: NDArray[np.integer[Any]]
) -> dict[str, float]:
    """Accuracy, balanced accuracy, macro F1 (and top-5 accuracy for more than 5 classes).

    Args:
        probabilities: ``(N, K)`` class probabilities (or any scores ordered like them).
        targets: ``(N,)`` class indices.

    Returns:
        ``{"accuracy", "balanced_accuracy", "f1_macro"[, "top5_accuracy"]}``.

    Examples:
        >>> classification_metrics(np.array([[0.9, 0.1], [0.2, 0.8]]), np.array([0, 0]))["accuracy"]
        0.5
    """
    from sklearn.metrics import balanced_accuracy_score, f1_score

    num_classes = probabilities.shape[1]
    predicted = probabilities.argmax(axis=1)
    targets = np.asarray(targets).astype(np.int64)
    metrics = {
        "accuracy": float((predicted == targets).mean()) if len(targets) else float("nan"),
        "balanced_accuracy": float(balanced_accuracy_score(targets, predicted))
        if len(targets)
        else float("nan"),
        "f1_macro": float(
            f1_score(
                targets,
                predicted,
                labels=list(range(num_classes)),
                average="macro",
                zero_division=0,
            )
        ),
    }
    if num_classes > 5:
        top5 = np.argsort(-probabilities, axis=1)[:, :5]
        metrics["top5_accuracy"] = float((top5 == targets[:, None]).any(axis=1).mean())
    return metrics


def _top_k(num_classes: int) -> int | None:
    """The k of the top-k accuracy to add: K - 1 for 3 to 5 classes, else none.

    The shared task metrics already give ``top5_accuracy`` above 5 classes (top-5 of 5 or
    fewer would always be 1); with 2 classes top-1 is plain accuracy.
    """
    if 3 <= num_classes <= 5:
        return num_classes - 1
    return None


def classification_report(
    probabilities: ArrayLikeFloat, targets: Sequence[int] | NDArray[Any], class_names: Sequence[str]
) -> TaskMetrics:
    """Score single-label predictions.

    The headline starts with the metrics training reports on val
    (:func:`classification_metrics`: ``accuracy``,
    ``balanced_accuracy``, ``f1_macro``, ``top5_accuracy`` above 5 classes), so the two can
    be compared, and adds ``top{K-1}_accuracy`` for 3 to 5 classes, ``f1_weighted``,
    ``log_loss`` and ``ece`` (15 bins).

    Args:
        probabilities: ``(N, K)`` class probabilities (softmax outputs).
        targets: ``(N,)`` true class indices.
        class_names: The ``K`` class names.

    Returns:
        Headline metrics; per-class precision, recall, F1, support and predicted count; the
        confusion matrix (counts and row-normalised) and the calibration bins.

    Raises:
        ArtifactError: The probabilities do not have one column per class.
    """
    from sklearn.metrics import (
        confusion_matrix,
        f1_score,
        log_loss,
        precision_recall_fscore_support,
        top_k_accuracy_score,
    )

    probs = np.asarray(probabilities, dtype=np.float64)
    y_true = np.asarray(targets, dtype=np.int64)
    num_classes = len(class_names)
    if probs.ndim != 2 or probs.shape[1] != num_classes:
        raise ArtifactError(
            f"the model gives {probs.shape[-1]} outputs but the run names {num_classes} classes"
            " — the checkpoint and run.json disagree; retrain the run"
        )
    labels = np.arange(num_classes)
    # Renormalise in float64: float32 softmax rows can miss 1 by more than log_loss accepts.
    probs = probs / probs.sum(axis=1, keepdims=True)
    y_pred = probs.argmax(axis=1)

    with warnings.catch_warnings():
        # balanced accuracy says so when a predicted class is absent from the split; the
        # number is still well defined, and the per-class table shows the case.
        warnings.filterwarnings("ignore", message="y_pred contains classes not in y_true")
        metrics = headline(classification_metrics(probs, y_true))
    k = _top_k(num_classes)
    if k is not None:
        metrics[f"top{k}_accuracy"] = float(top_k_accuracy_score(y_true, probs, k=k, labels=labels))
    metrics["f1_weighted"] = float(
        f1_score(y_true, y_pred, labels=labels, average="weighted", zero_division=0)
    )
    metrics["log_loss"] = finite(log_loss(y_true, probs, labels=labels))
    ece, bins = expected_calibration_error(probs.max(axis=1), y_pred == y_true)
    metrics["ece"] = ece

    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0
    )
    predicted = np.bincount(y_pred, minlength=num_classes)
    rows = [
        {
            "class": str(name),
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "support": int(support[i]),
            "predicted": int(predicted[i]),
        }
        for i, name in enumerate(class_names)
    ]
    counts = confusion_matrix(y_true, y_pred, labels=labels)
    normalised = confusion_matrix(y_true, y_pred, labels=labels, normalize="true")
    extra = {
        "confusion_matrix": {
            "labels": [str(name) for name in class_names],
            "rows": "true class",
            "columns": "predicted class",
            "counts": counts.astype(int).tolist(),
            "normalized": np.round(normalised, 6).tolist(),
        },
        "calibration": {"n_bins": CALIBRATION_BINS, **json_floats(bins)},
    }
    return TaskMetrics(metrics=metrics, rows=rows, extra=extra)


@register_task
class ClassificationTask(ExplainedByCam):
    """One class per image: cross-entropy with label smoothing, softmax, accuracy.

    Args:
        class_names: The label order of the head's outputs.
        label_smoothing: Cross-entropy label smoothing (``train.label_smoothing``).
    """

    name: ClassVar[str] = "classification"
    main_output: ClassVar[str] = "probabilities"
    monitor: ClassVar[str] = "accuracy"
    mode: ClassVar[Literal["max", "min"]] = "max"
    serve_options: ClassVar[frozenset[str]] = frozenset({"top_k", "heatmap"})

    def __init__(
        self,
        class_names: Sequence[str],
        label_smoothing: float = 0.0,
        cam: ClassActivationRecord | None = None,
    ) -> None:
        if len(class_names) < 2:
            raise ArtifactError(
                f"classification needs at least 2 classes, the dataset has {len(class_names)}"
                " — add images of another class and preprocess again"
            )
        self.class_names = list(class_names)
        self.label_smoothing = label_smoothing
        self.cam = cam

    @classmethod
    def from_manifest(cls, manifest: Any, *, label_smoothing: float = 0.0) -> ClassificationTask:
        """Build from a manifest's ``class_names`` (and a bundle's ``cam`` record)."""
        return cls(class_names_of(manifest), label_smoothing, cam_record_of(manifest))

    @property
    def labels(self) -> list[str]:
        """The class names."""
        return self.class_names

    # ------------------------------------------------------------ torch-free half

    def answer(
        self,
        main: NDArray[np.float32],
        extra: Mapping[str, NDArray[np.float32]],
        options: PredictOptions,
    ) -> dict[str, Any]:
        """``label``, ``probability``, the ``top_k`` labels and (when asked) the top class's map."""
        k = min(options.top_k or options.default_top_k, main.shape[0])
        order = np.argsort(-main, kind="stable")[:k]
        top = [{"label": self.class_names[i], "probability": float(main[i])} for i in order]
        answer: dict[str, Any] = {
            "label": top[0]["label"],
            "probability": top[0]["probability"],
            "top_k": top,
        }
        heatmap = self.cam_answer(main, extra, options)
        if heatmap is not None:
            answer["heatmap"] = heatmap
        return answer

    @classmethod
    def flat_answer(cls, answer: Mapping[str, Any]) -> dict[str, Any]:
        """``label`` and ``probability``."""
        return {"label": answer.get("label"), "probability": answer.get("probability")}

    @classmethod
    def answer_text(cls, answer: Mapping[str, Any]) -> str:
        """``label (probability)``."""
        return f"{answer['label']} ({answer['probability']:.3f})"

    def predicted_labels(self, answer: Mapping[str, Any]) -> list[str]:
        """The top label."""
        return [str(answer["label"])]

    def score(self, outputs: NDArray[Any], targets: NDArray[Any]) -> TaskMetrics:
        """See :func:`classification_report`."""
        return classification_report(outputs, targets, self.class_names)

    def plots(
        self, scored: TaskMetrics, outputs: NDArray[Any], targets: NDArray[Any]
    ) -> list[Plot]:
        """Confusion matrix and reliability diagram."""
        from visionops.tasks import figures as eval_plots

        del outputs, targets
        calibration = scored.extra["calibration"]
        nan = float("nan")
        return [
            Plot(
                "confusion_matrix.png",
                "Confusion matrix, each row normalised to the true class's items.",
                eval_plots.confusion_matrix_png(
                    scored.extra["confusion_matrix"]["normalized"], self.class_names
                ),
            ),
            Plot(
                "reliability_diagram.png",
                f"Reliability diagram: accuracy against confidence in {CALIBRATION_BINS} bins.",
                eval_plots.reliability_diagram_png(
                    calibration["edges"],
                    [nan if v is None else v for v in calibration["accuracy"]],
                    [nan if v is None else v for v in calibration["confidence"]],
                    calibration["count"],
                    ece=float(scored.metrics["ece"] or 0.0),
                ),
            ),
        ]

    def eval_plots(self, scored: TaskMetrics, outputs: Outputs) -> list[Plot]:
        """The confusion matrix and reliability diagram, then the worst misclassified images."""
        from visionops.tasks import figures as eval_plots

        plots = self.plots(scored, outputs.main, outputs.targets)
        if outputs.images is None or outputs.indices is None:
            return plots
        probabilities = np.asarray(outputs.main, np.float64).reshape(len(outputs.main), -1)
        truth = np.asarray(outputs.targets).reshape(-1).astype(np.int64)
        guesses = probabilities.argmax(axis=1)
        wrong = np.flatnonzero(guesses != truth)
        if not len(wrong):
            return plots
        # The most confident mistakes first: what the model is surest about and gets wrong.
        confidence = probabilities[wrong, guesses[wrong]]
        shown = wrong[np.argsort(-confidence, kind="stable")][:_GALLERY_SIZE]
        captions = [
            f"#{int(outputs.indices[row])}\n"
            f"pred {_short_name(self.labels[guesses[row]])}"
            f" ({probabilities[row, guesses[row]]:.2f})\n"
            f"true {_short_name(self.labels[truth[row]])}"
            for row in shown
        ]
        png = eval_plots.image_gallery_png(
            [np.asarray(outputs.images[int(outputs.indices[row])]) for row in shown],
            captions,
            title=f"worst misclassified: {len(shown)} of {len(wrong)} mistakes,"
            " most confident first",
        )
        plots.append(
            Plot(
                "worst_misclassified.png",
                "The misclassified images the model was surest about: predicted class and"
                " probability, true class, #row in the prepared dataset.",
                png,
            )
        )
        return plots

    def output_columns(self, main: NDArray[Any]) -> dict[str, NDArray[np.float64]]:
        """One probability column per class."""
        values = np.asarray(main, np.float64).reshape(len(main), -1)
        return {f"p({name})": values[:, i] for i, name in enumerate(self.class_names)}

    def caption(self, prediction: NDArray[Any], target: NDArray[Any]) -> str:
        """``pred <label> (<probability>) · true <label>``."""
        guess = int(np.asarray(prediction).argmax())
        return (
            f"pred {self.labels[guess]} ({prediction[guess]:.2f}) · true {self.labels[int(target)]}"
        )

    def predicted_classes(self, main: NDArray[Any]) -> NDArray[np.int64]:
        """The arg-max class of each image."""
        classes: NDArray[np.int64] = np.asarray(main).reshape(len(main), -1).argmax(axis=1)
        return classes.astype(np.int64)

    @classmethod
    def training_data_problem(cls, names: Sequence[str], train: NDArray[Any]) -> str | None:
        """Fewer than two classes, or a class without a training image."""
        if len(names) < 2:
            return (
                f"only one class ({', '.join(names)}) — classification needs at least two class"
                " folders; for good-versus-defect data name the folders good/ and <defect>/ and"
                " pass --task anomaly"
            )
        missing = [n for i, n in enumerate(names) if not np.any(train == i)]
        if missing:
            return (
                f"class {', '.join(repr(m) for m in missing[:5])} has no usable training image"
                " — add images of it to the train split, or remove the class"
            )
        return None

    # ------------------------------------------------------------- training half

    @property
    def num_outputs(self) -> int:
        """One logit per class."""
        return len(self.class_names)

    def encode_targets(self, targets: torch.Tensor) -> torch.Tensor:
        """Class indices as int64."""
        return targets.long()

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Cross-entropy (computed in fp32 even under autocast)."""
        from torch.nn import functional

        return functional.cross_entropy(
            outputs.float(), targets, label_smoothing=self.label_smoothing
        )

    def postprocess(self, outputs: torch.Tensor) -> torch.Tensor:
        """Softmax probabilities."""
        return outputs.float().softmax(dim=1)

    def metrics(
        self, predictions: NDArray[np.floating[Any]], targets: NDArray[Any]
    ) -> dict[str, float]:
        """See :func:`classification_metrics`."""
        return classification_metrics(predictions, targets)
