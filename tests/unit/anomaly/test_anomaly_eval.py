"""`visionops eval` on an anomaly run: metrics, histogram, overlays in the report."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from visionops.artifacts import EvalMetrics
from visionops.config import load_settings
from visionops.evaluate.stage import evaluate_run


def test_eval_writes_metrics_and_a_report_with_overlays(
    trained_anomaly_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = tmp_path / "project"
    shutil.copytree(trained_anomaly_run.parent.parent, project, symlinks=True)
    monkeypatch.chdir(project)
    settings = load_settings(overrides=["device=cpu"], cwd=project)
    from visionops.anomaly import plots

    drawn: dict[str, tuple[list[str], str]] = {}
    real_overlays = plots.overlays_png

    def overlays_spy(*args: Any, **kwargs: Any) -> bytes:  # the real figure, its words kept
        drawn[kwargs["title"].split(":")[0]] = (list(args[3]), kwargs["title"])
        return real_overlays(*args, **kwargs)

    monkeypatch.setattr(plots, "overlays_png", overlays_spy)
    result = evaluate_run(settings, trained_anomaly_run.name)
    # Each image says what happened to it: a defect is caught or MISSED, a good image passed
    # or a FALSE ALARM; the title counts them (an AUROC near 1 misses none).
    misses, misses_title = drawn["lowest-scoring defects"]
    assert all(c.endswith(("(caught)", "(MISSED)")) for c in misses), misses
    missed = sum(c.endswith("(MISSED)") for c in misses)
    assert misses_title.startswith(f"lowest-scoring defects: {missed} of ")
    alarms, _ = drawn["highest-scoring good images"]
    assert all(c.endswith(("(passed)", "(FALSE ALARM)")) for c in alarms), alarms
    assert result.metrics["image_auroc"] is not None and result.metrics["image_auroc"] >= 0.95
    assert result.metrics["pixel_auroc"] is not None and result.metrics["pixel_auroc"] >= 0.90
    assert result.metrics["aupro"] is not None
    saved = EvalMetrics.read(result.metrics_path)
    assert set(saved.plots) == {"score_histogram.png", "worst_misses.png", "false_alarms.png"}
    # The training run's metrics.json has no model of its own (docs/artifacts.md); the
    # threshold is one of the anomaly task's own fields, which EvalMetrics keeps as extras.
    trained = json.loads((project / "runs" / trained_anomaly_run.name / "metrics.json").read_text())
    assert (saved.model_extra or {})["threshold"] == trained["thresholds"][0]
    report = result.report_path.read_text()
    assert report.count("data:image/png;base64,") == 3
