"""``visionops eval``: score a trained run on a split of its prepared dataset.

The run's checkpoint is rebuilt with :func:`visionops.runs.load_trained_model`, images are
normalised with the statistics recorded in ``run.json``, outputs go through the task's
post-processing (softmax, sigmoid + tuned thresholds, de-standardisation), and every metric
comes from scikit-learn. The result is written atomically to ``runs/<name>/eval/``:
``metrics.json``, the plots as PNG files, ``predictions.npz`` and a self-contained
``report.html``.

Examples:
    >>> result = evaluate_run(load_settings(), None, split="test")  # doctest: +SKIP
    >>> result.metrics["accuracy"]  # doctest: +SKIP
    0.97
"""

from __future__ import annotations

import contextlib
import io
import math
import re
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from loguru import logger
from numpy.typing import NDArray

from visionops import __version__
from visionops._io import atomic_dir, atomic_write_json, file_sha256
from visionops.errors import ArtifactError, ConfigError, DataError, DatasetNotFoundError
from visionops.progress import NULL_PROGRESS, ProgressReporter

if TYPE_CHECKING:
    import torch

    from visionops.config import Settings

__all__ = [
    "CALIBRATION_BINS",
    "EVAL_KIND",
    "SPLITS",
    "EvalResult",
    "Plot",
    "TaskMetrics",
    "classification_metrics",
    "evaluate_run",
    "expected_calibration_error",
    "multilabel_metrics",
    "regression_metrics",
    "task_plots",
]

EVAL_KIND = "visionops.eval"
SCHEMA_VERSION = 1
SPLITS = ("train", "val", "test")
CALIBRATION_BINS = 15
CHECKPOINTS = ("best", "last")
SUPPORTED_TASKS = ("classification", "multilabel", "regression", "anomaly")
"""The tasks of ``visionops.tasks.TASKS``, named here so a wrong run fails before torch loads."""

FloatArray = NDArray[np.float64]
ArrayLikeFloat = Sequence[float] | NDArray[Any]


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class Plot:
    """One PNG figure of the evaluation.

    Attributes:
        filename: File name inside ``eval/`` (``confusion_matrix.png``).
        caption: One sentence saying what the figure shows.
        png: The PNG bytes.
    """

    filename: str
    caption: str
    png: bytes


@dataclass
class TaskMetrics:
    """Metrics of one task on one set of predictions.

    Attributes:
        metrics: Headline metrics by name (None where undefined, e.g. no positives).
        rows: One dict per class (classification, multilabel) or target (regression).
        extra: Task-specific tables for ``metrics.json`` (confusion matrix, calibration bins).
    """

    metrics: dict[str, float | None]
    rows: list[dict[str, Any]]
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class EvalResult:
    """What ``visionops eval`` produced.

    Attributes:
        run_dir: The evaluated run.
        eval_dir: ``run_dir/eval`` holding ``metrics.json``, plots and ``report.html``.
        task: The run's task.
        split: The split that was scored (``val`` when ``test`` was asked for but empty).
        n: Number of images scored.
        metrics: Headline metrics.
        rows: Per-class (classification, multilabel) or per-target (regression) rows.
        row_kind: ``"class"`` or ``"target"``.
        warnings: Everything the user should know about this evaluation.
        payload: The content of ``metrics.json``.
    """

    run_dir: Path
    eval_dir: Path
    task: str
    split: str
    n: int
    metrics: dict[str, float | None]
    rows: list[dict[str, Any]]
    row_kind: str
    warnings: list[str]
    payload: dict[str, Any]

    @property
    def report_path(self) -> Path:
        """The self-contained HTML report."""
        return self.eval_dir / "report.html"

    @property
    def metrics_path(self) -> Path:
        """``metrics.json``."""
        return self.eval_dir / "metrics.json"


# --------------------------------------------------------------------------- metrics


def _finite(value: float) -> float | None:
    """JSON has no NaN: undefined values are stored as null."""
    number = float(value)
    return number if math.isfinite(number) else None


def expected_calibration_error(
    confidences: ArrayLikeFloat, correct: ArrayLikeFloat, n_bins: int = CALIBRATION_BINS
) -> tuple[float, dict[str, list[float]]]:
    """Expected calibration error of top-class confidences, with equal-width bins.

    scikit-learn has no ECE, so this is the binned definition of Guo et al. (2017): items fall
    in the bin ``(lower, upper]`` of their confidence; ECE is the item-weighted mean of
    ``|accuracy - mean confidence|`` over the bins.

    Args:
        confidences: ``(N,)`` probability of the predicted class.
        correct: ``(N,)`` 1 where the prediction was right, else 0.
        n_bins: Number of equal-width bins on 0..1.

    Returns:
        ``(ece, bins)`` where ``bins`` holds ``edges`` (``n_bins + 1``), and per bin
        ``accuracy``, ``confidence`` (NaN where empty) and ``count``.

    Examples:
        >>> ece, _ = expected_calibration_error([0.9, 0.9], [1, 0], n_bins=10)
        >>> round(ece, 3)
        0.4
    """
    conf = np.asarray(confidences, dtype=np.float64)
    hits = np.asarray(correct, dtype=np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    which = np.clip(np.ceil(conf * n_bins).astype(np.int64) - 1, 0, n_bins - 1)
    counts = np.bincount(which, minlength=n_bins).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        accuracy = np.bincount(which, weights=hits, minlength=n_bins) / counts
        confidence = np.bincount(which, weights=conf, minlength=n_bins) / counts
    gaps = np.where(counts > 0, np.abs(accuracy - confidence), 0.0)
    ece = float(np.sum(gaps * counts) / max(conf.size, 1))
    bins = {
        "edges": edges.tolist(),
        "accuracy": accuracy.tolist(),
        "confidence": confidence.tolist(),
        "count": counts.astype(np.int64).tolist(),
    }
    return ece, bins


def _top_k(num_classes: int) -> int | None:
    """The k of the top-k accuracy to add: K - 1 for 3 to 5 classes, else none.

    The shared task metrics already give ``top5_accuracy`` above 5 classes (top-5 of 5 or
    fewer would always be 1); with 2 classes top-1 is plain accuracy.
    """
    if 3 <= num_classes <= 5:
        return num_classes - 1
    return None


def _headline(shared: dict[str, float]) -> dict[str, float | None]:
    """The task's shared metrics without per-target keys (``r2/<name>``: they are in rows)."""
    return {key: _finite(value) for key, value in shared.items() if "/" not in key}


def classification_metrics(
    probabilities: ArrayLikeFloat, targets: Sequence[int] | NDArray[Any], class_names: Sequence[str]
) -> TaskMetrics:
    """Score single-label predictions.

    The headline starts with the metrics training reports on val
    (:func:`visionops.tasks.classification.classification_metrics`: ``accuracy``,
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

    from visionops.tasks.classification import classification_metrics as shared_metrics

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
        metrics = _headline(shared_metrics(probs, y_true))
    k = _top_k(num_classes)
    if k is not None:
        metrics[f"top{k}_accuracy"] = float(top_k_accuracy_score(y_true, probs, k=k, labels=labels))
    metrics["f1_weighted"] = float(
        f1_score(y_true, y_pred, labels=labels, average="weighted", zero_division=0)
    )
    metrics["log_loss"] = _finite(log_loss(y_true, probs, labels=labels))
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
        "calibration": {"n_bins": CALIBRATION_BINS, **_json_floats(bins)},
    }
    return TaskMetrics(metrics=metrics, rows=rows, extra=extra)


def multilabel_metrics(
    probabilities: ArrayLikeFloat,
    targets: ArrayLikeFloat,
    class_names: Sequence[str],
    thresholds: Sequence[float] | None,
) -> TaskMetrics:
    """Score multi-label predictions.

    The headline starts with the metrics training reports on val
    (:func:`visionops.tasks.multilabel.multilabel_metrics`: ``map`` over labels with
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

    from visionops.tasks.multilabel import multilabel_metrics as shared_metrics

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

    metrics = _headline(shared_metrics(probs, y_true, cut.tolist()))
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


def regression_metrics(
    values: ArrayLikeFloat,
    targets: ArrayLikeFloat,
    target_names: Sequence[str],
    target_units: Sequence[str] | None = None,
) -> TaskMetrics:
    """Score multi-output regression in the targets' original units.

    The headline is what training reports on val
    (:func:`visionops.tasks.regression.regression_metrics`: ``r2``, ``mae``, ``rmse``, each
    the mean over targets) plus ``mape``, the mean over targets of the per-target MAPE.

    Args:
        values: ``(N, T)`` predictions in original units.
        targets: ``(N, T)`` true values in original units.
        target_names: The ``T`` target names.
        target_units: Their units (``kcal``, ``g``; empty when unknown).

    Returns:
        Headline metrics; per target MAE, RMSE, R² and MAPE. MAPE is a fraction
        (0.1 = 10 %) over the items whose true value is not 0 (``mape_n`` says how many),
        since it is undefined at 0.

    Raises:
        ArtifactError: Output count differs from the target count.
    """
    from sklearn.metrics import (
        mean_absolute_error,
        mean_absolute_percentage_error,
        r2_score,
        root_mean_squared_error,
    )

    from visionops.tasks.regression import regression_metrics as shared_metrics

    y_pred = np.asarray(values, dtype=np.float64)
    y_true = np.asarray(targets, dtype=np.float64)
    y_pred = y_pred.reshape(len(y_pred), -1)
    y_true = y_true.reshape(len(y_true), -1)
    count = len(target_names)
    if y_pred.shape[1] != count or y_true.shape[1] != count:
        raise ArtifactError(
            f"the model gives {y_pred.shape[1]} outputs but the run names {count} targets"
            " — the checkpoint and run.json disagree; retrain the run"
        )
    units = list(target_units) if target_units else [""] * count
    rows: list[dict[str, Any]] = []
    for i, name in enumerate(target_names):
        truth, guess = y_true[:, i], y_pred[:, i]
        nonzero = truth != 0
        rows.append(
            {
                "target": str(name),
                "unit": str(units[i] or ""),
                "mae": float(mean_absolute_error(truth, guess)),
                "rmse": float(root_mean_squared_error(truth, guess)),
                "r2": _finite(r2_score(truth, guess)) if truth.size > 1 else None,
                "mape": float(mean_absolute_percentage_error(truth[nonzero], guess[nonzero]))
                if nonzero.any()
                else None,
                "mape_n": int(nonzero.sum()),
                "true_mean": float(truth.mean()),
                "true_std": float(truth.std()),
            }
        )
    metrics = _headline(shared_metrics(y_pred, y_true, list(target_names)))
    mapes = [row["mape"] for row in rows if row["mape"] is not None]
    metrics["mape"] = float(np.mean(mapes)) if mapes else None
    return TaskMetrics(metrics=metrics, rows=rows)


def _json_floats(table: dict[str, list[float]]) -> dict[str, list[float | None]]:
    return {key: [_finite(v) for v in values] for key, values in table.items()}


# --------------------------------------------------------------------------- plots


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "_", name).strip("_").lower() or "target"


def task_plots(
    task: str,
    task_metrics: TaskMetrics,
    outputs: FloatArray,
    targets: FloatArray,
    names: Sequence[str],
    units: Sequence[str] | None = None,
) -> list[Plot]:
    """Draw the evaluation figures of a task.

    Args:
        task: ``classification``, ``multilabel`` or ``regression``.
        task_metrics: What the task's metrics function returned for these predictions.
        outputs: ``(N, K)`` post-processed model outputs.
        targets: The matching truth.
        names: Class, label or target names.
        units: Target units (regression).

    Returns:
        The plots, in the order the report shows them.
    """
    from visionops import eval_plots

    if task == "classification":
        matrix = task_metrics.extra["confusion_matrix"]["normalized"]
        calibration = task_metrics.extra["calibration"]
        nan = float("nan")
        return [
            Plot(
                "confusion_matrix.png",
                "Confusion matrix, each row normalised to the true class's items.",
                eval_plots.confusion_matrix_png(matrix, names),
            ),
            Plot(
                "reliability_diagram.png",
                f"Reliability diagram: accuracy against confidence in {CALIBRATION_BINS} bins.",
                eval_plots.reliability_diagram_png(
                    calibration["edges"],
                    [nan if v is None else v for v in calibration["accuracy"]],
                    [nan if v is None else v for v in calibration["confidence"]],
                    calibration["count"],
                    ece=float(task_metrics.metrics["ece"] or 0.0),
                ),
            ),
        ]
    if task == "multilabel":
        rows = task_metrics.rows
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
    plots = []
    seen: set[str] = set()
    for i, row in enumerate(task_metrics.rows):
        slug = _slug(row["target"])
        filename = f"scatter_{slug}.png" if slug not in seen else f"scatter_{i}_{slug}.png"
        seen.add(slug)
        plots.append(
            Plot(
                filename,
                f"Predicted against true {row['target']}; points on the dashed line are exact.",
                eval_plots.regression_scatter_png(
                    targets[:, i],
                    outputs[:, i],
                    name=row["target"],
                    unit=row["unit"],
                    r2=row["r2"],
                    mae=row["mae"],
                ),
            )
        )
    return plots


# --------------------------------------------------------------------------- inference


def _find_dataset(run_dir: Path, recorded: str) -> Path:
    path = Path(recorded)
    candidates = [path] if path.is_absolute() else [path, run_dir.parent.parent / path]
    for candidate in candidates:
        if (candidate / "manifest.json").is_file():
            return candidate
    raise DatasetNotFoundError(
        f"the prepared dataset {recorded} that run {run_dir.name} was trained on is gone"
        " — recreate it with `visionops data preprocess` (same source and settings)"
    )


def _predict(
    model: Any,
    loader: Iterable[tuple[torch.Tensor, torch.Tensor]],
    total: int,
    normalization: dict[str, Any],
    postprocess: Callable[[torch.Tensor], torch.Tensor],
    *,
    device: torch.device,
    amp_dtype: torch.dtype | None,
    channels_last: bool,
    progress: ProgressReporter,
    description: str,
) -> tuple[FloatArray, NDArray[Any]]:
    """Run the model over the loader's uint8 batches; return post-processed outputs, targets."""
    import torch

    mean = torch.tensor(normalization["mean"], dtype=torch.float32, device=device).view(1, -1, 1, 1)
    std = torch.tensor(normalization["std"], dtype=torch.float32, device=device).view(1, -1, 1, 1)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    model.to(device, memory_format=layout)
    autocast = (
        torch.autocast(device_type=device.type, dtype=amp_dtype)
        if amp_dtype is not None
        else contextlib.nullcontext()
    )
    outputs: list[FloatArray] = []
    targets: list[NDArray[Any]] = []
    bar = progress.start(description, total=total)
    try:
        with torch.inference_mode(), autocast:
            for pixels, truth in loader:
                batch = pixels.to(device, non_blocking=True).contiguous(memory_format=layout)
                normalised = (batch.float().div_(255.0) - mean) / std
                raw, _ = model(normalised)
                outputs.append(postprocess(raw.float()).cpu().numpy().astype(np.float64))
                targets.append(truth.numpy())
                bar.advance(len(truth))
    finally:
        bar.close()
    return np.concatenate(outputs, axis=0), np.concatenate(targets, axis=0)


# --------------------------------------------------------------------------- the stage


def _choose_split(dataset: Any, split: str, warn: list[str]) -> tuple[str, NDArray[np.int64]]:
    indices = np.asarray(dataset.indices(split), dtype=np.int64)
    if len(indices) == 0 and split == "test":
        val = np.asarray(dataset.indices("val"), dtype=np.int64)
        if len(val):
            warn.append(
                "the prepared dataset has no test items — scored the val split instead"
                " (it chose the best checkpoint, so expect optimistic numbers)"
            )
            return "val", val
    if len(indices) == 0:
        raise DataError(
            f"the {split} split of the prepared dataset is empty — pick another with --split,"
            " or re-run `visionops data preprocess` with data.test_ratio/val_ratio above 0"
        )
    return split, indices


def _run_warnings(manifest: dict[str, Any], which: str) -> list[str]:
    status = manifest.get("status")
    if status == "completed":
        return []
    what = {
        "running": "is still training (or was killed)",
        "interrupted": "was interrupted",
        "failed": "failed",
    }.get(str(status), f"has status {status!r}")
    return [f"run {manifest.get('name')} {what} — scored its {which} checkpoint as it is"]


def _checkpoint_epoch(manifest: dict[str, Any], which: str) -> Any:
    return manifest.get("best_epoch") if which == "best" else manifest.get("epochs_completed")


def evaluate_run(
    settings: Settings,
    run: Path | str | None,
    *,
    split: str = "test",
    checkpoint: str = "best",
    device: str | None = None,
    batch_size: int | None = None,
    strict: bool = False,
    progress: ProgressReporter = NULL_PROGRESS,
) -> EvalResult:
    """Evaluate a trained run on one split and write ``runs/<name>/eval/``.

    Args:
        settings: Resolved settings (``runs_root``, ``device``, ``train.amp``,
            ``train.batch_size`` are used).
        run: A run folder or name; None for ``runs/latest``.
        split: ``train``, ``val`` or ``test``. An empty ``test`` split falls back to ``val``
            with a warning.
        checkpoint: ``best`` or ``last``.
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps`` (default: the setting).
        batch_size: Images per forward pass (default: ``train.batch_size``).
        strict: Fail instead of warning when the prepared dataset changed since training.
        progress: Progress reporter.

    Returns:
        The metrics, the per-class or per-target table, and where the files are.

    Raises:
        ConfigError: Unknown split or checkpoint name.
        ArtifactError: No such run, a damaged run, a corrupt checkpoint, an unsupported task,
            or (with ``strict``) a dataset changed since training.
        DatasetNotFoundError: The run's prepared dataset is gone.
        DataError: The chosen split is empty.
        DeviceError: The requested device is not on this machine.
    """
    # torch-free imports only until the inputs are validated: bad input fails fast.
    from visionops.data.prepared import PreparedDataset
    from visionops.report import render_report
    from visionops.runs import load_trained_model, read_run_manifest, resolve_run

    if split not in SPLITS:
        raise ConfigError(f"unknown split '{split}' — use one of {', '.join(SPLITS)}")
    if checkpoint not in CHECKPOINTS:
        raise ConfigError(f"unknown checkpoint '{checkpoint}' — use best or last")
    run_dir = resolve_run(run, settings.runs_root)
    manifest = read_run_manifest(run_dir)
    task = str(manifest.get("task"))
    if task not in SUPPORTED_TASKS:
        raise ArtifactError(
            f"run {run_dir.name} is a {task} run; `visionops eval` scores"
            f" {', '.join(SUPPORTED_TASKS)} runs — train one of those, or read the run's"
            " metrics.json"
        )
    missing = [key for key in ("dataset", "model", "normalization") if not manifest.get(key)]
    if missing:
        raise ArtifactError(
            f"{run_dir}/run.json lacks {', '.join(missing)} — the run did not finish writing"
            " its manifest; retrain it with `visionops train`"
        )
    notes = _run_warnings(manifest, checkpoint)

    recorded = manifest.get("dataset") or {}
    dataset_dir = _find_dataset(run_dir, str(recorded.get("path", "")))
    dataset = PreparedDataset.open(dataset_dir)
    current_fingerprint = dataset.manifest.get("fingerprint")
    trained_fingerprint = recorded.get("fingerprint")
    fingerprint_matches = current_fingerprint == trained_fingerprint
    if not fingerprint_matches:
        message = (
            f"the prepared dataset {dataset_dir} changed since run {run_dir.name} was trained"
            f" (fingerprint {str(trained_fingerprint)[:12]} → {str(current_fingerprint)[:12]})"
        )
        if strict:
            raise ArtifactError(
                f"{message} — re-create the original with `visionops data preprocess`, retrain,"
                " or drop --strict to score anyway"
            )
        notes.append(f"{message} — its splits may overlap the training data")
    run_names = list(manifest.get("class_names") or manifest.get("target_names") or [])
    data_names = list(dataset.class_names or dataset.target_names or [])
    if run_names != data_names:
        raise ArtifactError(
            f"run {run_dir.name} predicts {len(run_names)} outputs ({', '.join(run_names[:4])}…)"
            f" but {dataset_dir} now has {len(data_names)} ({', '.join(data_names[:4])}…) —"
            " re-create the dataset the run was trained on, or retrain on this one"
        )
    used_split, indices = _choose_split(dataset, split, notes)
    if task == "anomaly":
        from visionops.anomaly.evaluate import evaluate_anomaly

        return evaluate_anomaly(
            settings,
            run_dir,
            manifest,
            dataset,
            used_split,
            indices,
            checkpoint=checkpoint,
            notes=notes,
            dataset_record={
                "path": str(recorded.get("path")),
                "name": dataset.manifest.get("name"),
                "fingerprint": current_fingerprint,
                "trained_fingerprint": trained_fingerprint,
                "fingerprint_matches": fingerprint_matches,
            },
            device=device,
            batch_size=batch_size,
            progress=progress,
        )

    from visionops.data.loading import BatchLoader
    from visionops.device import resolve_device
    from visionops.tasks import TASKS

    model, manifest = load_trained_model(run_dir, checkpoint)
    # The task's own post-processing: the one definition training and export also use.
    task_impl = TASKS[task].from_manifest(manifest)
    choice = resolve_device(device or settings.device, amp=settings.train.amp)
    size = batch_size or settings.train.batch_size
    logger.info(
        f"scoring run {run_dir.name} ({task}, {checkpoint} checkpoint) on {len(indices)}"
        f" {used_split} images — {choice.device} ({choice.precision}): {choice.reason}"
    )
    for note in notes:
        logger.warning(note)
    # No shuffle and one shard: batches come in ascending index order, i.e. `indices`.
    loader = BatchLoader(
        dataset, used_split, size, shuffle=False, pin_memory=choice.device.type == "cuda"
    )
    started = time.perf_counter()
    outputs, targets = _predict(
        model,
        loader,
        len(indices),
        manifest["normalization"],
        task_impl.postprocess,
        device=choice.device,
        amp_dtype=choice.amp_dtype,
        # channels-last pays off on CUDA; on CPU it can be many times slower (depthwise
        # convolutions of shufflenet/mobilenet), so the CPU gets the default layout.
        channels_last=settings.train.channels_last and choice.device.type == "cuda",
        progress=progress,
        description=f"eval {used_split}",
    )
    seconds = time.perf_counter() - started

    names: list[str]
    units: list[str] | None = None
    if task == "classification":
        names = [str(name) for name in manifest["class_names"]]
        scored = classification_metrics(outputs, targets, names)
        row_kind = "class"
    elif task == "multilabel":
        names = [str(name) for name in manifest["class_names"]]
        scored = multilabel_metrics(outputs, targets, names, manifest.get("thresholds"))
        row_kind = "class"
    else:
        names = [str(name) for name in manifest["target_names"]]
        units = [str(unit or "") for unit in (manifest.get("target_units") or [""] * len(names))]
        scored = regression_metrics(outputs, targets, names, units)
        row_kind = "target"
    plots = task_plots(task, scored, outputs, targets.astype(np.float64), names, units)

    checkpoint_path = run_dir / "checkpoints" / f"{checkpoint}.pt"
    payload: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "kind": EVAL_KIND,
        "run": str(manifest.get("name", run_dir.name)),
        "task": task,
        "split": used_split,
        "requested_split": split,
        "n": len(indices),
        "metrics": scored.metrics,
        "per_class": scored.rows if row_kind == "class" else None,
        "per_target": scored.rows if row_kind == "target" else None,
        **scored.extra,
        "checkpoint": {
            "which": checkpoint,
            "file": f"checkpoints/{checkpoint}.pt",
            "epoch": _checkpoint_epoch(manifest, checkpoint),
            "sha256": file_sha256(checkpoint_path),
        },
        "dataset": {
            "path": str(recorded.get("path")),
            "name": dataset.manifest.get("name"),
            "fingerprint": current_fingerprint,
            "trained_fingerprint": trained_fingerprint,
            "fingerprint_matches": fingerprint_matches,
        },
        "model": manifest.get("model"),
        "inference": {
            "device": str(choice.device),
            "precision": choice.precision,
            "batch_size": size,
            "seconds": round(seconds, 3),
            "images_per_s": round(len(indices) / seconds, 1) if seconds > 0 else None,
        },
        "plots": {plot.filename: plot.caption for plot in plots},
        "warnings": notes,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "visionops_version": __version__,
    }

    eval_dir = run_dir / "eval"
    with atomic_dir(eval_dir) as staging:
        for plot in plots:
            (staging / plot.filename).write_bytes(plot.png)
        buffer = io.BytesIO()
        np.savez_compressed(
            buffer,
            indices=indices,
            outputs=outputs.astype(np.float32),
            targets=targets,
        )
        (staging / "predictions.npz").write_bytes(buffer.getvalue())
        atomic_write_json(staging / "metrics.json", payload)
        report = render_report(payload, {plot.filename: plot.png for plot in plots})
        (staging / "report.html").write_text(report, encoding="utf-8")
    logger.info(f"wrote {eval_dir}/ (metrics.json, report.html, {len(plots)} plots)")
    return EvalResult(
        run_dir=run_dir,
        eval_dir=eval_dir,
        task=task,
        split=used_split,
        n=len(indices),
        metrics=scored.metrics,
        rows=scored.rows,
        row_kind=row_kind,
        warnings=notes,
        payload=payload,
    )
