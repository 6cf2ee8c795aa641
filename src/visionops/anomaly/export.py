"""``visionops export`` of an anomaly run: the memory bank inside the ONNX graph.

The graph takes uint8 pixels and computes everything serve needs: normalisation, the
frozen trunk, the nearest-bank-patch distances (chunked matrix products and a running
minimum, the bank a constant of the graph) and the Gaussian-smoothed heatmap. Its outputs
are ``score (B,)``, ``heatmap (B, H, W)`` and ``embedding (B, D)``, so serving needs ONNX
Runtime only. Parity with PyTorch is checked on scores and heatmaps, and an int8 model is
kept only when its image AUROC stays within ``export.max_accuracy_drop`` of fp32.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

from visionops._io import atomic_dir, atomic_write_json
from visionops.anomaly.metrics import anomaly_metrics, image_auroc
from visionops.anomaly.model import load_anomaly_model, predict_split
from visionops.anomaly.scoring import PatchCoreModel
from visionops.artifacts import Normalization
from visionops.config import Settings
from visionops.data.prepared import PreparedDataset
from visionops.drift.reference import reference_arrays
from visionops.drift.samples import HELD_OUT_SPLITS
from visionops.errors import ArtifactError, ExportError
from visionops.export.quantize import CALIBRATION_MAX_IMAGES, quantize_int8
from visionops.inference.bundle import write_bundle_manifest
from visionops.logs import logger
from visionops.progress import NULL_PROGRESS, ProgressReporter

if TYPE_CHECKING:
    import onnxruntime

    from visionops.results import ExportResult

__all__ = ["OUTPUTS", "AnomalyExportWrapper", "export_anomaly"]

OUTPUTS: Final = ("score", "heatmap", "embedding")
"""Graph output names, in order."""
_BATCH: Final = 16
_PARITY_MAX_IMAGES: Final = 128
_REFERENCE_MAX: Final = 512


class AnomalyExportWrapper(nn.Module):
    """uint8 pixels in; ``(score, heatmap, embedding)`` out.

    Args:
        model: The anomaly model (normalised float in).
        mean: Per-channel mean on the 0..1 scale.
        std: Per-channel standard deviation on the 0..1 scale.
        layout: ``NCHW`` or ``NHWC``: the layout of the uint8 input.
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(
        self, model: PatchCoreModel, mean: Sequence[float], std: Sequence[float], layout: str
    ) -> None:
        super().__init__()
        self.model = model
        self.layout = layout
        self.register_buffer("mean", torch.tensor(list(mean)).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(list(std)).view(1, -1, 1, 1))

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(score (B,), heatmap (B, H, W), embedding (B, D))`` of uint8 pixels."""
        images = pixels.to(torch.float32)
        if self.layout == "NHWC":
            images = images.permute(0, 3, 1, 2)
        result: tuple[torch.Tensor, torch.Tensor, torch.Tensor] = self.model(
            (images / 255.0 - self.mean) / self.std
        )
        return result


def _onnx_outputs(
    session: onnxruntime.InferenceSession, images: NDArray[np.uint8], layout: str, batch: int
) -> tuple[NDArray[np.float32], NDArray[np.float32], NDArray[np.float32]]:
    from visionops.inference.runtime import INPUT_NAME, to_layout

    parts: list[list[NDArray[np.float32]]] = [[], [], []]
    for start in range(0, len(images), batch):
        outputs = session.run(
            list(OUTPUTS), {INPUT_NAME: to_layout(images[start : start + batch], layout)}
        )
        for slot, value in zip(parts, outputs, strict=True):
            slot.append(np.asarray(value, dtype=np.float32))
    score, heatmap, embedding = (np.concatenate(slot) for slot in parts)
    return score, heatmap, embedding


def _parity(
    session: onnxruntime.InferenceSession,
    model: PatchCoreModel,
    dataset: PreparedDataset,
    indices: NDArray[np.int64],
    normalization: Normalization,
    *,
    layout: str,
    atol: float,
    split: str,
) -> dict[str, Any]:
    """ONNX Runtime (batched and batch 1) against PyTorch eager on real images."""
    import onnxruntime

    images = np.asarray(dataset.images[indices])
    batched = _onnx_outputs(session, images, layout, _BATCH)
    single = _onnx_outputs(session, images[:1], layout, 1)
    reference = predict_split(model, dataset, indices, normalization, batch_size=_BATCH)
    expected = (reference.scores, reference.heatmaps, reference.embeddings)
    differences: dict[str, float] = {}
    bounds: dict[str, float] = {}
    for name, many, one, truth in zip(OUTPUTS, batched, single, expected, strict=True):
        differences[name] = float(
            max(np.abs(many - truth).max(initial=0.0), np.abs(one - truth[:1]).max(initial=0.0))
        )
        # Distances and raw features are not bounded by 1: the bound is relative to the peak.
        bounds[name] = atol * max(1.0, float(np.abs(truth).max(initial=0.0)))
    failures = [
        f"{name} differs by up to {value:.3g} (limit {bounds[name]:.3g})"
        for name, value in differences.items()
        if not value <= bounds[name]
    ]
    labels = np.asarray(dataset.targets[indices])
    torch_auroc, onnx_auroc = image_auroc(reference.scores, labels), image_auroc(batched[0], labels)
    return {
        "passed": not failures,
        "failures": failures,
        "split": split,
        "images": len(indices),
        "batch_sizes": sorted({1, min(_BATCH, len(indices))}),
        "atol": atol,
        "max_abs_diff": differences,
        "bound": bounds,
        "top1_agreement": None,
        "min_top1_agreement": None,
        "metric": {
            "name": "image_auroc",
            "pytorch": _finite(torch_auroc),
            "onnxruntime": _finite(onnx_auroc),
            "difference": _finite(onnx_auroc - torch_auroc),
        },
        "engines": {
            "pytorch": f"torch {torch.__version__} eager, CPU, fp32",
            "onnxruntime": f"onnxruntime {onnxruntime.__version__} CPUExecutionProvider",
        },
        "checked_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def _int8(
    tmp: Path,
    dataset: PreparedDataset,
    *,
    layout: str,
    tolerance: float,
    eval_split: str,
    eval_indices: NDArray[np.int64],
    fp32_scores: NDArray[np.float32],
) -> dict[str, Any]:
    """Quantise; keep the int8 graph only if its image AUROC is within ``tolerance``."""
    from visionops.export.timing import compare_latency
    from visionops.inference.runtime import ort_session

    train = dataset.indices("train")
    calibration = train[np.asarray(dataset.targets[train]) == 0][:CALIBRATION_MAX_IMAGES]
    fp32_path, int8_path = tmp / "model.onnx", tmp / "model.int8.onnx"
    started = time.perf_counter()
    try:
        # Only the trunk's convolutions: the nearest-neighbour distances subtract numbers of
        # similar size (|x|² - 2x·m + |m|²), and 8-bit products there would erase the very
        # differences the score measures. ONNX Runtime's symbolic shape inference cannot
        # follow the chunked search.
        quantize_int8(
            fp32_path,
            int8_path,
            np.asarray(dataset.images[calibration]),
            layout=layout,
            batch_size=_BATCH,
            op_types=["Conv"],
            symbolic_shapes=False,
        )
    except ExportError as exc:
        int8_path.unlink(missing_ok=True)
        return {"accepted": False, "reason": str(exc), "file": None, "metric": "image_auroc"}
    images = np.asarray(dataset.images[eval_indices])
    labels = np.asarray(dataset.targets[eval_indices])
    int8_scores = _onnx_outputs(ort_session(int8_path), images, layout, _BATCH)[0]
    fp32_metric, int8_metric = image_auroc(fp32_scores, labels), image_auroc(int8_scores, labels)
    drop = fp32_metric - int8_metric
    latency = compare_latency(
        {"fp32": ort_session(fp32_path), "int8": ort_session(int8_path)}, images[:1], layout
    )
    record: dict[str, Any] = {
        "file": "model.int8.onnx",
        "format": "QDQ",
        "quantized_ops": ["Conv"],
        "calibration": {"split": "train", "images": len(calibration), "method": "minmax"},
        "metric": "image_auroc",
        "split": eval_split,
        "images": len(eval_indices),
        "fp32": _finite(fp32_metric),
        "int8": _finite(int8_metric),
        "drop": _finite(drop),
        "tolerance": tolerance,
        "latency_ms_batch1": {name: round(value, 3) for name, value in latency.items()},
        "speedup": round(latency["fp32"] / latency["int8"], 2) if latency["int8"] > 0 else None,
        "seconds": round(time.perf_counter() - started, 2),
    }
    if not math.isfinite(drop):
        record.update(
            accepted=False,
            reason=f"image AUROC is undefined on the {eval_split} split (it needs good and"
            " defective images) — fp32 kept",
        )
    elif drop > tolerance:
        record.update(
            accepted=False,
            reason=f"int8 image AUROC {int8_metric:.4f} vs fp32 {fp32_metric:.4f} on"
            f" {len(eval_indices)} {eval_split} images: a drop of {drop:.4f}, above"
            f" export.max_accuracy_drop={tolerance:g} — fp32 kept",
        )
    else:
        record.update(accepted=True, reason=None)
    if not record["accepted"]:
        int8_path.unlink()
    return record


def _reference_indices(dataset: PreparedDataset) -> tuple[str, NDArray[np.int64]]:
    """Held-out good images (a model scores its own bank's images near zero), else train."""
    for split in HELD_OUT_SPLITS:
        rows = dataset.indices(split)
        good = rows[np.asarray(dataset.targets[rows]).reshape(-1) == 0]
        if len(good):
            return split, good[:_REFERENCE_MAX]
    return "train", dataset.indices("train")[:_REFERENCE_MAX]


def export_anomaly(
    settings: Settings,
    run_dir: Path,
    dataset: PreparedDataset,
    *,
    checkpoint: str,
    quantize: str,
    progress: ProgressReporter = NULL_PROGRESS,
) -> ExportResult:
    """Write ``run_dir/bundle/`` for an anomaly run (called by ``export_run``).

    Raises:
        ExportError: The graph cannot be exported, or parity fails (no bundle is left).
    """
    from visionops.artifacts import BundleMeta, ParityRecord
    from visionops.export.graph import export_onnx, toolchain_versions
    from visionops.inference.runtime import INPUT_NAME, ort_session
    from visionops.results import ExportResult

    started = time.perf_counter()
    options = settings.export
    layout = options.layout
    model, run = load_anomaly_model(run_dir, checkpoint)
    size, channels = run.model.image_size, run.model.channels
    if (dataset.image_size, dataset.channels) != (size, channels):
        raise ArtifactError(
            f"the prepared dataset {dataset.path} holds {dataset.image_size}px images but run"
            f" {run_dir.name} was built at {size}px — recreate the original dataset with"
            " `visionops data preprocess`"
        )
    normalization = run.normalization
    bar = progress.start(f"export {run_dir.name}", total=4 if quantize == "int8" else 3)
    try:
        with atomic_dir(run_dir / "bundle") as tmp:
            model_path = tmp / "model.onnx"
            logger.info(
                f"exporting anomaly run {run_dir.name} to ONNX opset {options.opset}: bank of"
                f" {int(model.bank.shape[0])} patches in the graph, {layout} uint8 {size}px"
            )
            wrapper = AnomalyExportWrapper(model, normalization.mean, normalization.std, layout)
            export_onnx(
                wrapper.eval(),
                model_path,
                image_size=size,
                channels=channels,
                layout=layout,
                output_names=OUTPUTS,
                opset=options.opset,
            )
            bar.advance(1)
            split = "val" if len(dataset.indices("val")) else "test"
            parity_indices = dataset.indices(split)[:_PARITY_MAX_IMAGES]
            session = ort_session(model_path)
            parity = _parity(
                session,
                model,
                dataset,
                parity_indices,
                normalization,
                layout=layout,
                atol=options.parity_atol,
                split=split,
            )
            if not parity["passed"]:
                raise ExportError(
                    f"parity check failed on {parity['images']} {split} images:"
                    f" {'; '.join(parity['failures'])} — the ONNX graph does not reproduce"
                    " PyTorch; no bundle was written (raise export.parity_atol only if you"
                    " accept the difference)"
                )
            diffs = ", ".join(f"{k} {v:.2g}" for k, v in parity["max_abs_diff"].items())
            logger.info(f"parity passed on {parity['images']} {split} images: max |diff| {diffs}")
            bar.advance(1)

            eval_split = "test" if len(dataset.indices("test")) else "val"
            eval_indices = dataset.indices(eval_split)
            scores, heatmaps, _ = _onnx_outputs(
                session, np.asarray(dataset.images[eval_indices]), layout, _BATCH
            )
            threshold = float((run.thresholds or [0.0])[0])
            masks = np.asarray(dataset.masks[eval_indices]) if dataset.masks is not None else None
            has_masks = masks is not None and bool(masks.any())
            metrics = {
                key: _finite(value)
                for key, value in anomaly_metrics(
                    scores,
                    np.asarray(dataset.targets[eval_indices]),
                    threshold,
                    heatmaps if has_masks else None,
                    masks if has_masks else None,
                ).items()
            }
            quantized: dict[str, Any] | None = None
            if quantize == "int8":
                quantized = _int8(
                    tmp,
                    dataset,
                    layout=layout,
                    tolerance=options.max_accuracy_drop,
                    eval_split=eval_split,
                    eval_indices=eval_indices,
                    fp32_scores=scores,
                )
                if quantized["accepted"]:
                    logger.info(
                        f"int8 accepted: image AUROC {quantized['fp32']} → {quantized['int8']}"
                    )
                else:
                    logger.warning(f"int8 refused: {quantized['reason']}")
                bar.advance(1)

            reference_split, sample = _reference_indices(dataset)
            sample_images = np.asarray(dataset.images[sample])
            ref_scores, _, ref_embeddings = _onnx_outputs(session, sample_images, layout, _BATCH)
            reference = reference_arrays(
                ref_scores.reshape(-1, 1),
                ref_embeddings,
                sample_images,
                sample,
                reference_split,
                dataset.original_sizes(sample),
            )
            with (tmp / "reference.npz").open("wb") as handle:
                np.savez_compressed(handle, allow_pickle=False, **reference)
            config_hash = run.config_hash
            recorded = run.dataset
            anomaly = ((run.model_extra or {}).get("anomaly") or {}) | {
                "threshold_value": threshold
            }
            bundle_manifest: dict[str, Any] = {
                "task": "anomaly",
                "model_version": f"{run.name}@{config_hash[:8]}",
                "input": {
                    "name": INPUT_NAME,
                    "dtype": "uint8",
                    "layout": layout,
                    "size": size,
                    "channels": channels,
                    "resize": run.resize or dataset.resize,
                    "max_image_pixels": settings.data.max_image_pixels,
                },
                "outputs": {"main": "score", "embedding": "embedding", "heatmap": "heatmap"},
                "class_names": run.class_names,
                "target_names": None,
                "target_units": None,
                "thresholds": [threshold],
                "anomaly": anomaly,
                "metrics": metrics,
                "metrics_split": {"split": eval_split, "images": len(eval_indices)},
                "training_data_fingerprint": recorded.fingerprint,
                "config_hash": config_hash,
                "versions": toolchain_versions(),
                "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
                "quantized": quantized,
                "run": {
                    "name": run.name,
                    "checkpoint": checkpoint,
                    "epoch": 1,
                    "model": run.model.name,
                    "dataset": recorded.name,
                },
                "opset": options.opset,
                "reference_samples": len(sample),
                "reference_split": reference_split,
            }
            atomic_write_json(tmp / "parity.json", parity)
            # write_bundle_manifest embeds the manifest in every graph and checksums the files.
            written = write_bundle_manifest(tmp, BundleMeta.model_validate(bundle_manifest))
            bar.advance(1)
    finally:
        bar.close()
    seconds = time.perf_counter() - started
    logger.info(f"bundle written to {run_dir / 'bundle'} in {seconds:.1f}s")
    return ExportResult(
        bundle_dir=run_dir / "bundle",
        meta=written,
        parity=ParityRecord.model_validate(parity),
        quantized=quantized,
        warnings=[],
        seconds=seconds,
    )
