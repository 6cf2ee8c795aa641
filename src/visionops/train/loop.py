"""The training loop: a prepared dataset in, a run folder (``runs/<name>/``) out.

Early stopping on the task's validation metric, checkpoints written atomically every epoch so
``--resume`` continues exactly where a run stopped, and the best checkpoint scored on val and
test at the end. The run folder follows ``docs/artifacts.md`` ("Training run"); it is written
through :class:`visionops.runs.RunWriter`, which keeps any other process out of it.

Examples:
    >>> result = train(load_settings(overrides=["train.epochs=2"]), Path("data/prepared/shapes"))
    >>> result.status, result.monitor
    ('completed', 'accuracy')
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from loguru import logger

from visionops._io import atomic_write_json, atomic_write_text
from visionops.artifacts import RunDevice, RunRecord
from visionops.config import Settings, settings_to_yaml
from visionops.data.prepared import PreparedDataset
from visionops.data.resolve import resolve_prepared
from visionops.device import DeviceChoice, resolve_device
from visionops.distributed import (
    DistContext,
    broadcast_flag,
    broadcast_from_main,
    check_same_data,
    cleanup_distributed,
    gather_objects,
    init_distributed,
)
from visionops.errors import ArtifactError, ConfigError, InterruptError, TrainingError
from visionops.logs import log_to_file
from visionops.models import VisionModel
from visionops.progress import NULL_PROGRESS, ProgressReporter
from visionops.results import TrainResult
from visionops.runs import (
    RunWriter,
    load_checkpoint,
    read_run_manifest,
    recover_runs,
    resolve_run,
)
from visionops.tasks import TrainingTask, finite, get_task
from visionops.tracking.training import (
    log_training_epoch,
    log_training_outcome,
    start_run_tracking,
)
from visionops.tracking.wandb_run import NullTracker, Tracker
from visionops.train.checkpoints import (
    CheckpointWriter,
    MidEpochCheckpoints,
    epoch_checkpoint_due,
    save_checkpoints,
)
from visionops.train.dataset import effective_settings, shown
from visionops.train.engine import (
    Engine,
    EpochPosition,
    rng_state,
    seed_everything,
    set_rng_state,
    training_versions,
)
from visionops.train.onepass import train_one_pass
from visionops.train.record import check_resume_fits, new_run_record, now
from visionops.train.restarts import note_run, run_to_continue

__all__ = ["TrainResult", "epoch_line", "train"]

LINE_WIDTH = 80
"""The narrowest common terminal: an epoch line fits it, so it never wraps mid-line."""


def train(
    settings: Settings,
    dataset: str | Path | None = None,
    *,
    name: str | None = None,
    exist_ok: bool = False,
    resume: str | Path | None = None,
    reprepare: bool = False,
    progress: ProgressReporter = NULL_PROGRESS,
) -> TrainResult:
    """Train a model and write a run folder.

    Args:
        settings: Resolved settings. To resume, pass the run's ``config.yaml`` resolved with
            any changes (``--epochs`` may grow); the network and dataset must not change.
        dataset: See :func:`~visionops.data.resolve.resolve_prepared`; with ``resume``,
            default is the run's dataset.
        name: Run folder name under ``settings.runs_root`` (default: ``run-NNN``).
        exist_ok: Replace an existing run folder of that name.
        resume: A run folder or name whose ``checkpoints/last.pt`` to continue.
        reprepare: Prepare the dataset again when it was prepared with other image settings
            than ``data.image_size``/``channels``/``resize`` ask for (else that is an error).
        progress: Receives one bar per epoch (``loss``, ``img_s`` fields).

    Returns:
        The run's outcome; ``status`` is ``interrupted`` after Ctrl-C (``last.pt`` holds
        the last finished epoch and ``resume_command`` continues it).

    Raises:
        InterruptError: Ctrl-C came before the run kept anything (the run folder is removed;
            a resumed run is left as it was).
        ConfigError: Unknown model, task mismatch, run name taken, incompatible resume, a
            prepared dataset that differs from the requested image settings.
        ConcurrencyError: Another process is writing the same run folder.
        DeviceError: The requested device does not exist.
        ArtifactError: Corrupt or foreign checkpoint or run folder to resume.
        DataError: The dataset cannot be found, fetched or prepared.
        TrainingError: Too few images for a batch, or the loss diverged (NaN/inf).
        TrackingError: W&B was asked for and cannot start.
    """
    started = time.perf_counter()
    choice = resolve_device(settings.device, amp=settings.train.amp)
    context = init_distributed(choice.device)
    if context.enabled and choice.device.type == "cuda":
        choice = DeviceChoice(
            device=torch.device("cuda", context.local_rank),
            reason=f"rank {context.rank} of {context.world_size}",
            amp_dtype=choice.amp_dtype,
            grad_scaler=choice.grad_scaler,
        )
    attempt = _Attempt(settings, choice, context, progress, started, reprepare)
    try:
        if not context.is_main:
            return attempt.follow(dataset, resume)
        return attempt.lead(dataset, name, exist_ok, resume)
    except KeyboardInterrupt:
        if context.enabled:
            raise  # the launcher reports an interrupted group
        # Ctrl-C before the run kept anything (a kept epoch returns an interrupted result).
        if resume is not None:
            raise InterruptError(
                f"{resume} is as it was (Ctrl-C came before it trained further) — continue"
                f" it with `visionops train --resume {resume}`"
            ) from None
        raise InterruptError(
            "nothing was kept (Ctrl-C came before the run saved a checkpoint) — run the same"
            " command again to start over"
        ) from None
    finally:
        cleanup_distributed()


def epoch_line(scores: str, *, seconds: float, images_per_s: float) -> str:
    """One epoch's log line: ``scores``, then the time and the rate while they fit 80 columns.

    The rate goes first, then the time, when the line would be wider than
    :data:`LINE_WIDTH` (both stay in ``history.jsonl``).

    Examples:
        >>> epoch_line("epoch 1/2  train loss 1.8147", seconds=2.1, images_per_s=218.4)
        'epoch 1/2  train loss 1.8147  2.1 s  218 img/s'
    """
    timing = [f"{seconds:.1f} s", f"{images_per_s:.0f} img/s"]
    while timing and len("  ".join([scores, *timing])) > LINE_WIDTH:
        timing.pop()
    return "  ".join([scores, *timing])


def _resume_point(run_dir: Path) -> tuple[RunRecord, dict[str, Any]]:
    """The record and ``last.pt`` of a run to continue; a clear error when there is none."""
    record = read_run_manifest(run_dir)
    last = run_dir / "checkpoints" / "last.pt"
    if not last.is_file():
        raise ArtifactError(
            f"{run_dir} never finished an epoch (status {record.status}), so it has no"
            " checkpoint to resume — train it again with"
            f" `visionops train --name {run_dir.name} --exist-ok`"
        )
    return record, load_checkpoint(last)


@dataclass
class _Prepared:
    """What every rank builds before training: dataset, task, engine, first epoch."""

    settings: Settings
    dataset: PreparedDataset
    task: TrainingTask
    engine: Engine
    first_epoch: int
    checkpoint: dict[str, Any] | None
    start: EpochPosition | None = None


class _Attempt:
    """One invocation of :func:`train` on this process."""

    def __init__(
        self,
        settings: Settings,
        choice: DeviceChoice,
        context: DistContext,
        progress: ProgressReporter,
        started: float,
        reprepare: bool,
    ) -> None:
        self.settings = settings
        self.choice = choice
        self.context = context
        self.progress = progress
        self.started = started
        self.reprepare = reprepare

    def prepare(
        self,
        dataset_arg: str | Path | None,
        resumed: tuple[Path, RunRecord, dict[str, Any]] | None,
    ) -> _Prepared:
        settings, context = self.settings, self.context
        if resumed is not None and dataset_arg is None:
            dataset_arg = resumed[1].dataset.path
        # Fetching and preparing happen once, on rank 0, while the other ranks wait.
        if context.enabled and not context.is_main:
            torch.distributed.barrier()
        dataset_path = resolve_prepared(
            settings,
            dataset_arg,
            reprepare=self.reprepare,
            progress=self.progress if context.is_main else NULL_PROGRESS,
        )
        if context.enabled and context.is_main:
            torch.distributed.barrier()
        dataset = PreparedDataset.open(dataset_path)
        check_same_data(dataset.fingerprint, context)
        if settings.data.task is not None and settings.data.task != dataset.task:
            raise ConfigError(
                f"{dataset.path} is a {dataset.task} dataset but data.task is"
                f" {settings.data.task} — drop --task/data.task, or prepare a"
                f" {settings.data.task} dataset (`visionops data preprocess RAW"
                f" data.task={settings.data.task}`)"
            )
        settings = effective_settings(settings, dataset)
        task = get_task(dataset.task).from_manifest(
            dataset.manifest, label_smoothing=settings.train.label_smoothing
        )
        checkpoint = None
        if resumed is not None:
            run_dir, record, checkpoint = resumed
            _check_resume(record, checkpoint, settings, dataset, task, run_dir)

        seed_everything(settings.train.seed, settings.train.deterministic)
        engine = Engine(settings, dataset, task, self.choice, context)
        logger.info(
            "training {} on {} ({} {}, {} train / {} val images)",
            settings.model.name,
            dataset.name,
            task.name,
            f"{dataset.image_size}px",
            len(dataset.indices("train")),
            len(dataset.indices("val")),
        )
        logger.info(
            "device {} {}{}: {}",
            self.choice.device,
            self.choice.precision,
            f", {context.world_size} processes" if context.enabled else "",
            self.choice.reason,
        )
        first_epoch = 1
        start = None
        if resumed is not None and checkpoint is not None:
            engine.load_state(checkpoint, resumed[0] / "checkpoints" / "last.pt")
            first_epoch = int(checkpoint["epoch"]) + 1
            if checkpoint.get("position"):
                start = EpochPosition(**checkpoint["position"])
        # After building (which draws initial weights): the stream every rank's epochs use.
        if checkpoint is not None:
            streams = checkpoint.get("rank_rng") or []
            mine = streams[context.rank] if len(streams) == context.world_size else None
            set_rng_state(mine or checkpoint.get("rng") or {})
        elif context.rank:
            torch.manual_seed(settings.train.seed + context.rank)
        return _Prepared(settings, dataset, task, engine, first_epoch, checkpoint, start)

    def follow(self, dataset_arg: str | Path | None, resume: str | Path | None) -> TrainResult:
        """Ranks other than 0: build the same engine, train in step with rank 0, write nothing."""
        # Rank 0 reads the checkpoint to continue (if any) and sends it: no shared filesystem.
        resumed: tuple[Path, RunRecord, dict[str, Any]] | None = broadcast_from_main(
            None, self.context
        )
        prepared = self.prepare(dataset_arg, resumed)
        return _follow(prepared, self.context, self.choice, self.started)

    def _one_pass(
        self,
        dataset_arg: str | Path | None,
        name: str | None,
        exist_ok: bool,
        resume: str | Path | None,
    ) -> TrainResult | None:
        """Build a model in one pass when its task is not trained by gradient descent.

        None: the task trains in epochs (this loop). Anomaly detection builds a memory bank.
        """
        resume_dir = None
        if resume is not None:
            resume_dir = resolve_run(resume, self.settings.runs_root)
            record = read_run_manifest(resume_dir)
            if get_task(record.task).trained_by_gradient:
                return None
            dataset_arg = dataset_arg or record.dataset.path
        dataset = PreparedDataset.open(
            resolve_prepared(
                self.settings, dataset_arg, reprepare=self.reprepare, progress=self.progress
            )
        )
        if get_task(dataset.task).trained_by_gradient:
            return None
        return train_one_pass(
            self.settings,
            dataset,
            name=name,
            exist_ok=exist_ok,
            resume_dir=resume_dir,
            choice=self.choice,
            progress=self.progress,
        )

    def lead(
        self,
        dataset_arg: str | Path | None,
        name: str | None,
        exist_ok: bool,
        resume: str | Path | None,
    ) -> TrainResult:
        """Rank 0: claim the run folder first (a concurrent writer fails at once), then train."""
        runs_root = self.settings.runs_root
        recover_runs(runs_root)
        restarted = run_to_continue() if resume is None else None
        if restarted is not None:
            logger.warning(
                "the training group restarted: continuing {} from its newest checkpoint",
                restarted,
            )
            resume = restarted
        one_pass = self._one_pass(dataset_arg, name, exist_ok, resume)
        if one_pass is not None:
            return one_pass
        if resume is not None:
            run_dir = resolve_run(resume, runs_root)
            record, checkpoint = _resume_point(run_dir)
            writer = RunWriter.reopen(run_dir, int(checkpoint["epoch"]) + 1)
            resumed: tuple[Path, RunRecord, dict[str, Any]] | None = (run_dir, record, checkpoint)
        else:
            writer = RunWriter.create(runs_root, name, exist_ok)
            resumed = None
        note_run(writer.path)
        broadcast_from_main(resumed, self.context)
        with writer:
            try:
                prepared = self.prepare(dataset_arg, resumed)
                config_text = settings_to_yaml(prepared.settings)
                config_hash = hashlib.sha256(config_text.encode("utf-8")).hexdigest()
                if resumed is not None:
                    _say_plan_change(writer.path, writer.record.epochs, prepared.settings)
                    writer.record = writer.record.model_copy(
                        update={
                            "status": "running",
                            "epochs": prepared.settings.train.epochs,
                            "config_hash": config_hash,
                            "finished_at": None,
                            "failure": None,
                            "versions": training_versions(),
                        }
                    )
                else:
                    writer.record = _run_record(
                        writer.path.name,
                        prepared,
                        config_hash,
                        self.choice,
                        self.context,
                    )
                with log_to_file(writer.path / "train.log"):
                    if prepared.start is not None:
                        logger.info(
                            "resuming {} at epoch {} batch {}/{}",
                            writer.path,
                            prepared.start.epoch,
                            prepared.start.batch,
                            len(prepared.engine.train_loader),
                        )
                    elif resumed is not None:
                        logger.info(
                            "resuming {} after epoch {}", writer.path, prepared.first_epoch - 1
                        )
                    atomic_write_text(writer.path / "config.yaml", config_text)
                    writer.write_record()
                    return _lead(
                        prepared,
                        writer,
                        self.choice,
                        self.context,
                        self.started,
                        resumed=resumed is not None,
                        progress=self.progress,
                    )
            except BaseException:
                if not writer.trusted:
                    writer.abandon()
                raise


def _follow(
    prepared: _Prepared, context: DistContext, choice: DeviceChoice, started: float
) -> TrainResult:
    """Ranks other than 0: train in step with rank 0, write nothing."""
    engine, settings, task = prepared.engine, prepared.settings, prepared.task
    epochs = settings.train.epochs
    first_epoch = prepared.first_epoch
    epoch = first_epoch - 1
    hook = MidEpochCheckpoints(settings, context, engine.device, engine, writer=None)
    for epoch in range(first_epoch, epochs + 1):
        engine.train_epoch(
            epoch,
            epochs,
            NULL_PROGRESS,
            start=prepared.start if epoch == first_epoch else None,
            hook=hook if hook.active else None,
        )
        gather_objects(rng_state(), context)  # rank 0 saves every rank's streams
        if broadcast_flag(False, context, engine.device):
            break
    return TrainResult(
        run_dir=Path(),
        name="",
        status="completed",
        task=task.name,
        monitor=task.monitor,
        mode=task.mode,
        best_metric=None,
        best_epoch=None,
        epochs_completed=epoch,
        epochs=epochs,
        device=str(choice.device),
        precision=choice.precision,
        seconds=time.perf_counter() - started,
        rank=context.rank,
    )


def _lead(
    prepared: _Prepared,
    writer: RunWriter,
    choice: DeviceChoice,
    context: DistContext,
    started: float,
    resumed: bool,
    progress: ProgressReporter,
) -> TrainResult:
    """Rank 0: train, validate, checkpoint, log; then score the best checkpoint."""
    engine, settings, task = prepared.engine, prepared.settings, prepared.task
    first_epoch = prepared.first_epoch
    cfg = settings.train
    record = writer.record
    best = finite(record.best_metric)
    best_epoch: int | None = record.best_epoch
    top = _top_score(writer.history, task, best)
    val_images = len(engine.dataset.indices(engine.val_split))
    epochs_done = first_epoch - 1
    images_trained = 0
    train_seconds = 0.0
    stopped_early = False
    metrics: dict[str, Any] = {}
    status = "failed"
    kept: str | None = None
    trained = False
    tracker: Tracker = NullTracker()
    files = CheckpointWriter(writer.checkpoints)
    hook = MidEpochCheckpoints(settings, context, engine.device, engine, writer, files)
    try:
        tracker = start_run_tracking(
            settings.tracking,
            record,
            writer.path,
            config=settings.model_dump(mode="json"),
            tags=[task.name, settings.model.name],
        )
        for epoch in range(first_epoch, cfg.epochs + 1):
            trained = True
            result = engine.train_epoch(
                epoch,
                cfg.epochs,
                progress,
                start=prepared.start if epoch == first_epoch else None,
                hook=hook if hook.active else None,
            )
            rank_rng = gather_objects(rng_state(), context) if context.enabled else None
            engine.check_finite(result.loss, epoch, len(engine.train_loader))
            images_trained += result.images * context.world_size
            train_seconds += result.seconds
            phase_started = time.perf_counter()
            # Calibration and validation only serve the epochs that are scored
            # (train.val_every); the last epoch always is.
            validating = epoch % cfg.val_every == 0 or epoch == cfg.epochs
            val: dict[str, float] = {}
            batches = -(-result.images // cfg.batch_size)
            if validating and engine.batchnorm_is_stale(batches):
                engine.recalibrate_batchnorm(engine.eval_model())
            calibrated = time.perf_counter()
            if validating:
                val = engine.evaluate(engine.val_split)
                engine.check_finite(val["loss"], epoch, len(engine.train_loader), "validation")
            validated = time.perf_counter()
            value = val.get(task.monitor, float("nan"))
            # The checkpoint kept as best is the latest validated epoch within validation noise
            # of the top score: on a small val split a one-image difference says nothing, and
            # under a decaying learning rate the later weights generalise better (measured on
            # real Fashion-MNIST, benchmarks/quality.py).
            beats_top = validating and task.better(value, top)
            improved = beats_top or (
                validating and best_epoch is not None and task.within_noise(value, top, val_images)
            )
            if beats_top:
                top = value
            if improved:
                best, best_epoch = value, epoch
            epochs_done = epoch
            row = {
                "epoch": epoch,
                "train_loss": result.loss,
                **{f"val_{key}": v for key, v in val.items()},
                "lr": engine.optimizer.param_groups[0]["lr"],
                "seconds": round(result.seconds, 3),
                "images_per_s": round(result.images * context.world_size / result.seconds, 1),
            }
            writer.history.append(row)
            writer.write_history()
            record.best_epoch, record.best_metric = best_epoch, best
            record.epochs_completed = epoch
            if epoch_checkpoint_due(settings, epoch, improved):
                save_checkpoints(engine, writer, files, epoch, best, improved, rank_rng)
                hook.saved_epoch_end()
            writer.write_record()
            writer.first_epoch_done(settings.runs_root)
            logger.debug(
                "epoch {} time: train {:.2f} s, BatchNorm calibration {:.2f} s, validation"
                " {:.2f} s, checkpoint and records {:.2f} s",
                epoch,
                result.seconds,
                calibrated - phase_started,
                validated - calibrated,
                time.perf_counter() - validated,
            )
            scored = (
                f"val loss {val['loss']:.4f}  {task.monitor} {value:.4f}"
                + ("  (best)" if improved else "")
                if validating
                else f"not validated (train.val_every={cfg.val_every})"
            )
            logger.info(
                epoch_line(
                    f"epoch {epoch}/{cfg.epochs}  train loss {result.loss:.4f}  {scored}",
                    seconds=result.seconds,
                    images_per_s=row["images_per_s"],
                )
            )
            log_training_epoch(
                tracker,
                epoch,
                train_loss=result.loss,
                val=val,
                lr=row["lr"],
                images_per_s=row["images_per_s"],
                best=best,
            )
            stop = (
                validating
                and cfg.patience is not None
                and best_epoch is not None
                and epoch - best_epoch >= cfg.patience
                and epoch < cfg.epochs
            )
            if broadcast_flag(stop, context, engine.device):
                stopped_early = True
                logger.info(
                    "early stopping: {} has not improved for {} epochs (best {:.4f} at epoch {})",
                    task.monitor,
                    cfg.patience,
                    best,
                    best_epoch,
                )
                break
        files.wait()
        metrics = _final_metrics(engine, writer, task, tracker, best_epoch)
        status = "completed"
    except KeyboardInterrupt:
        status = "interrupted"
        files.wait()
        if not writer.trusted:
            # Ctrl-C between writing last.pt and recording it: the checkpoint is what counts.
            if not (writer.checkpoints / "last.pt").is_file():
                raise
            writer.first_epoch_done(settings.runs_root)
        kept = f"epoch {epochs_done} of {cfg.epochs}"
        if hook.saved is not None and hook.saved.epoch > epochs_done:
            position = hook.saved
            kept = (
                f"epoch {position.epoch} up to batch {position.batch} of {len(engine.train_loader)}"
            )
        logger.debug("Ctrl-C: {} holds {}", writer.checkpoints / "last.pt", kept)
    finally:
        if status == "failed":
            # A write in flight still lands (it is whole or absent); its own error, if any,
            # must not hide the one being raised.
            with contextlib.suppress(Exception):
                files.wait()
        if writer.trusted:
            if status == "failed" and not trained and writer.previous_status:
                # A resume that failed before training anything leaves the run as it was.
                status = writer.previous_status
            record.status = status  # type: ignore[assignment]
            record.finished_at = now()
            writer.write_record()
            _plot(writer, task, best_epoch)
        tracker.finish(status)
    return TrainResult(
        run_dir=writer.path,
        name=writer.path.name,
        status=status,
        task=task.name,
        monitor=task.monitor,
        mode=task.mode,
        best_metric=best,
        best_epoch=best_epoch,
        epochs_completed=epochs_done,
        epochs=cfg.epochs,
        stopped_early=stopped_early,
        metrics=metrics,
        device=str(choice.device),
        precision=choice.precision,
        seconds=time.perf_counter() - started,
        images_per_s=images_trained / train_seconds if train_seconds else 0.0,
        resumed_from=first_epoch - 1 if resumed else 0,
        resume_command=(
            f"visionops train --resume {shown(writer.path)}" if status == "interrupted" else None
        ),
        kept=kept,
    )


def _top_score(
    history: list[dict[str, Any]], task: TrainingTask, best: float | None
) -> float | None:
    """The best validation score of the epochs already trained (a resumed run's history)."""
    top = best
    for row in history:
        value = row.get(f"val_{task.monitor}")
        if isinstance(value, int | float) and task.better(float(value), top):
            top = float(value)
    return top


def _final_metrics(
    engine: Engine,
    writer: RunWriter,
    task: TrainingTask,
    tracker: Tracker,
    best_epoch: int | None,
) -> dict[str, Any]:
    """Score the best checkpoint on val (tuning multilabel thresholds) and test."""
    best_path = writer.checkpoints / "best.pt"
    checkpoint = load_checkpoint(best_path, map_location=str(engine.device))
    scoring = copy.deepcopy(engine.model)
    scoring.load_state_dict(checkpoint.get("ema") or checkpoint["model"])
    results: dict[str, Any] = {}
    val_predictions: np.ndarray[Any, Any] | None = None
    val_targets: np.ndarray[Any, Any] | None = None
    for split in (engine.val_split, "test"):
        if split == "test" and not len(engine.dataset.indices("test")):
            continue
        outputs, targets, loss = engine.predict(split, scoring)
        predictions = task.postprocess(outputs).numpy()
        if split == engine.val_split:
            task.fit_postprocessing(predictions, targets)
            val_predictions, val_targets = predictions, targets
        results["val" if split == engine.val_split else "test"] = {
            "loss": loss,
            **task.metrics(predictions, targets),
        }
    for key, value in task.run_fields().items():
        setattr(writer.record, key, value)
    payload = {
        "run": writer.path.name,
        "task": task.name,
        "checkpoint": "best",
        "best_epoch": best_epoch,
        "monitor": {"metric": task.monitor, "mode": task.mode},
        **({"val_split": engine.val_split} if engine.val_split != "val" else {}),
        **results,
        **task.run_fields(),
    }
    atomic_write_json(writer.path / "metrics.json", payload)
    if val_predictions is not None and val_targets is not None:
        log_training_outcome(
            tracker,
            task,
            run_name=writer.path.name,
            results=results,
            images=engine.dataset.images,
            indices=engine.dataset.indices(engine.val_split),
            predictions=val_predictions,
            targets=val_targets,
            checkpoint=best_path,
            best_epoch=best_epoch,
            best_metric=writer.record.best_metric,
        )
    return payload


def _plot(writer: RunWriter, task: TrainingTask, best_epoch: int | None) -> None:
    """Training curves into ``plots/``; a plotting problem never fails the run."""
    if not writer.history:
        return
    from visionops import plots

    curves = [task.monitor] + (["f1_macro"] if task.name != "regression" else [])
    try:
        plots.plot_loss_curves(writer.history, writer.path / "plots" / "loss.png")
        plots.plot_metric_curves(
            writer.history, curves, writer.path / "plots" / "metrics.png", best_epoch
        )
        plots.plot_learning_rate(writer.history, writer.path / "plots" / "lr.png")
    except Exception as exc:  # matplotlib problems must not lose a trained model
        logger.warning("could not draw the training curves: {}", exc)


def _run_record(
    name: str,
    prepared: _Prepared,
    config_hash: str,
    choice: DeviceChoice,
    context: DistContext,
) -> RunRecord:
    settings, engine = prepared.settings, prepared.engine
    model: VisionModel = engine.model
    return new_run_record(
        name,
        settings,
        prepared.dataset,
        prepared.task,
        feature_dim=model.feature_dim,
        normalization=(engine.normalization["mean"], engine.normalization["std"]),
        config_hash=config_hash,
        device=RunDevice(
            type=str(choice.device), precision=choice.precision, world_size=context.world_size
        ),
        epochs=settings.train.epochs,
        freeze_backbone=settings.model.freeze_backbone,
    )


def _say_plan_change(run_dir: Path, planned: int | None, settings: Settings) -> None:
    """Warn when a resume trains to another number of epochs than the run was planned for."""
    epochs = settings.train.epochs
    if planned is None or epochs == planned:
        return
    logger.warning(
        "the plan changed: {} was planned for {} epochs and now trains to {} (train.epochs;"
        " the learning-rate schedule follows the new count)",
        shown(run_dir),
        planned,
        epochs,
    )


def _check_resume(
    record: RunRecord,
    checkpoint: Mapping[str, Any],
    settings: Settings,
    dataset: PreparedDataset,
    task: TrainingTask,
    run_dir: Path,
) -> None:
    """Refuse to resume with a different dataset, task or network, or nothing left to train."""
    check_resume_fits(record, settings, dataset, task, run_dir)
    done = int(checkpoint.get("epoch", 0))
    if settings.train.epochs <= done:
        raise TrainingError(
            f"{run_dir} has already trained {done} of {settings.train.epochs} epochs — pass"
            f" --epochs {done + max(done // 2, 1)} (more than {done}) to train it further"
        )
