"""``visionops train`` for a task built in one pass instead of epochs (anomaly detection).

The task's hooks do the method (:meth:`~visionops.tasks.Task.plan_fit`,
:meth:`~visionops.tasks.Task.fit`, :meth:`~visionops.tasks.Task.fit_postprocessing` on the
validation outputs); this module writes the same run folder as the epoch loop through the
same writers: :class:`~visionops.runs.RunWriter` (the folder's lock, ``run.json``,
``history.jsonl`` with one row, ``runs/latest``),
:func:`~visionops.train.checkpoints.save_checkpoint` (``checkpoints/{best,last}.pt``),
``config.yaml``, ``metrics.json`` and ``train.log``.
Everything that can be refused is refused before the folder exists; a run that does not
complete is removed (a resumed one is rebuilt in place).
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any

import numpy as np
from loguru import logger

from visionops._io import atomic_write_json, atomic_write_text
from visionops.artifacts import RunDevice, RunRecord
from visionops.config import Settings, settings_to_yaml
from visionops.data.prepared import PreparedDataset
from visionops.device import DeviceChoice
from visionops.errors import TrainingError
from visionops.logs import log_to_file
from visionops.progress import ProgressReporter
from visionops.results import TrainResult
from visionops.runs import CHECKPOINT_FORMAT, RunWriter, read_run_manifest
from visionops.tasks import Task, finite, get_task
from visionops.tracking.training import start_run_tracking
from visionops.train.checkpoints import save_checkpoint
from visionops.train.dataset import effective_settings
from visionops.train.engine import normalisation
from visionops.train.predict import predict_split
from visionops.train.record import check_resume_fits, new_run_record, now

__all__ = ["train_one_pass"]


def train_one_pass(
    settings: Settings,
    dataset: PreparedDataset,
    *,
    name: str | None,
    exist_ok: bool,
    resume_dir: Path | None,
    choice: DeviceChoice,
    progress: ProgressReporter,
) -> TrainResult:
    """Build the model of a task that is not trained by gradient descent; write its run folder.

    Args:
        settings: Resolved settings.
        dataset: The prepared dataset (its task's :attr:`~visionops.tasks.Task.trained_by_gradient`
            is false).
        name: Run folder name (default ``run-NNN``).
        exist_ok: Replace an existing run of that name.
        resume_dir: A run left unfinished, rebuilt in place.
        choice: Where the model is built.
        progress: Receives the task's bars.

    Returns:
        The run's outcome; ``best_metric`` is the validation value of the task's monitor.

    Raises:
        TrainingError: The task refuses the training data (e.g. a bank over its limit), or a
            resume of a completed run.
        ConfigError: A bad run name, a taken one without ``exist_ok``, a resume with another
            dataset or model.
        DataError: A validation split the task cannot tune on.
        ConcurrencyError: Another process is writing the run.
    """
    started = time.perf_counter()
    settings = effective_settings(settings, dataset)
    task = get_task(dataset.task).from_manifest(dataset.manifest)
    previous: RunRecord | None = None
    if resume_dir is not None:
        previous = read_run_manifest(resume_dir)
        if previous.status == "completed":
            raise TrainingError(
                f"run {previous.name} is complete ({previous.task} runs train in one pass) —"
                " start a new run instead of --resume"
            )
        check_resume_fits(previous, settings, dataset, task, resume_dir)
    train = dataset.indices("train")
    learned = train[task.learns_from(np.asarray(dataset.targets[train]))]
    val_targets = np.asarray(dataset.targets[dataset.indices("val")])
    feature_dim = task.plan_fit(
        settings,
        images=len(learned),
        image_size=dataset.image_size,
        channels=dataset.channels,
        val_targets=val_targets,
    )
    config_text = settings_to_yaml(settings)
    config_hash = hashlib.sha256(config_text.encode("utf-8")).hexdigest()
    if resume_dir is not None:
        writer = RunWriter.reopen(resume_dir, 1)
    else:
        writer = RunWriter.create(settings.runs_root, name, exist_ok)
    with writer:
        try:
            writer.record = new_run_record(
                writer.path.name,
                settings,
                dataset,
                task,
                feature_dim=feature_dim,
                normalization=normalisation(settings, dataset),
                config_hash=config_hash,
                device=RunDevice(type=str(choice.device), precision="fp32", world_size=1),
                epochs=1,
                freeze_backbone=True,
                created_at=previous.created_at if previous is not None else None,
            )
            with log_to_file(writer.path / "train.log"):
                atomic_write_text(writer.path / "config.yaml", config_text)
                writer.write_record()
                metrics = _fit(settings, dataset, task, learned, writer, choice, progress)
        except BaseException:
            # A one-pass run is whole or nothing: a failed rebuild leaves no half-built run.
            if not writer.trusted or previous is not None:
                writer.abandon()
            raise
    seconds = time.perf_counter() - started
    record = writer.record
    return TrainResult(
        run_dir=writer.path,
        name=writer.path.name,
        status="completed",
        task=task.name,
        monitor=task.monitor,
        mode=task.mode,
        best_metric=record.best_metric,
        best_epoch=1,
        epochs_completed=1,
        epochs=1,
        metrics=metrics,
        device=str(choice.device),
        precision="fp32",
        seconds=seconds,
        # The rate of the fit itself (embedding and coreset), not of scoring val and test.
        images_per_s=float(writer.history[0]["images_per_s"]),
        rate_unit="img/s embedded",
    )


def _fit(
    settings: Settings,
    dataset: PreparedDataset,
    task: Task,
    learned: np.ndarray[Any, np.dtype[np.int64]],
    writer: RunWriter,
    choice: DeviceChoice,
    progress: ProgressReporter,
) -> dict[str, Any]:
    """The work: fit, tune on val, score val and test, write checkpoints and records."""
    record = writer.record
    mean, std = record.normalization.mean, record.normalization.std
    tracker = start_run_tracking(
        settings.tracking,
        record,
        writer.path,
        config=settings.model_dump(mode="json"),
        tags=[task.name, settings.model.name],
    )
    try:
        started = time.perf_counter()
        # Sorted indices: the memory map is read front to back.
        model = task.fit(
            np.asarray(dataset.images[learned]), mean, std, device=choice.device, progress=progress
        )
        fit_seconds = time.perf_counter() - started
        results: dict[str, dict[str, float | None]] = {}
        for split in ("val", "test"):
            if not len(dataset.indices(split)):
                continue
            outputs = predict_split(
                task,
                model,
                dataset,
                split,
                mean,
                std,
                batch_size=settings.train.batch_size,
                device=choice.device,
            )
            if split == "val":
                task.fit_postprocessing(outputs.main, outputs.targets)
            results[split] = {
                key: finite(value) for key, value in task.quick_metrics(outputs).items()
            }
        for key, value in task.run_fields().items():
            setattr(record, key, value)
        best_metric = results["val"].get(task.monitor)
        record.status = "completed"
        record.best_epoch = 1
        record.best_metric = best_metric
        record.epochs_completed = 1
        record.finished_at = now()
        fields = record.model_dump(mode="json", include=set(task.run_fields()))
        state = {
            "format": CHECKPOINT_FORMAT,
            "schema_version": 1,
            "epoch": 1,
            "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            **{key: value for key, value in fields.items() if isinstance(value, dict)},
            "best_metric": best_metric,
            "run": record.to_json(),
        }
        for which in ("last", "best"):
            save_checkpoint(state, writer.checkpoints / f"{which}.pt")
        seconds = time.perf_counter() - started
        writer.history = [
            {
                "epoch": 1,
                "seconds": round(seconds, 3),
                "fit_seconds": round(fit_seconds, 3),
                "images_per_s": round(len(learned) / max(fit_seconds, 1e-9), 3),
                **{f"val_{key}": value for key, value in results.get("val", {}).items()},
            }
        ]
        writer.write_history()
        payload = {
            "run": writer.path.name,
            "task": task.name,
            "checkpoint": "best",
            "best_epoch": 1,
            "monitor": {"metric": task.monitor, "mode": task.mode},
            **results,
            **fields,
        }
        atomic_write_json(writer.path / "metrics.json", payload)
        if tracker.enabled:
            tracker.log_epoch(
                1, {k: v for k, v in writer.history[0].items() if isinstance(v, float)}
            )
            tracker.log_summary(
                {f"{split}/{key}": v for split, row in results.items() for key, v in row.items()}
            )
            tracker.log_checkpoint(
                writer.checkpoints / "best.pt",
                f"model-{writer.path.name}",
                {"task": task.name, task.monitor: best_metric},
            )
        writer.write_record()
        writer.first_epoch_done(settings.runs_root)
        tracker.finish("completed")
        logger.info("{} run {} built in {:.1f} s", task.name, writer.path.name, seconds)
        return payload
    except BaseException:
        tracker.finish("failed")
        raise
