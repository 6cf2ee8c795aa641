"""``visionops eval``: score a trained run on a split of its prepared dataset.

The run's checkpoint is rebuilt with :func:`visionops.runs.load_trained_model`, images are
normalised with the statistics recorded in ``run.json``, outputs go through the task's
post-processing (softmax, sigmoid + tuned thresholds, de-standardisation), and every metric
comes from scikit-learn. The result is written atomically to ``runs/<name>/eval/``:
``metrics.json``, the plots as PNG files, ``predictions.npz`` and a self-contained
``report.html``.

Examples:
    >>> result = evaluate_run(load_settings(), None, split="test")  # doctest: +SKIP
    >>> result.metrics["accuracy"]  # doctest: +SKIP
    0.97
"""

from __future__ import annotations

import contextlib
import io
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from loguru import logger
from numpy.typing import NDArray

from visionops import __version__
from visionops._io import atomic_dir, file_sha256
from visionops.artifacts import EvalMetrics, RunRecord
from visionops.errors import ArtifactError, ConfigError, DataError, DatasetNotFoundError
from visionops.progress import NULL_PROGRESS, ProgressReporter
from visionops.results import EvalResult
from visionops.tasks import TASKS, Plot, task_for

if TYPE_CHECKING:
    import torch

    from visionops.config import Settings

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

FloatArray = NDArray[np.float64]


# --------------------------------------------------------------------------- results


# --------------------------------------------------------------------------- metrics


# --------------------------------------------------------------------------- inference


def _find_dataset(run_dir: Path, recorded: str) -> Path:
    path = Path(recorded)
    candidates = [path] if path.is_absolute() else [path, run_dir.parent.parent / path]
    for candidate in candidates:
        if (candidate / "manifest.json").is_file():
            return candidate
    raise DatasetNotFoundError(
        f"the prepared dataset {recorded} that run {run_dir.name} was trained on is gone"
        " — recreate it with `visionops data preprocess` (same source and settings)"
    )


def _predict(
    model: Any,
    loader: Iterable[tuple[torch.Tensor, torch.Tensor]],
    total: int,
    normalization: dict[str, Any],
    postprocess: Callable[[torch.Tensor], torch.Tensor],
    *,
    device: torch.device,
    amp_dtype: torch.dtype | None,
    channels_last: bool,
    progress: ProgressReporter,
    description: str,
) -> tuple[FloatArray, NDArray[Any]]:
    """Run the model over the loader's uint8 batches; return post-processed outputs, targets."""
    import torch

    mean = torch.tensor(normalization["mean"], dtype=torch.float32, device=device).view(1, -1, 1, 1)
    std = torch.tensor(normalization["std"], dtype=torch.float32, device=device).view(1, -1, 1, 1)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    model.to(device, memory_format=layout)
    autocast = (
        torch.autocast(device_type=device.type, dtype=amp_dtype)
        if amp_dtype is not None
        else contextlib.nullcontext()
    )
    outputs: list[FloatArray] = []
    targets: list[NDArray[Any]] = []
    bar = progress.start(description, total=total)
    try:
        with torch.inference_mode(), autocast:
            for pixels, truth in loader:
                batch = pixels.to(device, non_blocking=True).contiguous(memory_format=layout)
                normalised = (batch.float().div_(255.0) - mean) / std
                raw, _ = model(normalised)
                outputs.append(postprocess(raw.float()).cpu().numpy().astype(np.float64))
                targets.append(truth.numpy())
                bar.advance(len(truth))
    finally:
        bar.close()
    return np.concatenate(outputs, axis=0), np.concatenate(targets, axis=0)


# --------------------------------------------------------------------------- the stage


def _choose_split(dataset: Any, split: str, warn: list[str]) -> tuple[str, NDArray[np.int64]]:
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
    # torch-free imports only until the inputs are validated: bad input fails fast.
    from visionops.data.prepared import PreparedDataset
    from visionops.runs import load_trained_model, read_run_manifest, resolve_run

    if split not in SPLITS:
        raise ConfigError(f"unknown split '{split}' — use one of {', '.join(SPLITS)}")
    if checkpoint not in CHECKPOINTS:
        raise ConfigError(f"unknown checkpoint '{checkpoint}' — use best or last")
    run_dir = resolve_run(run, settings.runs_root)
    manifest = read_run_manifest(run_dir)
    task = manifest.task
    if task not in TASKS:
        raise ArtifactError(
            f"run {run_dir.name} is a {task} run; `visionops eval` scores {', '.join(TASKS)}"
            " runs — train one of those, or read the run's metrics.json"
        )
    notes = _run_warnings(manifest, checkpoint)

    recorded = manifest.dataset
    dataset_dir = _find_dataset(run_dir, recorded.path)
    dataset = PreparedDataset.open(dataset_dir)
    current_fingerprint = dataset.fingerprint
    trained_fingerprint = recorded.fingerprint
    fingerprint_matches = current_fingerprint == trained_fingerprint
    if not fingerprint_matches:
        message = (
            f"the prepared dataset {dataset_dir} changed since run {run_dir.name} was trained"
            f" (fingerprint {str(trained_fingerprint)[:12]} → {str(current_fingerprint)[:12]})"
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
    used_split, indices = _choose_split(dataset, split, notes)
    own_eval = TASKS[task].own_stage("eval")
    if own_eval is not None:
        result: EvalResult = own_eval(
            settings,
            run_dir,
            dataset,
            used_split,
            indices,
            checkpoint=checkpoint,
            notes=notes,
            dataset_record={
                "path": recorded.path,
                "name": dataset.name,
                "fingerprint": current_fingerprint,
                "trained_fingerprint": trained_fingerprint,
                "fingerprint_matches": fingerprint_matches,
            },
            device=device,
            batch_size=batch_size,
            progress=progress,
        )
        return result

    from visionops.data.loading import BatchLoader
    from visionops.device import resolve_device

    model, manifest = load_trained_model(run_dir, checkpoint)
    # The task's own post-processing: the one definition training and export also use.
    task_impl = task_for(manifest)
    choice = resolve_device(device or settings.device, amp=settings.eval.precision == "auto")
    size = batch_size or settings.train.batch_size
    logger.info(
        f"scoring run {run_dir.name} ({task}, {checkpoint} checkpoint) on {len(indices)}"
        f" {used_split} images — {choice.device} ({choice.precision}): {choice.reason}"
    )
    for note in notes:
        logger.warning(note)
    # No shuffle and one shard: batches come in ascending index order, i.e. `indices`.
    loader = BatchLoader(
        dataset, used_split, size, shuffle=False, pin_memory=choice.device.type == "cuda"
    )
    started = time.perf_counter()
    outputs, targets = _predict(
        model,
        loader,
        len(indices),
        manifest.normalization.model_dump(),
        task_impl.postprocess,
        device=choice.device,
        amp_dtype=choice.amp_dtype,
        # channels-last pays off on CUDA; on CPU it can be many times slower (depthwise
        # convolutions of shufflenet/mobilenet), so the CPU gets the default layout.
        channels_last=settings.train.channels_last and choice.device.type == "cuda",
        progress=progress,
        description=f"eval {used_split}",
    )
    seconds = time.perf_counter() - started

    scored = task_impl.score(outputs, targets)
    plots = task_impl.plots(scored, outputs, targets.astype(np.float64))
    row_kind = task_impl.row_kind

    checkpoint_path = run_dir / "checkpoints" / f"{checkpoint}.pt"
    payload: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "kind": EVAL_KIND,
        "run": manifest.name,
        "task": task,
        "split": used_split,
        "requested_split": split,
        "n": len(indices),
        "metrics": scored.metrics,
        "per_class": scored.rows if row_kind == "class" else None,
        "per_target": scored.rows if row_kind == "target" else None,
        **scored.extra,
        "checkpoint": {
            "which": checkpoint,
            "file": f"checkpoints/{checkpoint}.pt",
            "epoch": _checkpoint_epoch(manifest, checkpoint),
            "sha256": file_sha256(checkpoint_path),
        },
        "dataset": {
            "path": recorded.path,
            "name": dataset.name,
            "fingerprint": current_fingerprint,
            "trained_fingerprint": trained_fingerprint,
            "fingerprint_matches": fingerprint_matches,
        },
        "model": manifest.model.model_dump(mode="json"),
        "inference": {
            "device": str(choice.device),
            "precision": choice.precision,
            "batch_size": size,
            "seconds": round(seconds, 3),
            "images_per_s": round(len(indices) / seconds, 1) if seconds > 0 else None,
        },
        "plots": {plot.filename: plot.caption for plot in plots},
        "warnings": notes,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "visionops_version": __version__,
    }

    record = write_eval_dir(
        run_dir, payload, plots, {"indices": indices, "outputs": outputs, "targets": targets}
    )
    return EvalResult(
        run_dir=run_dir,
        eval_dir=run_dir / "eval",
        task=task,
        split=used_split,
        n=len(indices),
        metrics=scored.metrics,
        rows=scored.rows,
        row_kind=row_kind,
        warnings=notes,
        payload=record.to_json(),
    )


def write_eval_dir(
    run_dir: Path,
    payload: dict[str, Any],
    plots: Sequence[Plot],
    arrays: Mapping[str, NDArray[Any]],
) -> EvalMetrics:
    """Write ``run_dir/eval/`` all at once: metrics.json, report.html, plots, predictions.npz.

    Args:
        run_dir: The run folder.
        payload: The ``metrics.json`` content (validated as :class:`EvalMetrics`).
        plots: Figures, embedded in the report and written as PNG files.
        arrays: What ``predictions.npz`` keeps (``indices``, ``outputs``, ``targets``, ...);
            float arrays are stored as float32, except float16 ones.

    Returns:
        The record written as ``metrics.json``.
    """
    from visionops.evaluate.report import render_report

    eval_dir = run_dir / "eval"
    record = EvalMetrics.model_validate(payload)
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
