"""The parity check: ONNX Runtime against PyTorch on real images, before a bundle exists.

:func:`check_parity` runs the exported graph and the trained model (through a PyTorch path
deliberately independent of :class:`~visionops.export.graph.ExportWrapper`) over the run's
validation images and records, per output, the largest difference and its bound in
``parity.json``. Without a pass there is no bundle. Checking another execution provider
against the recorded CPU outputs at load time is
:func:`visionops.inference.runtime.check_provider_parity`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

from visionops.artifacts import Normalization, ParityMetric, ParityRecord
from visionops.export.graph import graph_output_names
from visionops.inference.runtime import (
    DEFAULT_BATCH,
    INPUT_NAME,
    batch_slices,
    ort_session,
    to_layout,
)
from visionops.tasks import finite

if TYPE_CHECKING:
    import onnxruntime

    from visionops.tasks import Task

__all__ = [
    "MIN_TOP1_AGREEMENT",
    "PARITY_MAX_IMAGES",
    "check_parity",
    "monitored_metric",
    "run_graph",
]

PARITY_MAX_IMAGES: Final = 512
"""Validation images the parity check runs through both engines (all of them when fewer)."""
MIN_TOP1_AGREEMENT: Final = 0.999


def run_graph(
    session: onnxruntime.InferenceSession,
    images_nhwc: NDArray[np.uint8],
    layout: str,
    names: Sequence[str],
    batch_size: int = DEFAULT_BATCH,
) -> dict[str, NDArray[np.float32]]:
    """Every named output of a bundle graph over ``(N, H, W, C)`` uint8 images, as float32."""
    parts: dict[str, list[NDArray[np.float32]]] = {name: [] for name in names}
    for part in batch_slices(len(images_nhwc), batch_size):
        values = session.run(list(names), {INPUT_NAME: to_layout(images_nhwc[part], layout)})
        for name, value in zip(names, values, strict=True):
            parts[name].append(np.asarray(value, dtype=np.float32))
    return {name: np.concatenate(values) for name, values in parts.items()}


def _torch_predict(
    model: nn.Module, images_nhwc: NDArray[np.uint8], normalization: Normalization, task: Task
) -> dict[str, NDArray[np.float32]]:
    """The PyTorch side of parity: exactly what ``visionops eval`` computes.

    Deliberately independent of :class:`ExportWrapper` (its own layout handling, the run's
    normalisation, the task's own ``graph_outputs``), so a wrapper mistake fails parity.
    """
    mean = torch.tensor(normalization.mean, dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(normalization.std, dtype=torch.float32).view(1, -1, 1, 1)
    names = graph_output_names(task, model)
    parts: dict[str, list[NDArray[np.float32]]] = {name: [] for name in names}
    with torch.inference_mode():
        for part in batch_slices(len(images_nhwc)):
            pixels = torch.from_numpy(np.ascontiguousarray(images_nhwc[part])).permute(0, 3, 1, 2)
            normalised = (pixels.float().div_(255.0) - mean) / std
            outputs = task.graph_outputs(model, normalised)
            for name, value in zip(names, outputs, strict=True):
                parts[name].append(value.float().numpy().astype(np.float32))
    return {name: np.concatenate(values) for name, values in parts.items()}


def monitored_metric(
    task: Task, predictions: NDArray[np.floating[Any]], targets: NDArray[Any]
) -> float:
    """The task's monitored metric (accuracy, mAP or R²) of post-processed predictions."""
    return float(task.metrics(np.asarray(predictions, dtype=np.float64), targets)[task.monitor])


def check_parity(
    onnx_path: Path,
    model: nn.Module,
    normalization: Normalization,
    images_nhwc: NDArray[np.uint8],
    targets: NDArray[Any],
    *,
    layout: str,
    atol: float,
    task: Task,
    split: str = "val",
) -> ParityRecord:
    """Compare ONNX Runtime with PyTorch on real images.

    The check passes when, for every output, the largest absolute difference is at most
    ``atol * max(1, largest |PyTorch value|)`` — exactly ``atol`` for probabilities — and
    (classification, multilabel) the top-1 class agrees on at least
    :data:`MIN_TOP1_AGREEMENT` of the images. The first image also runs alone (batch 1), so
    the dynamic batch dimension is exercised at two sizes.

    Args:
        onnx_path: The exported graph.
        model: The trained PyTorch model (normalised float in, raw outputs out).
        normalization: The run's normalisation (``run.json``).
        images_nhwc: ``(N, H, W, C)`` uint8 images.
        targets: Their targets as stored in the prepared dataset.
        layout: The graph's input layout.
        atol: Largest allowed absolute difference.
        task: The run's task (post-processing and metrics).
        split: Name of the split the images come from (recorded).

    Returns:
        The record written to ``parity.json`` (``passed`` says whether it passed).
    """
    session = ort_session(onnx_path)
    names = graph_output_names(task, model)
    onnx_outputs = run_graph(session, images_nhwc, layout, names)
    single_outputs = run_graph(session, images_nhwc[:1], layout, names, batch_size=1)
    torch_outputs = _torch_predict(model, images_nhwc, normalization, task)
    differences: dict[str, float] = {}
    bounds: dict[str, float] = {}
    for name in names:
        batched, single, reference = onnx_outputs[name], single_outputs[name], torch_outputs[name]
        differences[name] = float(
            max(
                np.abs(batched - reference).max(initial=0.0),
                np.abs(single - reference[:1]).max(initial=0.0),
            )
        )
        # fp32 carries ~7 significant digits: an output in the hundreds (kcal) or an
        # un-normalised embedding cannot match to 1e-4 absolutely. Outputs within [-1, 1]
        # (probabilities) get exactly ``atol``; larger ones ``atol`` relative to their peak.
        bounds[name] = atol * max(1.0, float(np.abs(reference).max(initial=0.0)))
    onnx_main, torch_main = onnx_outputs[task.main_output], torch_outputs[task.main_output]
    agreement: float | None = None
    if task.name in ("classification", "multilabel"):
        agreement = float((onnx_main.argmax(axis=1) == torch_main.argmax(axis=1)).mean())
    metric_torch = monitored_metric(task, torch_main, targets)
    metric_onnx = monitored_metric(task, onnx_main, targets)
    failures = [
        f"{name} differs by up to {value:.3g} (limit {bounds[name]:.3g})"
        for name, value in differences.items()
        if not value <= bounds[name]
    ]
    if agreement is not None and agreement < MIN_TOP1_AGREEMENT:
        failures.append(f"top-1 agreement {agreement:.2%} is below {MIN_TOP1_AGREEMENT:.1%}")
    import onnxruntime

    return ParityRecord(
        passed=not failures,
        failures=failures,
        split=split,
        images=len(images_nhwc),
        batch_sizes=sorted({1, min(DEFAULT_BATCH, len(images_nhwc))}),
        atol=atol,
        max_abs_diff=differences,
        bound=bounds,
        top1_agreement=agreement,
        min_top1_agreement=MIN_TOP1_AGREEMENT if agreement is not None else None,
        metric=ParityMetric(
            name=task.monitor,
            pytorch=finite(metric_torch),
            onnxruntime=finite(metric_onnx),
            difference=finite(metric_onnx - metric_torch),
        ),
        engines={
            "pytorch": f"torch {torch.__version__} eager, CPU, fp32",
            "onnxruntime": f"onnxruntime {onnxruntime.__version__} CPUExecutionProvider",
        },
        checked_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
