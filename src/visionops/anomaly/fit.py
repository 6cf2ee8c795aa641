"""``visionops train`` on an anomaly dataset: one pass that builds the memory bank.

There are no epochs: the good training images go through the frozen backbone once, the
coreset of their patch features becomes the memory bank, and the threshold is placed on the
validation images. The run folder is the same as for the other tasks (``run.json``,
``config.yaml``, ``checkpoints/{best,last}.pt``, ``history.jsonl`` with one row,
``metrics.json``, ``train.log``, ``runs/latest``), and everything that can be refused
(no good training image, an oversized bank, a validation split without good images) is
refused before the folder is created. A run that did not complete is removed; ``--resume``
on a run left behind by a killed process rebuilds it in place.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torchvision

from visionops import __version__
from visionops._io import atomic_write_json, atomic_write_text
from visionops.anomaly.bank import build_memory_bank, plan_bank
from visionops.anomaly.features import PatchFeatureExtractor, calibrate_batchnorm
from visionops.anomaly.metrics import anomaly_metrics
from visionops.anomaly.model import anomaly_record, normalised_batches, predict_split
from visionops.anomaly.scoring import PatchCoreModel, sigma_for_size
from visionops.anomaly.threshold import choose_threshold
from visionops.artifacts import RunRecord
from visionops.config import Settings, settings_to_yaml
from visionops.data.prepared import PreparedDataset
from visionops.errors import ConfigError, TrainingError
from visionops.logs import log_to_file, logger
from visionops.models import pretrained_normalization
from visionops.progress import NULL_PROGRESS, ProgressReporter
from visionops.runs import CHECKPOINT_FORMAT, next_run_name, update_latest
from visionops.tracking.training import start_run_tracking

if TYPE_CHECKING:
    from visionops.anomaly.bank import BankPlan
    from visionops.results import TrainResult

__all__ = ["MONITOR", "fit_anomaly"]

MONITOR = "image_auroc"
"""The validation metric recorded as ``best_metric`` of an anomaly run."""
_CALIBRATION_IMAGES = 64
"""Good images whose BatchNorm statistics a randomly initialised trunk takes (enough to settle)."""
_RUN_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _shown(path: Path) -> str:
    relative = os.path.relpath(path)
    return str(path) if relative.startswith("..") else relative


def _normalization(settings: Settings, dataset: PreparedDataset) -> dict[str, list[float]]:
    if settings.model.pretrained:
        mean, std = pretrained_normalization(settings.model.name)
        if dataset.channels == 1:
            return {"mean": [float(np.mean(mean))], "std": [float(np.mean(std))]}
        return {"mean": list(mean), "std": list(std)}
    return {"mean": dataset.mean, "std": dataset.std}


def _good_train_indices(dataset: PreparedDataset) -> np.ndarray[Any, np.dtype[np.int64]]:
    train = dataset.indices("train")
    good: np.ndarray[Any, np.dtype[np.int64]] = train[np.asarray(dataset.targets[train]) == 0]
    return good


def _check_validation(dataset: PreparedDataset) -> None:
    """Refuse up front what :func:`choose_threshold` would refuse after the work."""
    labels = np.asarray(dataset.targets[dataset.indices("val")])
    if labels.size == 0 or labels.all():
        choose_threshold(np.zeros(labels.size), labels)


def _save_atomic(state: Mapping[str, Any], path: Path) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(dict(state), handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _run_dir(
    runs_root: Path, name: str | None, exist_ok: bool, resume_dir: Path | None
) -> tuple[Path, Path | None]:
    """The folder to write, and where an ``--exist-ok``-replaced run waits until success."""
    if resume_dir is not None:
        return resume_dir, None
    if name is not None and (not name or set(name) - _RUN_NAME_CHARS or name == "latest"):
        raise ConfigError(
            f"--name {name!r} is not a usable run name — use letters, digits, '.', '_' and"
            " '-' (and not 'latest')"
        )
    runs_root.mkdir(parents=True, exist_ok=True)
    run_dir = runs_root / (name or next_run_name(runs_root))
    replaced = None
    if run_dir.exists() or run_dir.is_symlink():
        if not exist_ok:
            raise ConfigError(
                f"{run_dir} already exists — pass --exist-ok to replace it, choose another"
                " --name, or continue it with --resume"
            )
        replaced = runs_root / f".{run_dir.name}.replaced-{os.getpid()}"
        os.replace(run_dir, replaced)
    return run_dir, replaced


def _check_resume(record: RunRecord, dataset: PreparedDataset, settings: Settings) -> None:
    if record.status == "completed":
        raise TrainingError(
            f"run {record.name} already holds its memory bank (anomaly runs train in one pass)"
            " — start a new run instead of --resume"
        )
    if record.dataset.fingerprint != dataset.fingerprint:
        raise ConfigError(
            f"{dataset.path} is not the dataset run {record.name} was trained on (fingerprint"
            " differs) — resume on the run's own dataset, or start a new run"
        )
    if record.model.name != settings.model.name:
        raise ConfigError(
            f"run {record.name} was trained with model.name={record.model.name!r}, not"
            f" {settings.model.name!r} — drop that override to resume, or start a new run"
        )


def fit_anomaly(
    settings: Settings,
    dataset: PreparedDataset,
    *,
    name: str | None = None,
    exist_ok: bool = False,
    resume_dir: Path | None = None,
    device: torch.device | None = None,
    device_reason: str = "",
    progress: ProgressReporter = NULL_PROGRESS,
) -> TrainResult:
    """Build the memory bank of an anomaly dataset and write a completed run folder.

    Args:
        settings: Resolved settings (``anomaly``, ``model``, ``train.batch_size`` and
            ``train.seed`` are used).
        dataset: A prepared anomaly dataset.
        name: Run folder name (default ``run-NNN``).
        exist_ok: Replace an existing run of that name.
        resume_dir: A run folder left unfinished, rebuilt in place.
        device: Where the backbone runs (default CPU).
        device_reason: Why that device (for the log).
        progress: Receives the feature and coreset bars.

    Returns:
        The run's outcome; ``best_metric`` is the validation image AUROC.

    Raises:
        ConfigError: A backbone without the requested layers; a bad run name.
        TrainingError: No good training image; a bank above ``anomaly.max_bank_mb``; a
            resume of a completed run.
        DataError: A validation split with no good image (no threshold possible).
    """
    from visionops.results import TrainResult

    started = time.perf_counter()
    device = device or torch.device("cpu")
    options = settings.anomaly
    seed = settings.train.seed
    previous: RunRecord | None = None
    if resume_dir is not None:
        previous = RunRecord.read(resume_dir)
        _check_resume(previous, dataset, settings)
    good = _good_train_indices(dataset)
    _check_validation(dataset)
    normalization = _normalization(settings, dataset)
    extractor = PatchFeatureExtractor.build(
        settings.model.name,
        channels=dataset.channels,
        layers=options.layers,
        pretrained=settings.model.pretrained,
        projection_dim=options.projection_dim,
        seed=seed,
    )
    plan = plan_bank(
        extractor,
        images=len(good),
        image_size=dataset.image_size,
        channels=dataset.channels,
        settings=options,
    )
    run_dir, replaced = _run_dir(settings.runs_root, name, exist_ok, resume_dir)
    config_text = settings_to_yaml(settings)
    config_hash = hashlib.sha256(config_text.encode("utf-8")).hexdigest()
    record = RunRecord(
        name=run_dir.name,
        status="running",
        task="anomaly",
        dataset={
            "path": _shown(dataset.path),
            "name": dataset.name,
            "fingerprint": dataset.fingerprint,
        },
        model={
            "name": settings.model.name,
            "num_outputs": 1,
            "channels": dataset.channels,
            "image_size": dataset.image_size,
            "feature_dim": plan.dim,
            "pretrained": settings.model.pretrained,
            "freeze_backbone": True,
        },
        normalization=normalization,
        resize=dataset.resize,
        class_names=dataset.class_names,
        monitor={"metric": MONITOR, "mode": "max"},
        epochs=1,
        config_hash=config_hash,
        created_at=previous.created_at if previous is not None else _now(),
        device={"type": str(device), "precision": "fp32", "world_size": 1},
        versions={
            "visionops": __version__,
            "torch": str(torch.__version__).split("+")[0],
            "torchvision": str(torchvision.__version__).split("+")[0],
        },
    )
    completed = False
    try:
        (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
        with log_to_file(run_dir / "train.log"):
            atomic_write_text(run_dir / "config.yaml", config_text)
            record.write(run_dir)
            metrics = _fit(
                settings, dataset, extractor, plan, good, record, run_dir, device, progress
            )
        completed = True
    finally:
        if not completed:
            shutil.rmtree(run_dir, ignore_errors=True)
            if replaced is not None:
                os.replace(replaced, run_dir)
    if replaced is not None:
        shutil.rmtree(replaced, ignore_errors=True)
    update_latest(settings.runs_root, run_dir)
    seconds = time.perf_counter() - started
    return TrainResult(
        run_dir=run_dir,
        name=run_dir.name,
        status="completed",
        task="anomaly",
        monitor=MONITOR,
        mode="max",
        best_metric=record.best_metric,
        best_epoch=1,
        epochs_completed=1,
        epochs=1,
        metrics=metrics,
        device=str(device),
        precision="fp32",
        seconds=seconds,
        images_per_s=len(good) / max(seconds, 1e-9),
    )


def _finite(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def _fit(
    settings: Settings,
    dataset: PreparedDataset,
    extractor: PatchFeatureExtractor,
    plan: BankPlan,
    good: np.ndarray[Any, np.dtype[np.int64]],
    record: RunRecord,
    run_dir: Path,
    device: torch.device,
    progress: ProgressReporter,
) -> dict[str, Any]:
    """The work: features, coreset, threshold, metrics, checkpoint. Returns metrics.json."""
    options = settings.anomaly
    batch_size = settings.train.batch_size
    mean, std = record.normalization.mean, record.normalization.std
    started = time.perf_counter()
    logger.info(
        "building the memory bank of {} ({}, {}px) on {} — {}",
        dataset.name,
        settings.model.name,
        dataset.image_size,
        device,
        plan.describe(),
    )
    tracker = start_run_tracking(
        settings.tracking,
        record,
        run_dir,
        config=settings.model_dump(mode="json"),
        tags=["anomaly", settings.model.name],
    )
    try:
        extractor = extractor.to(device)

        def train_batches() -> Any:
            # Sorted indices: the memory map is read front to back.
            return normalised_batches(dataset.images[good], mean, std, batch_size, device)

        if not settings.model.pretrained:
            calibration = dataset.images[good[:_CALIBRATION_IMAGES]]
            calibrate_batchnorm(
                extractor, list(normalised_batches(calibration, mean, std, 64, device))
            )
        bank = build_memory_bank(
            extractor,
            train_batches(),
            plan,
            settings=options,
            seed=settings.train.seed,
            progress=progress,
        )
        model = PatchCoreModel(
            extractor,
            bank,
            image_size=dataset.image_size,
            sigma=sigma_for_size(options.sigma, dataset.image_size),
            chunk=options.chunk,
        )
        bank_seconds = time.perf_counter() - started

        val = dataset.indices("val")
        val_out = predict_split(
            model,
            dataset,
            val,
            record.normalization,
            batch_size=batch_size,
            device=device,
        )
        val_labels = np.asarray(dataset.targets[val])
        threshold = choose_threshold(val_out.scores, val_labels, target_fpr=options.target_fpr)
        logger.info(
            "threshold {:.4g} ({}) from {} validation images",
            threshold.value,
            "F1-optimal"
            if threshold.method == "f1"
            else f"false-positive rate {options.target_fpr:g}",
            len(val),
        )
        results: dict[str, dict[str, float | None]] = {}
        for split, indices, outputs in (
            ("val", val, val_out),
            ("test", dataset.indices("test"), None),
        ):
            if not len(indices):
                continue
            if outputs is None:
                outputs = predict_split(
                    model,
                    dataset,
                    indices,
                    record.normalization,
                    batch_size=batch_size,
                    device=device,
                )
            masks = np.asarray(dataset.masks[indices]) if dataset.masks is not None else None
            values = anomaly_metrics(
                outputs.scores,
                np.asarray(dataset.targets[indices]),
                threshold.value,
                outputs.heatmaps,
                masks,
            )
            results[split] = {key: _finite(value) for key, value in values.items()}

        state = {
            "format": CHECKPOINT_FORMAT,
            "schema_version": 1,
            "epoch": 1,
            "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "anomaly": anomaly_record(
                model,
                layers=options.layers,
                sigma=sigma_for_size(options.sigma, dataset.image_size),
                threshold=threshold.as_dict(),
            ),
            "best_metric": results["val"].get(MONITOR),
        }
        seconds = time.perf_counter() - started
        record.status = "completed"
        record.best_epoch = 1
        record.best_metric = results["val"].get(MONITOR)
        record.epochs_completed = 1
        record.thresholds = [threshold.value]
        record.finished_at = _now()
        extra = {
            "threshold": threshold.as_dict(),
            "bank_size": plan.bank_size,
            "patches_per_image": plan.patches_per_image,
            "feature_dim": plan.dim,
            "bank_mb": round(plan.bank_mb, 3),
            "bytes_per_image": plan.bytes_per_image,
            "layers": list(options.layers),
        }
        setattr(record, "anomaly", extra)  # noqa: B010 - an extra field (extra="allow")
        state["run"] = record.to_json()
        _save_atomic(state, run_dir / "checkpoints" / "last.pt")
        _save_atomic(state, run_dir / "checkpoints" / "best.pt")
        history = {
            "epoch": 1,
            "seconds": round(seconds, 3),
            "bank_seconds": round(bank_seconds, 3),
            "images_per_s": round(len(good) / max(bank_seconds, 1e-9), 3),
            **{f"val_{key}": value for key, value in results.get("val", {}).items()},
        }
        atomic_write_text(run_dir / "history.jsonl", _json_line(history))
        payload = {
            "run": run_dir.name,
            "task": "anomaly",
            "checkpoint": "best",
            "best_epoch": 1,
            "monitor": {"metric": MONITOR, "mode": "max"},
            **results,
            "thresholds": [threshold.value],
            "anomaly": extra,
        }
        atomic_write_json(run_dir / "metrics.json", payload)
        if tracker.enabled:
            tracker.log_epoch(1, {k: v for k, v in history.items() if isinstance(v, float)})
            tracker.log_summary(
                {
                    f"{split}/{key}": value
                    for split, row in results.items()
                    for key, value in row.items()
                }
            )
            tracker.log_checkpoint(
                run_dir / "checkpoints" / "best.pt",
                f"model-{run_dir.name}",
                {"task": "anomaly", MONITOR: record.best_metric},
            )
        record.write(run_dir)
        tracker.finish("completed")
        return payload
    except BaseException:
        tracker.finish("failed")
        raise


def _json_line(row: Mapping[str, Any]) -> str:
    return json.dumps(dict(row)) + "\n"
