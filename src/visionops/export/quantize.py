"""Static int8 quantisation of a bundle graph, kept only when the metric allows it.

``--quantize int8``: :func:`quantize_int8` inserts QuantizeLinear/DequantizeLinear pairs with
activation ranges calibrated on training images; :func:`quantize_and_judge` scores the int8
graph against the fp32 one on the run's held-out images and keeps ``model.int8.onnx`` only
when the monitored metric drops by at most ``export.max_accuracy_drop``. Never imports torch.
"""

from __future__ import annotations

import contextlib
import io
import math
import tempfile
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Final

import numpy as np
from loguru import logger
from numpy.typing import NDArray

from visionops.artifacts import Calibration, QuantizedRecord
from visionops.errors import ExportError
from visionops.export.graph import EMBEDDING_NAME, first_line
from visionops.export.parity import monitored_metric
from visionops.export.timing import compare_latency
from visionops.inference.runtime import (
    INPUT_NAME,
    batch_slices,
    onnx_predict,
    ort_session,
    to_layout,
)
from visionops.tasks import finite

if TYPE_CHECKING:
    from visionops.data.prepared import PreparedDataset
    from visionops.tasks import Task

__all__ = ["CALIBRATION_MAX_IMAGES", "quantize_and_judge", "quantize_int8"]

CALIBRATION_MAX_IMAGES: Final = 256
"""Training images int8 calibration sees (min/max of every activation over them)."""
_CALIBRATION_SEED: Final = 0


def quantize_int8(
    fp32_path: Path,
    int8_path: Path,
    calibration_nhwc: NDArray[np.uint8],
    *,
    layout: str,
    batch_size: int = 16,
    op_types: Sequence[str] | None = None,
    symbolic_shapes: bool = True,
) -> None:
    """Static int8 quantisation (QDQ) with ONNX Runtime's tooling.

    The graph is first pre-processed (``quant_pre_process``: shape inference and graph
    optimisation), then ``quantize_static`` inserts QuantizeLinear/DequantizeLinear pairs
    with activation ranges calibrated (min/max) on ``calibration_nhwc``. Activations are
    uint8 and weights int8 per output channel, ONNX Runtime's advice for x86 CPUs.

    Args:
        fp32_path: The fp32 graph.
        int8_path: Where to write the quantised graph.
        calibration_nhwc: ``(N, H, W, C)`` uint8 training images.
        layout: The graph's input layout.
        batch_size: Images per calibration batch.
        op_types: Only these operators are quantised (None: every one ONNX Runtime can).
        symbolic_shapes: Whether pre-processing runs ONNX Runtime's symbolic shape
            inference (off for graphs it cannot follow; ONNX's own inference still runs).

    Raises:
        ExportError: ONNX Runtime cannot quantise the graph.
    """
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class _Reader(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self._parts = batch_slices(len(calibration_nhwc), batch_size)

        def get_next(self) -> dict[str, NDArray[np.uint8]] | None:
            part = next(self._parts, None)
            if part is None:
                return None
            return {INPUT_NAME: to_layout(calibration_nhwc[part], layout)}

    with tempfile.TemporaryDirectory(prefix="visionops-int8-") as scratch:
        prepared = Path(scratch) / "model.pre.onnx"
        noise = io.StringIO()
        try:
            with warnings.catch_warnings(), contextlib.redirect_stdout(noise):
                warnings.simplefilter("ignore")
                quant_pre_process(
                    str(fp32_path), str(prepared), skip_symbolic_shape=not symbolic_shapes
                )
                quantize_static(
                    str(prepared),
                    str(int8_path),
                    _Reader(),
                    quant_format=QuantFormat.QDQ,
                    op_types_to_quantize=list(op_types) if op_types else None,
                    per_channel=True,
                    activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8,
                    calibrate_method=CalibrationMethod.MinMax,
                )
        except Exception as exc:
            raise ExportError(
                f"ONNX Runtime cannot quantise this graph ({type(exc).__name__}:"
                f" {first_line(exc)}) — export without --quantize (fp32 is kept)"
            ) from exc
        if noise.getvalue().strip():
            logger.debug(f"quantiser output: {noise.getvalue().strip()}")


ATTENTION_INT8_OPS = ("Conv", "MatMul", "Gemm")
"""What int8 touches in a graph with attention: the operators with weights. A transformer's
residual additions, softmax and layer norms lose too much at 8 bits (the whole-graph int8 of a
ViT-Tiny drops several points of accuracy), while its MatMuls hold nearly all its work."""

_ATTENTION_OPS = frozenset({"Softmax", "LayerNormalization"})


def int8_op_types(task: Task, graph: Path) -> tuple[str, ...] | None:
    """The operators int8 quantises: the task's choice, else the weighted ones of a transformer.

    Args:
        task: The run's task (its ``int8_op_types`` wins when it has one).
        graph: The fp32 ONNX graph.

    Returns:
        Operator types, or None for every one ONNX Runtime can quantise.
    """
    if task.int8_op_types:
        return tuple(task.int8_op_types)
    import onnx

    ops = {node.op_type for node in onnx.load(str(graph), load_external_data=False).graph.node}
    return ATTENTION_INT8_OPS if ops & _ATTENTION_OPS else None


def quantize_and_judge(
    tmp: Path,
    dataset: PreparedDataset,
    task: Task,
    *,
    layout: str,
    tolerance: float,
    eval_split: str,
    eval_indices: NDArray[np.int64],
    fp32_outputs: NDArray[np.float32],
) -> QuantizedRecord:
    """Quantise, compare the metric with fp32, keep or drop the int8 file; return the record.

    Args:
        tmp: The bundle folder being written (holds ``model.onnx``).
        dataset: The run's prepared dataset (calibration on its train split).
        task: The run's task (monitored metric).
        layout: The graph's input layout.
        tolerance: Largest accepted drop of the monitored metric.
        eval_split: Name of the split the metric is computed on.
        eval_indices: Its images' indices.
        fp32_outputs: The fp32 graph's outputs on those images.

    Returns:
        The ``quantized`` record of ``visionops.json`` (``accepted``, ``reason``, metrics,
        speed-up); ``model.int8.onnx`` is left in ``tmp`` only when accepted.
    """
    train = dataset.indices("train")
    # Calibrated on what the model was built from (an anomaly bank: good images only).
    train = train[task.learns_from(np.asarray(dataset.targets[train]))]
    rng = np.random.default_rng(_CALIBRATION_SEED)
    calibration = np.sort(rng.permutation(train)[:CALIBRATION_MAX_IMAGES])
    if len(calibration) == 0:
        return QuantizedRecord(
            accepted=False,
            reason="int8 calibration needs training images and the prepared dataset's train"
            " split is empty — fp32 kept",
            metric=task.monitor,
        )
    fp32_path, int8_path = tmp / "model.onnx", tmp / "model.int8.onnx"
    started = time.perf_counter()
    op_types = int8_op_types(task, fp32_path)
    try:
        quantize_int8(
            fp32_path,
            int8_path,
            np.asarray(dataset.images[calibration]),
            layout=layout,
            op_types=op_types,
            symbolic_shapes=task.int8_symbolic_shapes,
        )
    except ExportError as exc:
        # The fp32 bundle is still good: keep it and say why there is no int8 model.
        int8_path.unlink(missing_ok=True)
        return QuantizedRecord(accepted=False, reason=str(exc), metric=task.monitor)
    images = np.asarray(dataset.images[eval_indices])
    targets = np.asarray(dataset.targets[eval_indices])
    names = [task.main_output, EMBEDDING_NAME]
    int8_outputs, _ = onnx_predict(ort_session(int8_path), images, layout, output_names=names)
    fp32_metric = monitored_metric(task, fp32_outputs, targets)
    int8_metric = monitored_metric(task, int8_outputs, targets)
    drop = fp32_metric - int8_metric
    latency = compare_latency(
        {"fp32": ort_session(fp32_path), "int8": ort_session(int8_path)}, images[:1], layout
    )
    speedup = latency["fp32"] / latency["int8"] if latency["int8"] > 0 else None
    if not math.isfinite(drop):
        reason: str | None = (
            f"the {task.monitor} of the int8 model is not a number on the {eval_split}"
            " split — fp32 kept"
        )
    elif drop > tolerance:
        reason = (
            f"int8 {task.monitor} {int8_metric:.4f} vs fp32 {fp32_metric:.4f} on"
            f" {len(eval_indices)} {eval_split} images: a drop of {drop:.4f}, above"
            f" export.max_accuracy_drop={tolerance:g} — fp32 kept (raise the tolerance to"
            " accept it)"
        )
    else:
        reason = None
    record = QuantizedRecord(
        accepted=reason is None,
        reason=reason,
        file="model.int8.onnx",
        metric=task.monitor,
        format="QDQ",
        activations="uint8",
        weights="int8, per channel",
        quantized_ops=list(op_types) if op_types else None,
        calibration=Calibration(split="train", images=len(calibration), method="minmax"),
        split=eval_split,
        images=len(eval_indices),
        fp32=finite(fp32_metric),
        int8=finite(int8_metric),
        drop=finite(drop),
        tolerance=tolerance,
        latency_ms_batch1={name: round(value, 3) for name, value in latency.items()},
        speedup=round(speedup, 2) if speedup else None,
        size_bytes={"fp32": fp32_path.stat().st_size, "int8": int8_path.stat().st_size},
        seconds=round(time.perf_counter() - started, 2),
    )
    if not record.accepted:
        int8_path.unlink()
    return record
