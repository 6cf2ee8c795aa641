"""``visionops export``: turn a trained run into a self-describing, verified ONNX bundle.

The bundle (``runs/<name>/bundle/``, see ``docs/artifacts.md``) is the contract between
training and serving. This module runs the stage; each step has its own module:

- ``model.onnx`` (:mod:`visionops.export.graph`): uint8 pixels at the trained size and channels
  (NCHW or NHWC) with a dynamic batch dimension; normalisation and the task's
  post-processing inside; outputs the task output and ``embedding``.
- ``parity.json`` (:mod:`visionops.export.parity`): a mandatory check of ONNX Runtime against
  PyTorch on real validation images from the run's prepared dataset. Without a pass there
  is no bundle. ``parity.npz`` keeps a few of those images with their CPU outputs, so a
  server can check a GPU provider at load
  (:func:`visionops.inference.runtime.check_provider_parity`).
- ``model.int8.onnx`` (:mod:`visionops.export.quantize`, ``--quantize int8``): static QDQ
  quantisation calibrated on training images, kept only when the metric drops by at most
  ``export.max_accuracy_drop``.
- ``reference.npz``: embeddings, image statistics and predictions of a sample of held-out
  (validation) images, computed through the exported graph itself — the baseline of
  ``visionops drift``; it records the split it came from.
- ``visionops.json`` (:mod:`visionops.inference.bundle`): everything a server needs to know, the
  checksum of every file, and a copy sealed in the graph's metadata.

One export of a run at a time: a second one is refused while the first holds the bundle's
lock, and temporaries left by an export that died are removed by the next one.

Examples:
    >>> result = export_run(load_settings(), "run-001", quantize="int8")  # doctest: +SKIP
    >>> result.parity.passed, (result.bundle_dir / "model.onnx").is_file()  # doctest: +SKIP
    (True, True)
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

import numpy as np
from loguru import logger
from numpy.typing import NDArray

from visionops._io import artifact_lock, atomic_dir, atomic_write_json, clean_stale_temps
from visionops.artifacts import BundleInput, BundleMeta, RunRecord
from visionops.drift.reference import choose_reference_indices, reference_arrays
from visionops.errors import (
    ArtifactError,
    ConfigError,
    DatasetNotFoundError,
    ExportError,
    VisionOpsError,
)
from visionops.export.graph import (
    EMBEDDING_NAME,
    build_wrapper,
    export_onnx,
    first_line,
    toolchain_versions,
)
from visionops.export.parity import PARITY_MAX_IMAGES, check_parity, finite
from visionops.export.quantize import quantize_and_judge
from visionops.inference.bundle import load_bundle, write_bundle_manifest
from visionops.inference.runtime import (
    INPUT_NAME,
    PARITY_SAMPLE_IMAGES,
    PARITY_SAMPLES_FILE,
    onnx_predict,
    ort_session,
    parity_samples,
)
from visionops.progress import NULL_PROGRESS, ProgressReporter
from visionops.results import ExportResult

if TYPE_CHECKING:
    from visionops.config import ExportSettings, Settings
    from visionops.data.prepared import PreparedDataset

__all__ = [
    "ExportResult",
    "export_run",
    "find_run_dataset",
]

_REFERENCE_SEED: Final = 0


# --------------------------------------------------------------------------- the stage


def find_run_dataset(run_dir: Path, run: RunRecord) -> Path:
    """The folder of the prepared dataset a run was trained on.

    The path recorded in ``run.json`` is tried as it is (relative to the working folder),
    then relative to the project folder that holds ``runs/``.

    Raises:
        DatasetNotFoundError: It is gone; the message names `visionops data preprocess`.
    """
    recorded = run.dataset.path
    path = Path(recorded)
    candidates = [path] if path.is_absolute() else [path, run_dir.parent.parent / path]
    for candidate in candidates:
        if recorded and (candidate / "manifest.json").is_file():
            return candidate
    raise DatasetNotFoundError(
        f"the prepared dataset {recorded or '?'} that run {run_dir.name} was trained on is gone"
        " — export checks the model on its validation images; recreate the dataset with"
        " `visionops data preprocess` (same source and settings)"
    )


def _spread(indices: NDArray[np.int64], count: int) -> NDArray[np.int64]:
    """At most ``count`` of ``indices``, evenly spread (every region of a sorted split)."""
    if len(indices) <= count:
        return indices
    picks = np.linspace(0, len(indices) - 1, count).round()
    return indices[picks.astype(np.int64)]


def _choose_parity_images(
    dataset: PreparedDataset, notes: list[str]
) -> tuple[str, NDArray[np.int64]]:
    for split in ("val", "test", "train"):
        indices = dataset.indices(split)
        if len(indices):
            if split != "val":
                notes.append(
                    f"the prepared dataset has no val split — the parity check used {split}"
                    " images instead"
                )
            return split, _spread(indices, PARITY_MAX_IMAGES)
    raise DatasetNotFoundError(
        f"the prepared dataset {dataset.path} holds no images — recreate it with"
        " `visionops data preprocess`"
    )


def _choose_eval_split(dataset: PreparedDataset) -> tuple[str, NDArray[np.int64]]:
    for split in ("test", "val"):
        indices = dataset.indices(split)
        if len(indices):
            return split, indices
    return "train", dataset.indices("train")


def _clean_metrics(metrics: Mapping[str, float]) -> dict[str, float | None]:
    return {name: finite(float(value)) for name, value in metrics.items()}


def _existing(bundle_dir: Path) -> ExportResult:
    bundle = load_bundle(bundle_dir)
    assert bundle.parity is not None  # load_bundle refuses a bundle without a passing one
    return ExportResult(
        bundle_dir=bundle_dir,
        meta=bundle.meta,
        parity=bundle.parity,
        quantized=bundle.meta.quantized,
        exported=False,
    )


def export_run(
    settings: Settings,
    run: Path | str | None,
    *,
    force: bool = False,
    exist_ok: bool = False,
    quantize: Literal["none", "int8"] | None = None,
    checkpoint: str = "best",
    progress: ProgressReporter = NULL_PROGRESS,
) -> ExportResult:
    """Export a trained run to ``runs/<name>/bundle/``, verified against PyTorch.

    This is the whole ``visionops export`` stage, callable in-process (``serve`` exports a
    run that has no bundle yet with it): the settings decide everything the CLI's flags do.

    Args:
        settings: Resolved settings, config file and overrides included (``runs_root``,
            ``export.*`` and ``data.max_image_pixels`` are used).
        run: A run folder or name; None for ``runs/latest``.
        force: Replace an existing bundle.
        exist_ok: Return an existing (verified) bundle as it is instead of refusing;
            ``ExportResult.exported`` is then False.
        quantize: ``int8`` or ``none`` (default: ``export.quantize``).
        checkpoint: ``best`` or ``last``.
        progress: Progress reporter.

    Returns:
        Where the bundle is, its manifest, the parity record and the int8 outcome.

    Raises:
        ConfigError: A checkpoint other than best or last.
        ArtifactError: No such run, a damaged run, a missing or corrupt checkpoint, an
            existing bundle without ``force`` or ``exist_ok``, or an existing bundle that
            fails verification with ``exist_ok``.
        ConcurrencyError: Another process is exporting this run right now.
        DatasetNotFoundError: The run's prepared dataset is gone.
        ExportError: A task that cannot be exported, an operator without ONNX translation,
            or a failed parity check. No bundle is left behind by a failed export.
    """
    from visionops.runs import resolve_run

    if checkpoint not in ("best", "last"):
        raise ConfigError(f"unknown checkpoint '{checkpoint}' — use best or last")
    run_dir = resolve_run(run, settings.runs_root)
    bundle_dir = run_dir / "bundle"
    with artifact_lock(bundle_dir, hint="wait for that export to finish"):
        for leftover in clean_stale_temps(run_dir, f".{bundle_dir.name}.*.tmp"):
            logger.info(f"removed {leftover.name}, left by an export that did not finish")
        if exist_ok and bundle_dir.exists() and not force:
            return _existing(bundle_dir)
        return _export(
            settings,
            run_dir,
            force=force,
            quantize=quantize,
            checkpoint=checkpoint,
            progress=progress,
        )


def _export(
    settings: Settings,
    run_dir: Path,
    *,
    force: bool,
    quantize: Literal["none", "int8"] | None,
    checkpoint: str,
    progress: ProgressReporter,
) -> ExportResult:
    """:func:`export_run` once the run is found (and the bundle's lock is held)."""
    from visionops.data.prepared import PreparedDataset
    from visionops.runs import load_trained_model
    from visionops.tasks import TASKS, task_for

    started = time.perf_counter()
    export_settings: ExportSettings = settings.export
    quantize = quantize or export_settings.quantize
    layout = export_settings.layout
    bundle_dir = run_dir / "bundle"
    if bundle_dir.exists() and not force:
        raise ArtifactError(
            f"{bundle_dir} already exists — pass --force to replace it (serve it as it is with"
            f" `visionops serve {run_dir}`)"
        )
    run_record = RunRecord.read(run_dir)
    task_name = run_record.task
    if task_name not in TASKS:
        raise ExportError(
            f"run {run_dir.name} is a {task_name} run; `visionops export` exports"
            f" {', '.join(TASKS)} runs"
        )
    own_export = TASKS[task_name].own_stage("export")
    if own_export is not None:
        result: ExportResult = own_export(
            settings,
            run_dir,
            PreparedDataset.open(find_run_dataset(run_dir, run_record)),
            checkpoint=checkpoint,
            quantize=quantize,
            progress=progress,
        )
        return result
    notes: list[str] = []
    if run_record.status != "completed":
        notes.append(
            f"run {run_dir.name} has status {run_record.status!r} — exported its"
            f" {checkpoint} checkpoint as it is"
        )
    model, _ = load_trained_model(run_dir, checkpoint)
    task = task_for(run_record)
    spec = run_record.model
    size, channels = spec.image_size, spec.channels

    recorded = run_record.dataset
    dataset = PreparedDataset.open(find_run_dataset(run_dir, run_record))
    if (dataset.image_size, dataset.channels) != (size, channels):
        raise ArtifactError(
            f"the prepared dataset {dataset.path} holds {dataset.image_size}px"
            f" {dataset.channels}-channel images but run {run_dir.name} was trained at"
            f" {size}px with {channels} channels — recreate the original dataset with"
            " `visionops data preprocess`"
        )
    if dataset.fingerprint != recorded.fingerprint:
        notes.append(
            f"the prepared dataset {dataset.path} changed since run {run_dir.name} was trained"
            " — parity is still checked on its images, but the metrics describe the new data"
        )
    for note in notes:
        logger.warning(note)

    steps = 5 if quantize == "int8" else 4
    bar = progress.start(f"export {run_dir.name}", total=steps)
    try:
        with atomic_dir(bundle_dir) as tmp:
            model_path = tmp / "model.onnx"
            logger.info(
                f"exporting run {run_dir.name} ({task_name}, {checkpoint} checkpoint) to ONNX"
                f" opset {export_settings.opset}, {layout} uint8 input {size}x{size}x{channels}"
            )
            wrapper = build_wrapper(model, run_record, layout)
            export_onnx(
                wrapper,
                model_path,
                image_size=size,
                channels=channels,
                layout=layout,
                output_names=(task.main_output, EMBEDDING_NAME),
                opset=export_settings.opset,
            )
            bar.advance(1, step="parity")

            known = len(notes)
            parity_split, parity_indices = _choose_parity_images(dataset, notes)
            for note in notes[known:]:
                logger.warning(note)
            parity = check_parity(
                model_path,
                model,
                run_record.normalization,
                np.asarray(dataset.images[parity_indices]),
                np.asarray(dataset.targets[parity_indices]),
                layout=layout,
                atol=export_settings.parity_atol,
                task=task,
                split=parity_split,
            )
            diffs = ", ".join(f"{k} {v:.2g}" for k, v in parity.max_abs_diff.items())
            if not parity.passed:
                raise ExportError(
                    f"parity check failed on {parity.images} {parity_split} images:"
                    f" {'; '.join(parity.failures)} — the ONNX graph does not reproduce"
                    " PyTorch; no bundle was written (rerun with -vv, or raise"
                    " export.parity_atol only if you accept the difference)"
                )
            logger.info(
                f"parity passed on {parity.images} {parity_split} images: max |diff| {diffs}"
                + (
                    f", top-1 agreement {parity.top1_agreement:.2%}"
                    if parity.top1_agreement is not None
                    else ""
                )
            )
            bar.advance(1, step="metrics")

            eval_split, eval_indices = _choose_eval_split(dataset)
            fp32_session = ort_session(model_path)
            eval_outputs, _ = onnx_predict(
                fp32_session, np.asarray(dataset.images[eval_indices]), layout
            )
            metrics = _clean_metrics(
                task.metrics(
                    eval_outputs.astype(np.float64), np.asarray(dataset.targets[eval_indices])
                )
            )
            samples = _spread(parity_indices, PARITY_SAMPLE_IMAGES)
            with (tmp / PARITY_SAMPLES_FILE).open("wb") as handle:
                np.savez_compressed(
                    handle,
                    allow_pickle=False,
                    **parity_samples(
                        fp32_session, np.asarray(dataset.images[samples]), layout, indices=samples
                    ),
                )
            parity.samples = {"file": PARITY_SAMPLES_FILE, "images": len(samples)}
            bar.advance(1, step="quantize" if quantize == "int8" else "reference")

            quantized: dict[str, Any] | None = None
            if quantize == "int8":
                quantized = quantize_and_judge(
                    tmp,
                    dataset,
                    task,
                    layout=layout,
                    tolerance=export_settings.max_accuracy_drop,
                    eval_split=eval_split,
                    eval_indices=eval_indices,
                    fp32_outputs=eval_outputs,
                )
                if quantized["accepted"]:
                    logger.info(
                        f"int8 accepted: {task.monitor} {quantized['fp32']:.4f} →"
                        f" {quantized['int8']:.4f} on {eval_split}, {quantized['speedup']}x"
                        " faster at batch 1"
                    )
                else:
                    logger.warning(f"int8 refused: {quantized['reason']}")
                bar.advance(1, step="reference")

            # Held-out images: a model is more confident on its training images (drift/).
            reference_split, sample = choose_reference_indices(
                np.asarray(dataset.splits),
                split=settings.drift.reference_split,
                samples=export_settings.reference_samples,
                seed=_REFERENCE_SEED,
                allow_train=True,
            )
            sample_images = np.asarray(dataset.images[sample])
            reference = reference_arrays(
                *onnx_predict(fp32_session, sample_images, layout),
                sample_images,
                sample,
                reference_split,
                dataset.original_sizes(sample),
            )
            if quantized and quantized["accepted"]:
                int8_outputs, int8_embeddings = onnx_predict(
                    ort_session(tmp / "model.int8.onnx"), sample_images, layout
                )
                reference["embeddings_int8"] = int8_embeddings
                reference["predictions_int8"] = int8_outputs
            with (tmp / "reference.npz").open("wb") as handle:
                np.savez_compressed(handle, allow_pickle=False, **reference)

            config_hash = run_record.config_hash
            meta = BundleMeta(
                task=task_name,
                model_version=f"{run_record.name}@{config_hash[:8]}",
                input=BundleInput(
                    name=INPUT_NAME,
                    dtype="uint8",
                    layout=layout,
                    size=size,
                    channels=channels,
                    resize=run_record.resize or dataset.resize,
                    max_image_pixels=settings.data.max_image_pixels,
                ),
                outputs={"main": task.main_output, "embedding": EMBEDDING_NAME},
                class_names=run_record.class_names,
                target_names=run_record.target_names,
                target_units=run_record.target_units,
                thresholds=run_record.thresholds,
                metrics=metrics,
                metrics_split={"split": eval_split, "images": len(eval_indices)},
                training_data_fingerprint=recorded.fingerprint,
                config_hash=config_hash,
                versions=toolchain_versions(),
                created_at=datetime.now(UTC).isoformat(timespec="seconds"),
                quantized=quantized,
                run={
                    "name": run_record.name,
                    "checkpoint": checkpoint,
                    "epoch": run_record.best_epoch
                    if checkpoint == "best"
                    else run_record.epochs_completed,
                    "model": spec.name,
                    "dataset": recorded.name,
                },
                opset=export_settings.opset,
                reference_samples=len(sample),
                reference_split=reference_split,
            )
            atomic_write_json(tmp / "parity.json", parity.model_dump(mode="json"))
            written = write_bundle_manifest(tmp, meta)
            bar.advance(1, step="done")
    except VisionOpsError:
        raise
    except (OSError, ValueError, RuntimeError) as exc:
        raise ExportError(
            f"export of run {run_dir.name} failed ({type(exc).__name__}: {first_line(exc)})"
            " — no bundle was written; rerun with -vv for the traceback"
        ) from exc
    finally:
        bar.close()
    seconds = time.perf_counter() - started
    logger.info(f"bundle written to {bundle_dir} in {seconds:.1f}s")
    return ExportResult(
        bundle_dir=bundle_dir,
        meta=written,
        parity=parity,
        quantized=quantized,
        warnings=notes,
        seconds=seconds,
    )
