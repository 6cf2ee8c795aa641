"""What each stage returns to its caller (the CLI renders these). No torch, no stage imports.

Kept apart from the stages so that a caller (the CLI, quickstart) reads a result without
importing the stage that made it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from visionops.artifacts import BundleMeta, ParityRecord, QuantizedRecord

__all__ = ["EvalResult", "ExportResult", "TrainResult"]


@dataclass
class TrainResult:
    """What :func:`train` did.

    Attributes:
        run_dir: The run folder.
        name: The run name.
        status: ``completed`` or ``interrupted`` (failures raise instead).
        task: The task trained.
        monitor: Validation metric that picked the best checkpoint.
        mode: ``max`` or ``min``.
        best_metric: Its best value (None if no epoch finished).
        best_epoch: Epoch of the best checkpoint.
        epochs_completed: Epochs finished in total (including before a resume).
        epochs: Epochs asked for.
        stopped_early: Whether early stopping ended the run.
        metrics: The content of ``metrics.json`` (``val`` and, if present, ``test``).
        device: Device used (``cpu``, ``cuda:0`` ...).
        precision: ``fp32``, ``bf16 mixed`` or ``fp16 mixed``.
        seconds: Wall time of this invocation.
        images_per_s: Mean training throughput of this invocation (all processes).
        resumed_from: Epochs already done when this invocation started (0 for a new run).
        rank: This process's rank (only rank 0 wrote the run; others return a stub).
        resume_command: The command that continues an interrupted run.
        kept: What an interrupted run keeps, in words (``epoch 3 of 20``; ``epoch 1 up to
            batch 5 of 14`` from a mid-epoch checkpoint).
        rate_unit: What ``images_per_s`` counts: ``img/s`` trained, or ``img/s embedded``
            for a task built in one pass (an anomaly memory bank).
    """

    run_dir: Path
    name: str
    status: str
    task: str
    monitor: str
    mode: str
    best_metric: float | None
    best_epoch: int | None
    epochs_completed: int
    epochs: int
    stopped_early: bool = False
    metrics: dict[str, Any] = field(default_factory=dict)
    device: str = "cpu"
    precision: str = "fp32"
    seconds: float = 0.0
    images_per_s: float = 0.0
    resumed_from: int = 0
    rank: int = 0
    resume_command: str | None = None
    kept: str | None = None
    rate_unit: str = "img/s"


@dataclass
class ExportResult:
    """What ``visionops export`` made.

    Attributes:
        bundle_dir: The bundle folder.
        meta: ``visionops.json`` as written.
        parity: ``parity.json`` as written.
        quantized: The int8 record (``accepted``, ``reason``, metrics, speed-up) or None.
        warnings: Things the user should know (dataset changed since training, ...).
        seconds: Wall time of the export.
        exported: False when ``exist_ok`` found a bundle and returned it as it is.
    """

    bundle_dir: Path
    meta: BundleMeta
    parity: ParityRecord
    quantized: QuantizedRecord | None
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0
    exported: bool = True


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
