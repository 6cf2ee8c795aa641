"""Image/pixel AUROC and AUPRO against slow reference definitions."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from visionops.anomaly.metrics import anomaly_metrics, aupro, pixel_auroc


def _aupro_reference(heatmaps: np.ndarray, masks: np.ndarray, limit: float = 0.3) -> float:
    """One pass per threshold, as the MVTec AD paper defines it (8-connected regions)."""
    good = masks == 0
    regions = []
    for index in range(len(masks)):
        labelled, count = ndimage.label(masks[index], structure=np.ones((3, 3)))
        regions += [(index, labelled == r) for r in range(1, count + 1)]
    points = [(0.0, 0.0)]
    for threshold in np.unique(heatmaps)[::-1]:
        predicted = heatmaps >= threshold
        fpr = predicted[good].mean()
        pro = np.mean([predicted[i][r].mean() for i, r in regions])
        points.append((fpr, pro))
    fprs, pros = np.array(points).T
    keep = fprs <= limit
    fprs, pros = fprs[keep], pros[keep]
    # Close the curve exactly at the limit by linear interpolation with the next point.
    following = np.array(points)[~keep][0]
    end = pros[-1] + (limit - fprs[-1]) / (following[0] - fprs[-1]) * (following[1] - pros[-1])
    return float(np.trapezoid(np.append(pros, end), np.append(fprs, limit)) / limit)


def test_aupro_matches_the_per_threshold_definition() -> None:
    rng = np.random.default_rng(0)
    masks = np.zeros((3, 20, 20), np.uint8)
    masks[0, 2:6, 2:6] = 255
    masks[0, 12:14, 10:19] = 255
    masks[2, 8:16, 8:16] = 255
    heatmaps = rng.random((3, 20, 20)).round(2) + (masks > 0) * rng.random((3, 20, 20)) * 0.6
    assert np.isclose(aupro(heatmaps, masks), _aupro_reference(heatmaps, masks))


def test_perfect_maps_score_one_and_small_regions_count_as_much_as_big_ones() -> None:
    masks = np.zeros((1, 40, 40), np.uint8)
    masks[0, 0:30, 0:30] = 1  # big region, found
    masks[0, 35:37, 35:37] = 1  # tiny region, missed
    perfect = masks.astype(float)
    assert np.isclose(aupro(perfect, masks), 1.0)
    assert np.isclose(pixel_auroc(perfect, masks), 1.0)
    big_only = perfect.copy()
    big_only[0, 35:37, 35:37] = 0
    # Pixel AUROC barely notices the missed tiny region; AUPRO halves.
    assert pixel_auroc(big_only, masks) > 0.99
    assert aupro(big_only, masks) < 0.6


def test_metrics_at_the_threshold() -> None:
    metrics = anomaly_metrics(np.array([0.1, 0.4, 0.6, 0.9]), np.array([0, 1, 0, 1]), 0.5)
    assert metrics["image_auroc"] == 0.75
    assert metrics["f1"] == 0.5
    assert metrics["accuracy"] == 0.5
    assert "pixel_auroc" not in metrics


def test_a_thin_diagonal_line_is_one_aupro_region() -> None:
    """A diagonal defect is one region: its overlap is the share of its pixels found."""
    masks = np.zeros((1, 32, 32), dtype=np.uint8)
    rows = np.arange(4, 28)
    masks[0, rows, rows] = 255
    heatmaps = np.zeros((1, 32, 32), dtype=np.float32)
    heatmaps[0, rows[:12], rows[:12]] = 1.0  # the first half of the line is found

    def expected(found: float) -> float:
        # PRO is `found` from FPR 0, then rises linearly to 1 at FPR 1; mean up to FPR 0.3.
        return found + (1 - found) * 0.15

    assert np.isclose(aupro(heatmaps, masks), expected(0.5))
    # One more pixel: one 8-connected region of 25 px, 12 found. With 4-connectivity the
    # line fell apart into 22 regions (12 of them fully found: 12/22).
    masks[0, 20, 21] = 255
    assert np.isclose(aupro(heatmaps, masks), expected(12 / 25))
