"""Drift figures: histograms that say what their bars count."""

from __future__ import annotations

import numpy as np

from visionops.drift.plots import histograms_figure, histograms_png


def test_histograms_count_shares_of_each_sample_and_say_so() -> None:
    rng = np.random.default_rng(0)
    reference, current = rng.normal(0, 1, 300), rng.normal(0.5, 1, 40)
    figure = histograms_figure([("brightness", reference, current, "p=0.01")])
    axes = figure.axes[0]
    assert axes.get_ylabel() == "share of images"
    heights: dict[str, float] = {}
    for container in axes.containers:
        label = container.patches[0].get_label()  # the legend's label sits on the first bar
        heights[label] = sum(bar.get_height() for bar in container)
    # Samples of 300 and 40 images: each sample's bars sum to 1, so they compare bin by bin.
    assert set(heights) == {"reference (n=300)", "current (n=40)"}
    assert all(abs(total - 1.0) < 1e-9 for total in heights.values()), heights
    assert histograms_png([("brightness", reference, current, "")]).startswith(b"\x89PNG")
