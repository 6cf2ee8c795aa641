"""``visionops eval``: score a trained run on a split of its prepared dataset.

The run's model is rebuilt by its task (:meth:`~visionops.tasks.Task.load_model`), images
are normalised with the statistics recorded in ``run.json``, outputs are what the task's
graph computes (:meth:`~visionops.tasks.Task.graph_outputs`: softmax, sigmoid + tuned
thresholds, de-standardisation, anomaly scores and heatmaps), and the task scores and draws
them (every metric comes from scikit-learn). The result is written atomically to
``runs/<name>/eval/``: ``metrics.json``, the plots as PNG files, ``predictions.npz`` and a
self-contained ``report.html``.

Examples:
    >>> result = evaluate_run(load_settings(), None, split="test")  # doctest: +SKIP
    >>> result.metrics["accuracy"]  # doctest: +SKIP
    0.97
"""

from __future__ import annotations

import io
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from loguru import logger
from numpy.typing import NDArray

from visionops import __version__
from visionops._io import atomic_dir, file_sha256
from visionops.artifacts import (
    CheckpointRef,
    EvalDataset,
    EvalInference,
    EvalMetrics,
    EvalRow,
    RunRecord,
)
from visionops.errors import ArtifactError, ConfigError, DataError
from visionops.progress import NULL_PROGRESS, ProgressReporter
from visionops.results import EvalResult
from visionops.tasks import TASKS, Outputs, Plot, Task, TaskMetrics, task_for

if TYPE_CHECKING:
    from torch import nn

    from visionops.config import Settings
    from visionops.data.prepared import PreparedDataset

__all__ = [
    "EVAL_KIND",
    "SPLITS",
    "EvalResult",
    "evaluate_run",
    "write_eval_dir",
]

EVAL_KIND = EvalMetrics.KIND
SCHEMA_VERSION = EvalMetrics.SCHEMA_VERSION
SPLITS = ("train", "val", "test")
CHECKPOINTS = ("best", "last")

# --------------------------------------------------------------------------- the stage


def _choose_split(
    dataset: PreparedDataset, split: str, warn: list[str]
) -> tuple[str, NDArray[np.int64]]:
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


def _run_warnings(manifest: RunRecord, which: str) -> list[str]:
    status = manifest.status
    if status == "completed":
        return []
    what = {
        "running": "is still training (or was killed)",
        "interrupted": "was interrupted",
        "failed": "failed",
    }.get(str(status), f"has status {status!r}")
    return [f"run {manifest.name} {what} — scored its {which} checkpoint as it is"]


def _checkpoint_epoch(manifest: RunRecord, which: str) -> int | None:
    return manifest.best_epoch if which == "best" else manifest.epochs_completed


@dataclass
class _Scored:
    """A run's model scored on one split: what ``metrics.json`` and the report are made of."""

    outputs: Outputs
    scored: TaskMetrics
    plots: list[Plot]
    inference: EvalInference


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

    Every task goes the same steps: check the request (:func:`_resolve_request`), find the
    run's dataset (:func:`_open_dataset`), pick the split, predict and let the task score and
    draw (:func:`_score`), then write the folder (:func:`write_eval_dir`).

    Args:
        settings: Resolved settings (``runs_root``, ``device``, ``eval.precision``,
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
    # torch-free steps first: bad input fails fast.
    run_dir, manifest = _resolve_request(settings, run, split, checkpoint)
    notes = _run_warnings(manifest, checkpoint)
    dataset, dataset_record = _open_dataset(run_dir, manifest, strict, notes)
    used_split, indices = _choose_split(dataset, split, notes)
    model, manifest = task_for(manifest).load_model(run_dir, checkpoint)
    # Built from the checkpoint's record: the post-processing it was tuned with.
    task = task_for(manifest)
    result = _score(
        settings,
        task,
        model,
        manifest,
        dataset,
        used_split,
        device=device,
        batch_size=batch_size,
        notes=notes,
        progress=progress,
        checkpoint=checkpoint,
    )
    rows = [EvalRow.model_validate(dict(row)) for row in result.scored.rows]
    record = EvalMetrics(
        run=manifest.name,
        task=task.name,
        split=used_split,
        requested_split=split,
        n=len(indices),
        metrics=result.scored.metrics,
        per_class=rows if task.row_kind == "class" else None,
        per_target=rows if task.row_kind == "target" else None,
        checkpoint=CheckpointRef(
            which=checkpoint,
            file=f"checkpoints/{checkpoint}.pt",
            epoch=_checkpoint_epoch(manifest, checkpoint),
            sha256=file_sha256(run_dir / "checkpoints" / f"{checkpoint}.pt"),
        ),
        dataset=dataset_record,
        model=manifest.model,
        inference=result.inference,
        plots={plot.filename: plot.caption for plot in result.plots},
        warnings=notes,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        visionops_version=__version__,
        **result.scored.extra,
    )
    outputs = result.outputs
    written = write_eval_dir(
        run_dir,
        record,
        result.plots,
        {
            "indices": indices,
            "outputs": outputs.main,
            "targets": outputs.targets,
            **task.saved_outputs(outputs),
        },
    )
    return EvalResult(
        run_dir=run_dir,
        eval_dir=run_dir / "eval",
        task=task.name,
        split=used_split,
        n=len(indices),
        metrics=result.scored.metrics,
        rows=result.scored.rows,
        row_kind=task.row_kind,
        warnings=notes,
        payload=written.to_json(),
    )


def _resolve_request(
    settings: Settings, run: Path | str | None, split: str, checkpoint: str
) -> tuple[Path, RunRecord]:
    """The run folder and record asked for, once the split, checkpoint and task are known."""
    from visionops.runs import read_run_manifest, resolve_run

    if split not in SPLITS:
        raise ConfigError(f"unknown split '{split}' — use one of {', '.join(SPLITS)}")
    if checkpoint not in CHECKPOINTS:
        raise ConfigError(f"unknown checkpoint '{checkpoint}' — use best or last")
    run_dir = resolve_run(run, settings.runs_root)
    manifest = read_run_manifest(run_dir)
    if manifest.task not in TASKS:
        raise ArtifactError(
            f"run {run_dir.name} is a {manifest.task} run; `visionops eval` scores"
            f" {', '.join(TASKS)} runs — train one of those, or read the run's metrics.json"
        )
    return run_dir, manifest


def _open_dataset(
    run_dir: Path, manifest: RunRecord, strict: bool, notes: list[str]
) -> tuple[PreparedDataset, EvalDataset]:
    """The run's prepared dataset, refused when it no longer fits the run's outputs.

    A changed fingerprint is a warning in ``notes`` (an error with ``strict``).
    """
    from visionops.data.prepared import PreparedDataset
    from visionops.runs import find_run_dataset

    recorded = manifest.dataset
    dataset_dir = find_run_dataset(run_dir, manifest)
    dataset = PreparedDataset.open(dataset_dir)
    matches = dataset.fingerprint == recorded.fingerprint
    if not matches:
        message = (
            f"the prepared dataset {dataset_dir} changed since run {run_dir.name} was trained"
            f" (fingerprint {str(recorded.fingerprint)[:12]} → {str(dataset.fingerprint)[:12]})"
        )
        if strict:
            raise ArtifactError(
                f"{message} — re-create the original with `visionops data preprocess`, retrain,"
                " or drop --strict to score anyway"
            )
        notes.append(f"{message} — its splits may overlap the training data")
    run_names = manifest.labels
    data_names = list(dataset.class_names or dataset.target_names or [])
    if run_names != data_names:
        raise ArtifactError(
            f"run {run_dir.name} predicts {len(run_names)} outputs ({', '.join(run_names[:4])}…)"
            f" but {dataset_dir} now has {len(data_names)} ({', '.join(data_names[:4])}…) —"
            " re-create the dataset the run was trained on, or retrain on this one"
        )
    return dataset, EvalDataset(
        path=recorded.path,
        name=dataset.name,
        fingerprint=dataset.fingerprint,
        trained_fingerprint=recorded.fingerprint,
        fingerprint_matches=matches,
    )


def _score(
    settings: Settings,
    task: Task,
    model: nn.Module,
    manifest: RunRecord,
    dataset: PreparedDataset,
    split: str,
    *,
    device: str | None,
    batch_size: int | None,
    notes: list[str],
    progress: ProgressReporter,
    checkpoint: str,
) -> _Scored:
    """Predict ``split`` with the run's model; the task's metrics and figures of the outputs."""
    from visionops.device import resolve_device
    from visionops.train.predict import predict_split

    amp = task.mixed_precision and settings.eval.precision == "auto"
    choice = resolve_device(device or settings.device, amp=amp)
    size = batch_size or settings.train.batch_size
    logger.info(
        f"scoring run {manifest.name} ({task.name}, {checkpoint} checkpoint) on"
        f" {len(dataset.indices(split))} {split} images — {choice.device}"
        f" ({choice.precision}): {choice.reason}"
    )
    for note in notes:
        logger.warning(note)
    started = time.perf_counter()
    outputs = predict_split(
        task,
        model,
        dataset,
        split,
        manifest.normalization.mean,
        manifest.normalization.std,
        batch_size=size,
        device=choice.device,
        amp_dtype=choice.amp_dtype,
        # channels-last pays off on CUDA; on CPU it can be many times slower (depthwise
        # convolutions of shufflenet/mobilenet), so the CPU gets the default layout.
        channels_last=settings.train.channels_last and choice.device.type == "cuda",
        progress=progress,
    )
    seconds = time.perf_counter() - started
    scored = task.score_outputs(outputs)
    return _Scored(
        outputs=outputs,
        scored=scored,
        plots=task.eval_plots(scored, outputs),
        inference=EvalInference(
            device=str(choice.device),
            precision=choice.precision,
            batch_size=size,
            seconds=round(seconds, 3),
            images_per_s=round(len(outputs.main) / seconds, 1) if seconds > 0 else None,
        ),
    )


def write_eval_dir(
    run_dir: Path,
    record: EvalMetrics,
    plots: Sequence[Plot],
    arrays: Mapping[str, NDArray[Any]],
) -> EvalMetrics:
    """Write ``run_dir/eval/`` all at once: metrics.json, report.html, plots, predictions.npz.

    Args:
        run_dir: The run folder.
        record: The ``metrics.json`` content.
        plots: Figures, embedded in the report and written as PNG files.
        arrays: What ``predictions.npz`` keeps (``indices``, ``outputs``, ``targets``, ...);
            float arrays are stored as float32, except float16 ones.

    Returns:
        The record written as ``metrics.json``.
    """
    from visionops.evaluate.report import render_report

    eval_dir = run_dir / "eval"
    with atomic_dir(eval_dir) as staging:
        for plot in plots:
            (staging / plot.filename).write_bytes(plot.png)
        stored: dict[str, NDArray[Any]] = {
            name: array.astype(np.float32)
            if array.dtype.kind == "f" and array.dtype != np.float16
            else array
            for name, array in arrays.items()
        }
        buffer = io.BytesIO()
        np.savez_compressed(buffer, allow_pickle=False, **stored)
        (staging / "predictions.npz").write_bytes(buffer.getvalue())
        record.write(staging)
        report = render_report(record.to_json(), {plot.filename: plot.png for plot in plots})
        (staging / "report.html").write_text(report, encoding="utf-8")
    logger.info(f"wrote {eval_dir}/ (metrics.json, report.html, {len(plots)} plots)")
    return record
