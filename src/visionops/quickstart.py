"""``visionops quickstart``: every stage, end to end, on an embedded demo.

fetch → preprocess → train → eval → export → serve check → drift (test images, then test
images shifted with ``drift simulate``: no drift, then drift). The serve check starts the real
serving app in-process, posts raw test images as a client would, and compares its answers with
the exported model's answers on the prepared arrays of the same images: if training and
serving decoded or resized differently, the check fails.

The serving app comes from the caller (the CLI hands in
``create_app`` of the HTTP layer): only ``cli`` imports ``serve``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np

from visionops.config import ServeSettings, Settings
from visionops.errors import SkewError
from visionops.progress import NULL_PROGRESS, ProgressReporter

if TYPE_CHECKING:
    from starlette.types import ASGIApp

    from visionops.inference.bundle import Bundle

__all__ = [
    "DEMO_FOR_TASK",
    "AppFactory",
    "StageReport",
    "drift_check",
    "run_quickstart",
    "serve_check",
]


class AppFactory(Protocol):
    """Builds the serving app for a bundle (``serve.app.create_app``)."""

    def __call__(
        self, bundle: Bundle, settings: ServeSettings, log_dir: Path | None = None
    ) -> ASGIApp:
        """The app serving ``bundle``, logging its predictions to ``log_dir``."""
        ...


DEMO_FOR_TASK = {
    "classification": "shapes",
    "multilabel": "multilabel",
    "regression": "regression",
    "anomaly": "anomaly",
}


@dataclass(frozen=True)
class StageReport:
    """One finished stage.

    Attributes:
        stage: Stage name.
        seconds: Wall time.
        artifact: What it wrote.
        summary: One line of results (or why the stage was skipped).
        skipped: The stage could not run on this demo (``summary`` says why).
    """

    stage: str
    seconds: float
    artifact: Path
    summary: str
    skipped: bool = False


@dataclass
class QuickstartResult:
    """All stages, plus where to look next."""

    stages: list[StageReport] = field(default_factory=list)
    run_dir: Path | None = None
    report: Path | None = None
    bundle: Path | None = None


def _format_metrics(metrics: dict[str, Any], keys: tuple[str, ...]) -> str:
    shown = [f"{key}={metrics[key]:.3f}" for key in keys if isinstance(metrics.get(key), float)]
    return ", ".join(shown) or "done"


def _difference(served: Any, expected: Any) -> float:
    """Largest numeric difference between two answers; inf when their structure differs."""
    if isinstance(expected, dict):
        if not isinstance(served, dict):
            return float("inf")
        return max(
            (_difference(served.get(key), value) for key, value in expected.items()), default=0.0
        )
    if isinstance(expected, list):
        if not isinstance(served, list) or len(served) != len(expected):
            return float("inf")
        return max((_difference(a, b) for a, b in zip(served, expected, strict=True)), default=0.0)
    if isinstance(expected, float) and isinstance(served, int | float):
        return abs(float(served) - expected)
    return 0.0 if served == expected else float("inf")


def serve_check(
    create_app: AppFactory,
    bundle_dir: Path,
    prepared_dir: Path,
    raw_dir: Path,
    settings: Settings,
    count: int = 8,
) -> str:
    """Post raw test images to the real serving app and compare with the bundle's own answers.

    Args:
        create_app: Builds the serving app.
        bundle_dir: The exported bundle.
        prepared_dir: The prepared dataset the run was trained on (its ``items.csv`` maps test
            items back to their raw files).
        raw_dir: The raw dataset those files are in.
        settings: Settings (``serve.*``).
        count: How many test images to send.

    Returns:
        A one-line summary.

    Raises:
        SkewError: A served answer differs from the exported model's answer.
    """
    import csv
    import warnings

    with warnings.catch_warnings():
        # Starlette warns at import that its test client will move to another httpx package;
        # the client works, and the warning would only confuse a quickstart user.
        warnings.filterwarnings("ignore", message=".*starlette.testclient.*")
        from fastapi.testclient import TestClient

    from visionops.data.prepared import PreparedDataset
    from visionops.inference.bundle import load_bundle
    from visionops.inference.session import ModelSession, Postprocessor, PredictOptions

    bundle = load_bundle(bundle_dir)
    dataset = PreparedDataset.open(prepared_dir)
    with (prepared_dir / "items.csv").open(newline="", encoding="utf-8") as handle:
        rows = [row for row in csv.DictReader(handle) if row["split"] == "test"][:count]
    if not rows:
        return f"{SKIPPED}the demo has no test split"
    session = ModelSession(bundle)
    postprocess = Postprocessor(bundle, settings.serve.top_k)
    outputs = session.run(np.stack([dataset.images[int(row["index"])] for row in rows]))
    expected = [postprocess(outputs, i, PredictOptions()) for i in range(len(rows))]
    files = [
        ("file", (Path(row["path"]).name, (raw_dir / row["path"]).read_bytes(), "image/jpeg"))
        for row in rows
    ]
    app = create_app(bundle, settings.serve, log_dir=bundle_dir.parent / "predictions")
    with TestClient(app) as client:
        for _ in range(400):
            if client.get("/ready").status_code == 200:
                break
            time.sleep(0.05)
        response = client.post("/predict", files=files)
    if response.status_code != 200:
        raise SkewError(f"the server answered {response.status_code}: {response.text[:200]}")
    served = response.json()["predictions"]
    worst = max(_difference(answer, want) for answer, want in zip(served, expected, strict=True))
    if worst > 1e-4:
        raise SkewError(
            f"serving disagrees with the exported model by {worst:.2e} on the same test images"
            " — train/serve skew; report this with `visionops doctor --json`"
        )
    return f"{len(rows)} raw test images served, max |served − bundle| = {worst:.1e} (no skew)"


def run_quickstart(
    settings: Settings,
    create_app: AppFactory,
    *,
    task: Literal["classification", "multilabel", "regression", "anomaly"] = "classification",
    progress: ProgressReporter = NULL_PROGRESS,
    on_stage: Callable[[StageReport], None] | None = None,
) -> QuickstartResult:
    """Run every stage on the embedded demo for ``task``.

    Args:
        settings: Resolved settings (epochs, device, sizes...).
        create_app: Builds the serving app for the serve check.
        task: Which demo to run.
        progress: Progress reporter for the long stages.
        on_stage: Called after each stage (the CLI prints it as it happens).

    Returns:
        What each stage did and where the results are.
    """
    from visionops.data.fetch import fetch_dataset
    from visionops.data.preprocess import prepare_dataset
    from visionops.evaluate.stage import evaluate_run
    from visionops.export.stage import export_run
    from visionops.train import train

    result = QuickstartResult()

    def record(stage: str, started: float, artifact: Path, summary: str) -> None:
        skipped = summary.startswith(SKIPPED)
        if skipped:
            summary = summary.removeprefix(SKIPPED)
        report = StageReport(stage, time.perf_counter() - started, artifact, summary, skipped)
        result.stages.append(report)
        if on_stage is not None:
            on_stage(report)

    started = time.perf_counter()
    fetched = fetch_dataset(f"demo:{DEMO_FOR_TASK[task]}", settings, progress=progress)
    record("fetch", started, fetched.path, f"{fetched.source_info.file_count} files")

    started = time.perf_counter()
    prepared = prepare_dataset(fetched.path, settings, progress=progress)
    counts = prepared.manifest.counts
    record(
        "preprocess",
        started,
        prepared.path,
        f"train/val/test = {counts['train']}/{counts['val']}/{counts['test']},"
        f" rejected {counts['rejected']}",
    )

    started = time.perf_counter()
    trained = train(settings, prepared.path, progress=progress)
    result.run_dir = trained.run_dir
    record(
        "train",
        started,
        trained.run_dir,
        f"best {trained.monitor}={trained.best_metric:.3f} at epoch {trained.best_epoch}"
        f" on {trained.device} ({trained.precision})",
    )

    started = time.perf_counter()
    evaluated = evaluate_run(settings, trained.run_dir, progress=progress)
    result.report = evaluated.report_path
    record(
        "eval",
        started,
        evaluated.report_path,
        f"{evaluated.split}: "
        + _format_metrics(evaluated.metrics, ("accuracy", "f1_macro", "map", "r2", "mae")),
    )

    started = time.perf_counter()
    exported = export_run(settings, trained.run_dir, force=True, progress=progress)
    result.bundle = exported.bundle_dir
    record("export", started, exported.bundle_dir, "parity passed")

    started = time.perf_counter()
    summary = serve_check(create_app, exported.bundle_dir, prepared.path, fetched.path, settings)
    record("serve check", started, exported.bundle_dir.parent / "predictions", summary)

    started = time.perf_counter()
    summary = drift_check(exported.bundle_dir, prepared.path, fetched.path, settings)
    record("drift", started, exported.bundle_dir.parent / "drift", summary)
    return result


DRIFT_DEMO_SHIFT = "brightness=1.3"
SKIPPED = "skipped: "
"""How a check's summary starts when it could not run (the stage is then shown as skipped)."""


def drift_check(bundle_dir: Path, prepared_dir: Path, raw_dir: Path, settings: Settings) -> str:
    """Drift reports on the raw test images, then on copies shifted by ``drift simulate``.

    The test images are those of the kind the reference holds (the task's ``learns_from``:
    an anomaly bundle's reference is good images, so its defects are left out here; they
    would be drift from that reference, rightly).

    Returns:
        Both verdicts on one line (or why the check was skipped: too few test images).
    """
    import csv
    import shutil
    import tempfile

    from visionops.data.prepared import PreparedDataset
    from visionops.drift.report import drift_report
    from visionops.drift.simulate import parse_shifts, simulate_folder
    from visionops.errors import DriftError
    from visionops.tasks import get_task

    dataset = PreparedDataset.open(prepared_dir)
    like_reference = (
        get_task(dataset.task)
        .from_manifest(dataset.manifest)
        .learns_from(np.asarray(dataset.targets))
    )
    with (prepared_dir / "items.csv").open(newline="", encoding="utf-8") as handle:
        paths = [
            raw_dir / row["path"]
            for row in csv.DictReader(handle)
            if row["split"] == "test" and like_reference[int(row["index"])]
        ]
    minimum = settings.drift.min_samples
    if len(paths) < minimum:
        return f"{SKIPPED}{len(paths)} test images, the drift tests need {minimum}"
    out = bundle_dir.parent / "drift"
    verdicts = []
    with tempfile.TemporaryDirectory(prefix="visionops-drift-") as tmp:
        unshifted = Path(tmp) / "test"
        for index, path in enumerate(paths):
            target = unshifted / f"{index:05d}{path.suffix}"
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
        shifted = simulate_folder(unshifted, parse_shifts(DRIFT_DEMO_SHIFT), Path(tmp) / "shifted")
        for name, folder in (("test images", unshifted), (DRIFT_DEMO_SHIFT, shifted.out_dir)):
            try:
                report = drift_report(settings, bundle_dir, current=folder, out=out / folder.name)
            except DriftError as exc:
                return f"{SKIPPED}{exc}"
            verdict = "DRIFT" if report.result.drifted else "no drift"
            verdicts.append(f"{name}: {verdict} (p={report.result.p_value:.2g})")
    return "; ".join(verdicts)
