"""``visionops eval`` of an anomaly run: metrics, score histogram and heatmap overlays.

Writes the same ``eval/`` folder as the other tasks (``metrics.json``, ``predictions.npz``,
plots, ``report.html``); the metrics are image AUROC, F1 and accuracy at the run's threshold
and, where the split has ground-truth masks, pixel AUROC and AUPRO. The overlays show the
worst misses (defects scored lowest) and the worst false alarms (good images scored highest).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from visionops import __version__
from visionops._io import file_sha256
from visionops.anomaly.metrics import anomaly_metrics
from visionops.anomaly.model import load_anomaly_model, predict_split
from visionops.anomaly.plots import overlays_png, score_histogram_png
from visionops.config import Settings
from visionops.data.prepared import PreparedDataset
from visionops.device import resolve_device
from visionops.evaluate.stage import write_eval_dir
from visionops.logs import logger
from visionops.progress import NULL_PROGRESS, ProgressReporter

if TYPE_CHECKING:
    from visionops.results import EvalResult

__all__ = ["evaluate_anomaly"]

_SHOWN = 4
"""Images per overlay figure."""


def _finite(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def evaluate_anomaly(
    settings: Settings,
    run_dir: Path,
    dataset: PreparedDataset,
    used_split: str,
    indices: np.ndarray[Any, np.dtype[np.int64]],
    *,
    checkpoint: str,
    notes: list[str],
    dataset_record: dict[str, Any],
    device: str | None = None,
    batch_size: int | None = None,
    progress: ProgressReporter = NULL_PROGRESS,
) -> EvalResult:
    """Score an anomaly run on one split and write ``run_dir/eval/``.

    The caller (:func:`visionops.evaluate.stage.evaluate_run`) has validated the run, found its
    dataset and chosen the split.
    """
    from visionops.artifacts import EvalMetrics
    from visionops.results import EvalResult

    model, run = load_anomaly_model(run_dir, checkpoint)
    threshold = float((run.thresholds or [0.0])[0])
    choice = resolve_device(device or settings.device, amp=False)
    size = batch_size or settings.train.batch_size
    logger.info(
        f"scoring anomaly run {run_dir.name} ({checkpoint}) on {len(indices)} {used_split}"
        f" images — {choice.device}: {choice.reason}"
    )
    for note in notes:
        logger.warning(note)
    bar = progress.start(f"eval {used_split}", total=len(indices))
    started = time.perf_counter()
    outputs = predict_split(
        model, dataset, indices, run.normalization, batch_size=size, device=choice.device
    )
    bar.advance(len(indices))
    bar.close()
    seconds = time.perf_counter() - started
    labels = np.asarray(dataset.targets[indices]).astype(np.int64)
    masks = np.asarray(dataset.masks[indices]) if dataset.masks is not None else None
    has_masks = masks is not None and bool(masks.any())
    raw = anomaly_metrics(
        outputs.scores,
        labels,
        threshold,
        outputs.heatmaps if has_masks else None,
        masks if has_masks else None,
    )
    metrics = {key: _finite(value) for key, value in raw.items()}
    plots = _plots(dataset, indices, outputs.scores, outputs.heatmaps, labels, masks, threshold)
    checkpoint_path = run_dir / "checkpoints" / f"{checkpoint}.pt"
    verdicts = outputs.scores >= threshold
    payload: dict[str, Any] = {
        "schema_version": EvalMetrics.SCHEMA_VERSION,
        "kind": EvalMetrics.KIND,
        "run": run.name,
        "task": "anomaly",
        "split": used_split,
        "requested_split": used_split,
        "n": len(indices),
        "metrics": metrics,
        "per_class": [
            {
                "class": name,
                "support": int((labels == code).sum()),
                "flagged": int(verdicts[labels == code].sum()),
                "mean_score": _finite(float(outputs.scores[labels == code].mean()))
                if (labels == code).any()
                else None,
            }
            for code, name in enumerate(run.class_names or ["good", "defect"])
        ],
        "per_target": None,
        "threshold": threshold,
        "checkpoint": {
            "which": checkpoint,
            "file": f"checkpoints/{checkpoint}.pt",
            "epoch": 1,
            "sha256": file_sha256(checkpoint_path),
        },
        "dataset": dataset_record,
        "model": run.model.model_dump(mode="json"),
        "inference": {
            "device": str(choice.device),
            "precision": "fp32",
            "batch_size": size,
            "seconds": round(seconds, 3),
            "images_per_s": round(len(indices) / seconds, 1) if seconds > 0 else None,
        },
        "plots": {plot.filename: plot.caption for plot in plots},
        "warnings": notes,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "visionops_version": __version__,
    }
    write_eval_dir(
        run_dir,
        payload,
        plots,
        {
            "indices": indices,
            "outputs": outputs.scores,
            "targets": labels,
            "heatmaps": outputs.heatmaps.astype(np.float16),
        },
    )
    return EvalResult(
        run_dir=run_dir,
        eval_dir=run_dir / "eval",
        task="anomaly",
        split=used_split,
        n=len(indices),
        metrics=metrics,
        rows=payload["per_class"],
        row_kind="class",
        warnings=notes,
        payload=payload,
    )


def _plots(
    dataset: PreparedDataset,
    indices: np.ndarray[Any, np.dtype[np.int64]],
    scores: np.ndarray[Any, Any],
    heatmaps: np.ndarray[Any, Any],
    labels: np.ndarray[Any, Any],
    masks: np.ndarray[Any, Any] | None,
    threshold: float,
) -> list[Any]:
    from visionops.tasks import Plot

    plots = [
        Plot(
            "score_histogram.png",
            "Image scores of good and defective images; the dashed line is the threshold.",
            score_histogram_png(scores, labels, threshold),
        )
    ]
    low, high = float(np.percentile(heatmaps, 1)), float(np.percentile(heatmaps, 99.9))
    defects = np.flatnonzero(labels == 1)
    goods = np.flatnonzero(labels == 0)
    chosen = {
        "worst_misses.png": (
            defects[np.argsort(scores[defects])][:_SHOWN],
            "Defective images with the lowest scores (red: heatmap, cyan: true defect).",
        ),
        "false_alarms.png": (
            goods[np.argsort(-scores[goods])][:_SHOWN],
            "Good images with the highest scores (red: heatmap).",
        ),
    }
    for filename, (rows, caption) in chosen.items():
        if not len(rows):
            continue
        images = [np.asarray(dataset.images[indices[row]]) for row in rows]
        plots.append(
            Plot(
                filename,
                caption,
                overlays_png(
                    images,
                    [heatmaps[row] for row in rows],
                    [masks[row] if masks is not None else None for row in rows],
                    [
                        f"#{int(indices[row])} score {scores[row]:.3g}"
                        f" ({'flagged' if scores[row] >= threshold else 'passed'})"
                        for row in rows
                    ],
                    low=low,
                    high=high,
                    title=filename.removesuffix(".png").replace("_", " "),
                ),
            )
        )
    return plots
