"""Anomaly-detection metrics: image and pixel AUROC, per-region overlap (AUPRO), F1.

AUPRO follows the MVTec AD evaluation (Bergmann et al., IJCV 2021): every connected
defect region counts the same however large it is; the per-region overlap is averaged over
regions at each threshold and integrated against the pixel false-positive rate up to 0.3,
then divided by 0.3. It is computed in one sort of all pixels, not one pass per threshold.

Examples:
    >>> image_auroc(np.array([0.1, 0.9]), np.array([0, 1]))
    1.0
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage
from sklearn.metrics import f1_score, roc_auc_score

__all__ = ["anomaly_metrics", "aupro", "image_auroc", "pixel_auroc"]

FloatArray = NDArray[np.floating[Any]]


def image_auroc(scores: FloatArray, labels: NDArray[Any]) -> float:
    """Area under the ROC curve of image scores (NaN without both classes)."""
    labels = np.asarray(labels).astype(bool)
    if labels.all() or not labels.any():
        return float("nan")
    return float(roc_auc_score(labels, scores))


def pixel_auroc(heatmaps: FloatArray, masks: NDArray[Any]) -> float:
    """ROC AUC of every pixel's heatmap value against the ground-truth masks (NaN if no defect)."""
    truth = np.asarray(masks).reshape(-1) > 0
    if truth.all() or not truth.any():
        return float("nan")
    return float(roc_auc_score(truth, np.asarray(heatmaps, dtype=np.float32).reshape(-1)))


def aupro(heatmaps: FloatArray, masks: NDArray[Any], fpr_limit: float = 0.3) -> float:
    """Normalised area under the per-region-overlap curve up to ``fpr_limit``.

    Args:
        heatmaps: ``(N, H, W)`` anomaly maps.
        masks: ``(N, H, W)`` ground truth, non-zero on defects.
        fpr_limit: Integrate over pixel false-positive rates from 0 to this.

    Returns:
        AUPRO in 0..1 (NaN without any defect region or any good pixel). Regions are
        8-connected: a thin diagonal line is one region.
    """
    heatmaps = np.asarray(heatmaps, dtype=np.float64)
    truth = np.asarray(masks) > 0
    # Each good pixel moves the false-positive rate by 1/#good pixels; each defect pixel moves
    # the mean overlap by 1/(#regions * its region's size).
    fpr_step = np.zeros(truth.shape, dtype=np.float64)
    pro_step = np.zeros(truth.shape, dtype=np.float64)
    good = ~truth
    n_good = int(good.sum())
    regions: list[tuple[int, NDArray[np.bool_]]] = []
    # 8-connectivity: a thin diagonal defect is one region, not one per pixel step (as in
    # the MVTec AD evaluation code and anomalib).
    eight = np.ones((3, 3), dtype=bool)
    for index in range(truth.shape[0]):
        labelled, count = ndimage.label(truth[index], structure=eight)
        regions.extend((index, labelled == region) for region in range(1, int(count) + 1))
    if not regions or n_good == 0:
        return float("nan")
    fpr_step[good] = 1.0 / n_good
    for index, region in regions:
        pro_step[index][region] = 1.0 / (len(regions) * int(region.sum()))
    order = np.argsort(-heatmaps.reshape(-1), kind="stable")
    values = heatmaps.reshape(-1)[order]
    fpr = np.cumsum(fpr_step.reshape(-1)[order])
    pro = np.cumsum(pro_step.reshape(-1)[order])
    # A threshold passes every pixel of equal value at once: keep the last of each tie.
    last = np.append(values[1:] != values[:-1], True)
    fpr = np.concatenate([[0.0], fpr[last]])
    pro = np.concatenate([[0.0], pro[last]])
    stop = int(np.searchsorted(fpr, fpr_limit, side="right"))
    if stop < fpr.size:
        share = (fpr_limit - fpr[stop - 1]) / (fpr[stop] - fpr[stop - 1])
        end = pro[stop - 1] + share * (pro[stop] - pro[stop - 1])
        fpr = np.append(fpr[:stop], fpr_limit)
        pro = np.append(pro[:stop], end)
    return float(np.trapezoid(pro, fpr) / fpr_limit)


def anomaly_metrics(
    scores: FloatArray,
    labels: NDArray[Any],
    threshold: float,
    heatmaps: FloatArray | None = None,
    masks: NDArray[Any] | None = None,
) -> dict[str, float]:
    """Every metric of one split.

    Args:
        scores: ``(N,)`` image scores.
        labels: ``(N,)`` 0 = good, 1 = defect.
        threshold: Images scoring at or above it are called anomalous.
        heatmaps: ``(N, H, W)`` anomaly maps, for the pixel metrics.
        masks: ``(N, H, W)`` ground-truth masks; pixel metrics need at least one defect pixel.

    Returns:
        ``image_auroc``, ``f1`` and ``accuracy`` at the threshold and,
        with masks, ``pixel_auroc`` and ``aupro`` (NaN where undefined).
    """
    labels = np.asarray(labels).astype(int)
    verdict = (np.asarray(scores) >= threshold).astype(int)
    metrics = {
        "image_auroc": image_auroc(scores, labels),
        "f1": float(f1_score(labels, verdict, zero_division=0.0)),
        "accuracy": float(np.mean(verdict == labels)) if labels.size else float("nan"),
    }
    if heatmaps is not None and masks is not None:
        metrics["pixel_auroc"] = pixel_auroc(heatmaps, masks)
        metrics["aupro"] = aupro(heatmaps, masks)
    return metrics
