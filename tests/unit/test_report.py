"""The self-contained HTML report and the evaluation plots."""

from __future__ import annotations

import base64
import re
from html.parser import HTMLParser
from typing import Any

import numpy as np
import pytest

from visionops.artifacts import EvalMetrics
from visionops.evaluate.report import format_value, metric_label, render_report
from visionops.tasks.figures import (
    confusion_matrix_png,
    per_class_bars_png,
    regression_scatter_png,
    reliability_diagram_png,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _png_size(png: bytes) -> tuple[int, int]:
    return int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")


class _Resources(HTMLParser):
    """Collects every URL-bearing attribute and every tag name of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.tags: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        self.urls += [value or "" for name, value in attrs if name in {"src", "href"}]


def _payload(**changes: Any) -> EvalMetrics:
    payload: dict[str, Any] = {
        "run": "run-003",
        "task": "classification",
        "split": "test",
        "requested_split": "test",
        "n": 40,
        "metrics": {"accuracy": 0.875, "top5_accuracy": 1.0, "f1_macro": 0.5, "log_loss": None},
        "per_class": [
            {"class": "<b>cat</b>", "precision": 1.0, "recall": 0.75, "f1": 0.857, "support": 4},
            {"class": "dog", "precision": 0.8, "recall": 1.0, "f1": 0.889, "support": 4},
        ],
        "per_target": None,
        "checkpoint": {"which": "best", "file": "checkpoints/best.pt", "epoch": 4, "sha256": "a"},
        "dataset": {"name": "pets", "path": "data/prepared/pets", "fingerprint": "f" * 64},
        "inference": {"device": "cpu", "precision": "fp32", "images_per_s": 100.0},
        "model": {"name": "resnet18", "num_outputs": 2, "channels": 3, "image_size": 64},
        "plots": {"confusion_matrix.png": "Confusion matrix.", "scatter.png": "A scatter."},
        "warnings": [],
        "created_at": "2026-01-01T00:00:00+00:00",
        "visionops_version": "0.1.0",
    }
    payload.update(changes)
    return EvalMetrics(**payload)


@pytest.fixture(scope="module")
def pngs() -> dict[str, bytes]:
    return {
        "confusion_matrix.png": confusion_matrix_png(np.eye(2), ["cat", "dog"]),
        "scatter.png": regression_scatter_png([1, 2, 3], [1.1, 2.2, 2.9], name="mass", unit="g"),
    }


def test_report_is_self_contained_and_embeds_every_plot(pngs: dict[str, bytes]) -> None:
    page = render_report(_payload(), pngs)
    parser = _Resources()
    parser.feed(page)
    assert parser.urls, "the plots should be <img> tags"
    assert all(url.startswith("data:image/png;base64,") for url in parser.urls)
    assert not parser.tags & {"script", "link", "iframe", "object"}
    embedded = [base64.b64decode(url.split(",", 1)[1]) for url in parser.urls]
    assert embedded == [pngs["confusion_matrix.png"], pngs["scatter.png"]]
    assert "Confusion matrix." in page


def test_report_shows_metrics_rows_and_escapes_names(pngs: dict[str, bytes]) -> None:
    page = render_report(_payload(), pngs)
    assert "Evaluation of run-003" in page
    assert "Top-5 accuracy" in page
    assert "0.8750" in page
    assert "&lt;b&gt;cat&lt;/b&gt;" in page
    assert "<b>cat</b>" not in page
    assert "—" in page  # the undefined log loss
    assert "since training" not in page  # without fingerprint_matches nothing is claimed


def test_report_lists_warnings(pngs: dict[str, bytes]) -> None:
    note = "the prepared dataset has no test items — scored the val split instead"
    page = render_report(_payload(warnings=[note], split="val"), pngs)
    assert "Warnings" in page
    assert note in page
    assert "(asked for test)" in page
    assert "Warnings" not in render_report(_payload(), pngs)


def test_a_plot_missing_from_the_images_is_skipped(pngs: dict[str, bytes]) -> None:
    page = render_report(_payload(), {"scatter.png": pngs["scatter.png"]})
    assert page.count("data:image/png;base64,") == 1


def test_large_confusion_matrix_gets_a_full_row() -> None:
    small = confusion_matrix_png(np.eye(3), ["a", "b", "c"])
    large = confusion_matrix_png(np.eye(30), [f"class {i}" for i in range(30)])
    page = render_report(
        _payload(plots={"small.png": "s", "large.png": "l"}),
        {"small.png": small, "large.png": large},
    )
    classes = re.findall(r'<figure class="(\w+)">', page)
    assert classes == ["half", "wide"]


def test_plots_are_pngs_of_sensible_size() -> None:
    edges = np.linspace(0, 1, 16)
    accuracy = np.full(15, np.nan)
    accuracy[13:] = [0.5, 0.9]
    confidence = np.full(15, np.nan)
    confidence[13:] = [0.9, 0.97]
    counts = np.zeros(15, dtype=int)
    counts[13:] = [5, 20]
    figures = [
        confusion_matrix_png(np.eye(4), ["a", "b", "c", "d"]),
        reliability_diagram_png(edges, accuracy, confidence, counts, ece=0.1),
        regression_scatter_png([1.0, 2.0], [1.0, 2.5], name="energy", unit="kcal", r2=0.5),
        per_class_bars_png(["a", "b"], {"AP": [0.5, None], "F1": [0.2, 0.4]}, title="scores"),
    ]
    for png in figures:
        assert png.startswith(PNG_MAGIC)
        width, height = _png_size(png)
        assert 300 <= width <= 2000
        assert 300 <= height <= 3000


def test_format_value_and_labels() -> None:
    assert format_value("accuracy", 0.98765) == "0.9877"
    assert format_value("mape", 0.125) == "12.50 %"
    assert format_value("mae", 1234.5678) == "1235"
    assert format_value("support", 12) == "12"
    assert format_value("r2", None) == "—"
    assert metric_label("top3_accuracy")[0] == "Top-3 accuracy"
    assert metric_label("map")[0] == "mAP"
    assert metric_label("something_new") == ("something_new", "")
