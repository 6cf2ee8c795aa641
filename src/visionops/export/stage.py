"""``visionops export``: turn a trained run into a self-describing, verified ONNX bundle.

The bundle (``runs/<name>/bundle/``, see ``docs/artifacts.md``) is the contract between
training and serving. This module runs the stage; each step has its own module:

- ``model.onnx`` (:mod:`visionops.export.graph`): uint8 pixels at the trained size and channels
  (NCHW or NHWC) with a dynamic batch dimension; normalisation and what the task computes
  (:meth:`~visionops.tasks.Task.graph_outputs`) inside; outputs the task output, the task's
  other outputs (an anomaly ``heatmap``) and ``embedding``.
- ``parity.json`` (:mod:`visionops.export.parity`): a mandatory check of ONNX Runtime against
  PyTorch on real validation images from the run's prepared dataset. Without a pass there
  is no bundle. ``parity.npz`` keeps a few of those images with their CPU outputs, so a
  server can check a GPU provider at load
  (:func:`visionops.inference.runtime.check_provider_parity`).
- ``model.int8.onnx`` (:mod:`visionops.export.quantize`, ``--quantize int8``): static QDQ
  quantisation calibrated on training images (those the task builds its model from,
  :meth:`~visionops.tasks.Task.learns_from`), kept only when the monitored metric drops by
  at most ``export.max_accuracy_drop``.
- ``reference.npz``: embeddings, image statistics and predictions of a sample of held-out
  (validation) images of that kind, computed through the exported graph itself — the
  baseline of ``visionops drift``; it records the split it came from.
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
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

import numpy as np
from loguru import logger
from numpy.typing import NDArray

from visionops._io import artifact_lock, atomic_dir, atomic_write_json, clean_stale_temps
from visionops.artifacts import (
    BundleInput,
    BundleMeta,
    ClassActivationRecord,
    MetricsSplit,
    ParityRecord,
    QuantizedRecord,
    RunRecord,
)
from visionops.drift.reference import (
    choose_reference_indices,
    reference_arrays,
    reference_source_statistics,
)
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
    graph_output_names,
    toolchain_versions,
)
from visionops.export.parity import PARITY_MAX_IMAGES, check_parity, run_graph
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
from visionops.runs import find_run_dataset
from visionops.tasks import Outputs, Task, finite, task_for

if TYPE_CHECKING:
    import onnxruntime
    from torch import nn

    from visionops.config import ExportSettings, Settings
    from visionops.data.prepared import PreparedDataset

__all__ = [
    "ExportResult",
    "export_run",
]

_REFERENCE_SEED: Final = 0


# --------------------------------------------------------------------------- the stage


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


@dataclass
class _Source:
    """What an export reads: the run, its task and model, and its prepared dataset."""

    run_dir: Path
    record: RunRecord
    task: Task
    model: nn.Module
    dataset: PreparedDataset
    checkpoint: str
    notes: list[str]
    cam: ClassActivationRecord | None = None


def _export(
    settings: Settings,
    run_dir: Path,
    *,
    force: bool,
    quantize: Literal["none", "int8"] | None,
    checkpoint: str,
    progress: ProgressReporter,
) -> ExportResult:
    """:func:`export_run` once the run is found (and the bundle's lock is held).

    The same steps for every task: read the run (:func:`_open_source`), write the graph
    (:func:`_write_graph`), check it against PyTorch (:func:`_verify_parity`), score it
    (:func:`_score_graph`), quantise (:func:`quantize_and_judge`), record the drift
    reference (:func:`_write_reference`) and seal the manifest (:func:`_manifest`).
    """
    started = time.perf_counter()
    export_settings: ExportSettings = settings.export
    quantize = quantize or export_settings.quantize
    bundle_dir = run_dir / "bundle"
    if bundle_dir.exists() and not force:
        raise ArtifactError(
            f"{bundle_dir} already exists — pass --force to replace it (serve it as it is with"
            f" `visionops serve {run_dir}`)"
        )
    source = _open_source(run_dir, checkpoint)
    bar = progress.start(f"export {run_dir.name}", total=5 if quantize == "int8" else 4)
    try:
        with atomic_dir(bundle_dir) as tmp:
            _write_graph(source, tmp / "model.onnx", export_settings)
            bar.advance(1, step="parity")
            parity, parity_indices = _verify_parity(source, tmp / "model.onnx", export_settings)
            bar.advance(1, step="metrics")
            session = ort_session(tmp / "model.onnx")
            eval_split, eval_indices, eval_outputs = _score_graph(source, session, export_settings)
            parity.samples = _write_parity_samples(
                source, session, tmp, parity_indices, export_settings.layout
            )
            bar.advance(1, step="quantize" if quantize == "int8" else "reference")
            quantized: QuantizedRecord | None = None
            if quantize == "int8":
                quantized = _quantize(
                    source, tmp, export_settings, eval_split, eval_indices, eval_outputs.main
                )
                bar.advance(1, step="reference")
            reference_split, sample = _write_reference(source, session, tmp, settings, quantized)
            meta = _manifest(
                source,
                settings,
                metrics={
                    name: finite(value)
                    for name, value in source.task.quick_metrics(eval_outputs).items()
                },
                metrics_split=MetricsSplit(split=eval_split, images=len(eval_indices)),
                quantized=quantized,
                reference=(reference_split, len(sample)),
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
        warnings=source.notes,
        seconds=seconds,
    )


def _open_source(run_dir: Path, checkpoint: str) -> _Source:
    """The run's record, task, model and dataset; notes on what is off but usable."""
    from visionops.data.prepared import PreparedDataset
    from visionops.tasks import TASKS

    record = RunRecord.read(run_dir)
    if record.task not in TASKS:
        raise ExportError(
            f"run {run_dir.name} is a {record.task} run; `visionops export` exports"
            f" {', '.join(TASKS)} runs"
        )
    notes: list[str] = []
    if record.status != "completed":
        notes.append(
            f"run {run_dir.name} has status {record.status!r} — exported its"
            f" {checkpoint} checkpoint as it is"
        )
    model, record = task_for(record).load_model(run_dir, checkpoint)
    spec = record.model
    dataset = PreparedDataset.open(find_run_dataset(run_dir, record))
    if (dataset.image_size, dataset.channels) != (spec.image_size, spec.channels):
        raise ArtifactError(
            f"the prepared dataset {dataset.path} holds {dataset.image_size}px"
            f" {dataset.channels}-channel images but run {run_dir.name} was trained at"
            f" {spec.image_size}px with {spec.channels} channels — recreate the original"
            " dataset with `visionops data preprocess`"
        )
    if dataset.fingerprint != record.dataset.fingerprint:
        notes.append(
            f"the prepared dataset {dataset.path} changed since run {run_dir.name} was trained"
            " — parity is still checked on its images, but the metrics describe the new data"
        )
    for note in notes:
        logger.warning(note)
    task = task_for(record)
    model, cam = task.explained_model(model, channels=spec.channels, image_size=spec.image_size)
    if cam is not None and cam.available:
        cells = "x".join(str(v) for v in cam.feature_size or [])
        logger.info(f"class activation map: from {cam.layer} ({cells} cells), output {cam.output}")
    elif cam is not None:
        logger.info(f"no class activation map: {spec.name} — {cam.reason}")
    return _Source(run_dir, record, task, model, dataset, checkpoint, notes, cam)


def _write_graph(source: _Source, path: Path, options: ExportSettings) -> None:
    """``model.onnx``: the task's outputs of uint8 pixels, normalisation inside."""
    spec = source.record.model
    logger.info(
        f"exporting run {source.run_dir.name} ({source.task.name}, {source.checkpoint}"
        f" checkpoint) to ONNX opset {options.opset}, {options.layout} uint8 input"
        f" {spec.image_size}x{spec.image_size}x{spec.channels}"
    )
    export_onnx(
        build_wrapper(source.model, source.record, options.layout),
        path,
        image_size=spec.image_size,
        channels=spec.channels,
        layout=options.layout,
        output_names=graph_output_names(source.task, source.model),
        opset=options.opset,
    )


def _verify_parity(
    source: _Source, model_path: Path, options: ExportSettings
) -> tuple[ParityRecord, NDArray[np.int64]]:
    """The parity check on validation images; no bundle without a pass."""
    known = len(source.notes)
    split, indices = _choose_parity_images(source.dataset, source.notes)
    for note in source.notes[known:]:
        logger.warning(note)
    parity = check_parity(
        model_path,
        source.model,
        source.record.normalization,
        np.asarray(source.dataset.images[indices]),
        np.asarray(source.dataset.targets[indices]),
        layout=options.layout,
        atol=options.parity_atol,
        task=source.task,
        split=split,
    )
    diffs = ", ".join(f"{k} {v:.2g}" for k, v in parity.max_abs_diff.items())
    if not parity.passed:
        raise ExportError(
            f"parity check failed on {parity.images} {split} images:"
            f" {'; '.join(parity.failures)} — the ONNX graph does not reproduce"
            " PyTorch; no bundle was written (rerun with -vv, or raise"
            " export.parity_atol only if you accept the difference)"
        )
    agreement = parity.top1_agreement
    logger.info(
        f"parity passed on {parity.images} {split} images: max |diff| {diffs}"
        + (f", top-1 agreement {agreement:.2%}" if agreement is not None else "")
    )
    return parity, indices


def _score_graph(
    source: _Source, session: onnxruntime.InferenceSession, options: ExportSettings
) -> tuple[str, NDArray[np.int64], Outputs]:
    """The fp32 graph's outputs on the held-out split the bundle's metrics describe."""
    dataset = source.dataset
    split, indices = _choose_eval_split(dataset)
    outputs = run_graph(
        session,
        np.asarray(dataset.images[indices]),
        options.layout,
        (source.task.main_output, *source.task.extra_outputs),
    )
    return (
        split,
        indices,
        Outputs(
            main=outputs.pop(source.task.main_output),
            targets=np.asarray(dataset.targets[indices]),
            extra=outputs,
            masks=np.asarray(dataset.masks[indices]) if dataset.masks is not None else None,
        ),
    )


def _write_parity_samples(
    source: _Source,
    session: onnxruntime.InferenceSession,
    tmp: Path,
    parity_indices: NDArray[np.int64],
    layout: str,
) -> dict[str, Any]:
    """``parity.npz``: a few parity images and their CPU outputs (a GPU is checked on them)."""
    samples = _spread(parity_indices, PARITY_SAMPLE_IMAGES)
    with (tmp / PARITY_SAMPLES_FILE).open("wb") as handle:
        np.savez_compressed(
            handle,
            allow_pickle=False,
            **parity_samples(
                session,
                np.asarray(source.dataset.images[samples]),
                layout,
                indices=samples,
                output_names=[source.task.main_output, EMBEDDING_NAME],
            ),
        )
    return {"file": PARITY_SAMPLES_FILE, "images": len(samples)}


def _quantize(
    source: _Source,
    tmp: Path,
    options: ExportSettings,
    eval_split: str,
    eval_indices: NDArray[np.int64],
    fp32_outputs: NDArray[np.float64],
) -> QuantizedRecord:
    """``model.int8.onnx`` when the monitored metric allows it; the ``quantized`` record."""
    task = source.task
    quantized = quantize_and_judge(
        tmp,
        source.dataset,
        task,
        layout=options.layout,
        tolerance=options.max_accuracy_drop,
        eval_split=eval_split,
        eval_indices=eval_indices,
        fp32_outputs=fp32_outputs.astype(np.float32),
    )
    if quantized.accepted:
        logger.info(
            f"int8 accepted: {task.monitor} {quantized.fp32} → {quantized.int8} on"
            f" {eval_split}, {quantized.speedup}x faster at batch 1"
        )
    else:
        logger.warning(f"int8 refused: {quantized.reason}")
    return quantized


def _write_reference(
    source: _Source,
    session: onnxruntime.InferenceSession,
    tmp: Path,
    settings: Settings,
    quantized: QuantizedRecord | None,
) -> tuple[str, NDArray[np.int64]]:
    """``reference.npz``: drift's baseline, through the exported graph itself."""
    dataset, task, layout = source.dataset, source.task, settings.export.layout
    # Held-out images (a model is more confident on its training images), of the kind the
    # model was built from (an anomaly bank scores its own kind of images near zero).
    splits = np.asarray(dataset.splits).astype(np.int64)
    splits[~task.learns_from(np.asarray(dataset.targets))] = -1  # in no split
    split, sample = choose_reference_indices(
        splits,
        split=settings.drift.reference_split,
        samples=settings.export.reference_samples,
        seed=_REFERENCE_SEED,
        allow_train=True,
    )
    images = np.asarray(dataset.images[sample])
    names = [task.main_output, EMBEDDING_NAME]
    main, embeddings = onnx_predict(session, images, layout, output_names=names)
    files = reference_source_statistics(dataset, sample, settings.data.raw_root)
    if files.note:
        logger.warning(files.note)
    reference = reference_arrays(
        main.reshape(len(main), -1),
        embeddings,
        images,
        sample,
        split,
        dataset.original_sizes(sample),
        files,
    )
    if quantized is not None and quantized.accepted:
        int8_outputs, int8_embeddings = onnx_predict(
            ort_session(tmp / "model.int8.onnx"), images, layout, output_names=names
        )
        reference["embeddings_int8"] = int8_embeddings
        reference["predictions_int8"] = int8_outputs.reshape(len(int8_outputs), -1)
    with (tmp / "reference.npz").open("wb") as handle:
        np.savez_compressed(handle, allow_pickle=False, **reference)
    return split, sample


def _manifest(
    source: _Source,
    settings: Settings,
    *,
    metrics: dict[str, float | None],
    metrics_split: MetricsSplit,
    quantized: QuantizedRecord | None,
    reference: tuple[str, int],
) -> BundleMeta:
    """``visionops.json`` (before its file checksums): what a server needs to know."""
    record, task, options = source.record, source.task, settings.export
    spec = record.model
    config_hash = record.config_hash
    extras = {name: name for name in task.bundle_outputs(source.model)}
    return BundleMeta(
        task=task.name,
        model_version=f"{record.name}@{config_hash[:8]}",
        input=BundleInput(
            name=INPUT_NAME,
            dtype="uint8",
            layout=options.layout,
            size=spec.image_size,
            channels=spec.channels,
            resize=record.resize or source.dataset.resize,
            max_image_pixels=settings.data.max_image_pixels,
        ),
        outputs={"main": task.main_output, "embedding": EMBEDDING_NAME, **extras},
        class_names=record.class_names,
        target_names=record.target_names,
        target_units=record.target_units,
        thresholds=record.thresholds,
        anomaly=record.anomaly,
        cam=source.cam,
        metrics=metrics,
        metrics_split=metrics_split,
        training_data_fingerprint=record.dataset.fingerprint,
        config_hash=config_hash,
        versions=toolchain_versions(),
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        quantized=quantized,
        run={
            "name": record.name,
            "checkpoint": source.checkpoint,
            "epoch": record.best_epoch if source.checkpoint == "best" else record.epochs_completed,
            "model": spec.name,
            "dataset": record.dataset.name,
            "weights_source": spec.weights_source,
        },
        opset=options.opset,
        reference_samples=reference[1],
        reference_split=reference[0],
    )
