"""``visionops export``: turn a trained run into a self-describing, verified ONNX bundle.

The bundle (``runs/<name>/bundle/``, see ``docs/artifacts.md``) is the contract between
training and serving:

- ``model.onnx`` takes **uint8** pixels at the trained size and channels (NCHW or NHWC) with a
  dynamic batch dimension. The uint8 → float conversion, the ``/255``, the normalisation with
  the run's mean and std, and the task's post-processing (softmax, sigmoid, de-standardised
  regression targets) all happen *inside* the graph (:class:`ExportWrapper`), so a server
  only decodes and resizes images. The graph has two named outputs: the task output
  (``probabilities`` or ``values``) and ``embedding``, the pooled feature vector drift
  detection compares.
- ``parity.json`` records a mandatory check: ONNX Runtime against PyTorch on real validation
  images from the run's prepared dataset. Without a pass there is no bundle.
- ``model.int8.onnx`` (``--quantize int8``): static QDQ quantisation calibrated on training
  images, kept only when the metric drops by at most ``export.max_accuracy_drop``.
- ``reference.npz``: embeddings, image statistics and predictions of a sample of held-out
  (validation) images, computed through the exported graph itself — the baseline of
  ``visionops drift``; it records the split it came from.
- ``visionops.json`` (and the ONNX ``metadata_props`` key ``visionops``): everything a server
  needs to know, plus the checksum of every file.

The graph is produced by PyTorch's ``torch.export``-based ONNX exporter (``dynamo=True``, the
default since PyTorch 2.9): it yields a clean graph (batch norm folded into the convolutions,
no TorchScript ``Identity``/``Constant`` clutter), a symbolic batch dimension, and — because
the program is captured first with :func:`torch.export.export` — the module path of any
operator that has no ONNX translation, which the error message names.

Examples:
    >>> result = export_run(load_settings(), "run-001", quantize="int8")  # doctest: +SKIP
    >>> result.parity["passed"], (result.bundle_dir / "model.onnx").is_file()  # doctest: +SKIP
    (True, True)
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import re
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

import numpy as np
import torch
from loguru import logger
from numpy.typing import NDArray
from torch import nn

from visionops import __version__
from visionops._io import atomic_dir, atomic_write_json
from visionops.bundle import BUNDLE_KIND, SCHEMA_VERSION, write_bundle_manifest
from visionops.drift.reference import choose_reference_indices
from visionops.errors import (
    ArtifactError,
    ConfigError,
    DatasetNotFoundError,
    ExportError,
    VisionOpsError,
)
from visionops.imaging import image_statistics
from visionops.progress import NULL_PROGRESS, ProgressReporter
from visionops.tasks import TASKS, Task, task_for

if TYPE_CHECKING:
    import onnx
    import onnxruntime

    from visionops.config import ExportSettings, Settings
    from visionops.data.prepared import PreparedDataset

__all__ = [
    "CALIBRATION_MAX_IMAGES",
    "INPUT_NAME",
    "MIN_TOP1_AGREEMENT",
    "PARITY_MAX_IMAGES",
    "ExportResult",
    "ExportWrapper",
    "build_reference",
    "build_wrapper",
    "check_parity",
    "export_onnx",
    "export_run",
    "find_run_dataset",
    "monitored_metric",
    "onnx_predict",
    "ort_session",
    "quantize_int8",
    "to_layout",
]

INPUT_NAME: Final = "pixels"
EMBEDDING_NAME: Final = "embedding"
PARITY_MAX_IMAGES: Final = 512
"""Validation images the parity check runs through both engines (all of them when fewer)."""
MIN_TOP1_AGREEMENT: Final = 0.999
CALIBRATION_MAX_IMAGES: Final = 256
"""Training images int8 calibration sees (min/max of every activation over them)."""
_BATCH: Final = 32
_REFERENCE_SEED: Final = 0
_DIM_NAME: Final = "batch"


# --------------------------------------------------------------------------- the graph


class ExportWrapper(nn.Module):
    """What the bundle computes: uint8 pixels in; task output and embedding out.

    Args:
        model: A :class:`~visionops.models.VisionModel` (``forward(normalised) -> (raw,
            embedding)``), in eval mode.
        task: The run's task; its ``postprocess`` (softmax, sigmoid, de-standardisation...)
            goes into the graph, the one definition training and eval also use.
        mean: Per-channel mean on the 0..1 scale (``run.json`` ``normalization.mean``).
        std: Per-channel standard deviation on the 0..1 scale.
        layout: ``NCHW`` or ``NHWC``: the layout of the uint8 input.

    Examples:
        >>> task = get_task("classification").from_manifest({"class_names": ["a", "b"]})
        >>> wrapper = ExportWrapper(model, task=task, mean=[0.5] * 3, std=[0.25] * 3)
        >>> probabilities, embedding = wrapper(torch.zeros(2, 3, 64, 64, dtype=torch.uint8))
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        task: Task,
        mean: Sequence[float],
        std: Sequence[float],
        layout: str = "NCHW",
    ) -> None:
        super().__init__()
        if layout not in ("NCHW", "NHWC"):
            raise ExportError(f"unknown layout '{layout}' — use export.layout=NCHW or NHWC")
        self.model = model
        self.task = task
        self.layout = layout
        self.register_buffer(
            "mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1)
        )
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1))

    mean: torch.Tensor
    std: torch.Tensor

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(task output (B, K), embedding (B, D))`` for uint8 pixels."""
        images = pixels.to(torch.float32)
        if self.layout == "NHWC":
            images = images.permute(0, 3, 1, 2)
        images = (images / 255.0 - self.mean) / self.std
        raw, embedding = self.model(images)
        return self.task.postprocess(raw), embedding


def build_wrapper(
    model: nn.Module, run_manifest: Mapping[str, Any], layout: str = "NCHW"
) -> ExportWrapper:
    """Wrap a trained model with the normalisation and post-processing of its run.

    Args:
        model: The run's model (see :func:`visionops.runs.load_trained_model`).
        run_manifest: The run's ``run.json``.
        layout: Input layout of the graph.

    Returns:
        The wrapper, in eval mode.

    Raises:
        ExportError: An incomplete manifest.
    """
    normalization = run_manifest.get("normalization") or {}
    if "mean" not in normalization or "std" not in normalization:
        raise ExportError(
            "run.json has no normalization mean/std — the run did not finish writing its"
            " manifest; retrain it with `visionops train`"
        )
    wrapper = ExportWrapper(
        model,
        task=task_for(run_manifest),
        mean=normalization["mean"],
        std=normalization["std"],
        layout=layout,
    )
    return wrapper.eval()


def to_layout(images_nhwc: NDArray[np.uint8], layout: str) -> NDArray[np.uint8]:
    """Bring ``(N, H, W, C)`` uint8 images into the graph's input layout (contiguous)."""
    if layout == "NCHW":
        return np.ascontiguousarray(np.transpose(images_nhwc, (0, 3, 1, 2)))
    return np.ascontiguousarray(images_nhwc)


# --------------------------------------------------------------------------- ONNX export


def _first_line(exc: BaseException, limit: int = 160) -> str:
    for line in str(exc).splitlines():
        # Drop ANSI colour codes the exporter puts in its messages.
        line = re.sub(r"\x1b\[[0-9;]*m", "", line).strip()
        if line:
            return line[:limit]
    return type(exc).__name__


def _failed_operator(message: str) -> str | None:
    """The operator an exporter error complains about (``aten.foo.default`` style)."""
    patterns = (
        r"op='([\w.:]+)'",
        r"target=torch\.ops\.([\w.]+)",
        r"No ONNX function found for ([\w.:]+)",
        r"[Uu]nsupported (?:ONNX )?op(?:erator)? '?([\w.:]+)",
    )
    for pattern in patterns:
        match = re.search(pattern, message)
        if match:
            return match.group(1).removesuffix(".default")
    return None


def _layer_of(program: Any, operator: str) -> str | None:
    """Module path (and class) of the first node in ``program`` that calls ``operator``."""
    for node in program.graph.nodes:
        target = str(getattr(node, "target", ""))
        if node.op != "call_function" or not (
            target == operator or target.startswith(operator + ".")
        ):
            continue
        stack = node.meta.get("nn_module_stack") or {}
        if not stack:
            return None
        path, kind = list(stack.values())[-1]
        path = str(path).removeprefix("model.")
        name = kind.__name__ if isinstance(kind, type) else str(kind).rsplit(".", 1)[-1]
        return f"{path or '<root>'} ({name})"
    return None


def _name_batch_dimension(proto: onnx.ModelProto) -> None:
    """Call the symbolic batch dimension ``batch`` everywhere (the exporter says ``s0``)."""
    first = proto.graph.input[0].type.tensor_type.shape.dim[0]
    symbol = first.dim_param
    if not symbol:
        raise ExportError(
            "the exported graph has a fixed batch size — this is a bug in visionops' export;"
            " report it with the output of `visionops export -vv`"
        )
    for value in [*proto.graph.input, *proto.graph.output, *proto.graph.value_info]:
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param == symbol:
                dim.dim_param = _DIM_NAME


def export_onnx(
    module: nn.Module,
    path: Path,
    *,
    image_size: int,
    channels: int,
    layout: str = "NCHW",
    output_names: Sequence[str] = ("probabilities", EMBEDDING_NAME),
    opset: int = 18,
) -> None:
    """Export a module taking uint8 pixels to ONNX with a dynamic batch dimension.

    The program is first captured with :func:`torch.export.export` (non-strict), then
    translated by ``torch.onnx.export(..., dynamo=True)`` and optimised by onnxscript.

    Args:
        module: A module whose ``forward`` takes one uint8 tensor (e.g. :class:`ExportWrapper`).
        path: Where to write the ``.onnx`` file (weights embedded, no external data).
        image_size: Side of the square input.
        channels: 1 or 3.
        layout: Input layout.
        output_names: Names of the graph outputs, in ``forward``'s order.
        opset: ONNX opset version.

    Raises:
        ExportError: The model cannot be traced, or an operator has no ONNX translation (the
            message names the operator and, where it can be told, the layer).
    """
    import onnx

    module = module.eval()
    shape = (
        (2, channels, image_size, image_size)
        if layout == "NCHW"
        else (2, image_size, image_size, channels)
    )
    # Batch 2, not 1: torch.export specialises a dimension of size 1 to a constant.
    example = torch.randint(
        0, 256, shape, dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )
    batch = torch.export.Dim(_DIM_NAME, min=1)
    noise = io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(noise):
        warnings.simplefilter("ignore")
        try:
            program = torch.export.export(
                module, (example,), dynamic_shapes=({0: batch},), strict=False
            )
        except Exception as exc:
            raise ExportError(
                f"PyTorch cannot capture the model for ONNX export ({type(exc).__name__}:"
                f" {_first_line(exc)}) — the model has code torch.export cannot trace;"
                " pick another model.name (`visionops models`) or simplify the layer"
            ) from exc
        try:
            exported = torch.onnx.export(
                program,
                (example,),
                None,
                dynamo=True,
                verbose=False,
                input_names=[INPUT_NAME],
                output_names=list(output_names),
                opset_version=opset,
                optimize=True,
            )
        except Exception as exc:
            operator = _failed_operator(str(exc))
            if operator is None:
                raise ExportError(
                    f"ONNX export failed at opset {opset} ({type(exc).__name__}:"
                    f" {_first_line(exc)}) — try another export.opset, or another model.name"
                ) from exc
            layer = _layer_of(program, operator)
            where = f" in layer {layer}" if layer else ""
            raise ExportError(
                f"operator {operator}{where} has no ONNX translation at opset {opset} —"
                " replace that layer, pick another model.name (`visionops models`), or try"
                " another export.opset"
            ) from exc
    if noise.getvalue().strip():
        logger.debug(f"exporter output: {noise.getvalue().strip()}")
    if exported is None:  # only the TorchScript exporter returns None
        raise ExportError("the ONNX exporter returned no program — update torch and onnxscript")
    proto = exported.model_proto
    _name_batch_dimension(proto)
    proto.producer_name = "visionops"
    proto.producer_version = __version__
    onnx.checker.check_model(proto)
    onnx.save_model(proto, str(path))


def _set_metadata(path: Path, metadata: Mapping[str, Any]) -> None:
    """Put ``metadata`` (JSON) under ``metadata_props['visionops']`` of an ONNX file."""
    import onnx

    proto = onnx.load(str(path))
    kept = [prop for prop in proto.metadata_props if prop.key != "visionops"]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    entry = proto.metadata_props.add()
    entry.key = "visionops"
    entry.value = json.dumps(metadata, sort_keys=False, default=str)
    proto.doc_string = (
        f"visionops {metadata.get('task')} model {metadata.get('model_version')}: uint8 pixels"
        f" in, {', '.join(dict(metadata.get('outputs') or {}).values())} out"
    )
    onnx.save_model(proto, str(path))


# --------------------------------------------------------------------------- running


def ort_session(path: Path, threads: int | None = None) -> onnxruntime.InferenceSession:
    """An ONNX Runtime CPU session with every graph optimisation on.

    Args:
        path: The ``.onnx`` file.
        threads: Intra-op threads (None: ONNX Runtime's default, one per core).
    """
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
    return onnxruntime.InferenceSession(
        str(path), sess_options=options, providers=["CPUExecutionProvider"]
    )


def _batches(count: int, size: int = _BATCH) -> Iterator[slice]:
    for start in range(0, count, size):
        yield slice(start, min(start + size, count))


def onnx_predict(
    session: onnxruntime.InferenceSession,
    images_nhwc: NDArray[np.uint8],
    layout: str,
    batch_size: int = _BATCH,
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """Run a bundle graph over ``(N, H, W, C)`` uint8 images.

    Returns:
        ``(task outputs (N, K), embeddings (N, D))``.
    """
    mains: list[NDArray[np.float32]] = []
    embeddings: list[NDArray[np.float32]] = []
    for part in _batches(len(images_nhwc), batch_size):
        main, embedding = session.run(None, {INPUT_NAME: to_layout(images_nhwc[part], layout)})
        mains.append(np.asarray(main, dtype=np.float32))
        embeddings.append(np.asarray(embedding, dtype=np.float32))
    return np.concatenate(mains), np.concatenate(embeddings)


def _torch_predict(
    model: nn.Module,
    images_nhwc: NDArray[np.uint8],
    run_manifest: Mapping[str, Any],
    postprocess: Callable[[torch.Tensor], torch.Tensor],
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """The PyTorch side of parity: exactly what training and ``visionops eval`` compute.

    Deliberately independent of :class:`ExportWrapper` (its own layout handling, the run's
    normalisation, the task's own ``postprocess``), so a wrapper mistake fails parity.
    """
    normalization = run_manifest["normalization"]
    mean = torch.tensor(normalization["mean"], dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(normalization["std"], dtype=torch.float32).view(1, -1, 1, 1)
    mains: list[NDArray[np.float32]] = []
    embeddings: list[NDArray[np.float32]] = []
    with torch.inference_mode():
        for part in _batches(len(images_nhwc)):
            pixels = torch.from_numpy(np.ascontiguousarray(images_nhwc[part])).permute(0, 3, 1, 2)
            normalised = (pixels.float().div_(255.0) - mean) / std
            raw, embedding = model(normalised)
            mains.append(postprocess(raw.float()).numpy().astype(np.float32))
            embeddings.append(embedding.float().numpy().astype(np.float32))
    return np.concatenate(mains), np.concatenate(embeddings)


def monitored_metric(
    task: Task, predictions: NDArray[np.floating[Any]], targets: NDArray[Any]
) -> float:
    """The task's monitored metric (accuracy, mAP or R²) of post-processed predictions."""
    return float(task.metrics(np.asarray(predictions, dtype=np.float64), targets)[task.monitor])


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


# --------------------------------------------------------------------------- parity


def check_parity(
    onnx_path: Path,
    model: nn.Module,
    run_manifest: Mapping[str, Any],
    images_nhwc: NDArray[np.uint8],
    targets: NDArray[Any],
    *,
    layout: str,
    atol: float,
    task: Task,
    split: str = "val",
) -> dict[str, Any]:
    """Compare ONNX Runtime with PyTorch on real images.

    The check passes when, for every output, the largest absolute difference is at most
    ``atol * max(1, largest |PyTorch value|)`` — exactly ``atol`` for probabilities — and
    (classification, multilabel) the top-1 class agrees on at least
    :data:`MIN_TOP1_AGREEMENT` of the images. The first image also runs alone (batch 1), so
    the dynamic batch dimension is exercised at two sizes.

    Args:
        onnx_path: The exported graph.
        model: The trained PyTorch model (normalised float in, raw outputs out).
        run_manifest: The run's ``run.json`` (normalisation).
        images_nhwc: ``(N, H, W, C)`` uint8 images.
        targets: Their targets as stored in the prepared dataset.
        layout: The graph's input layout.
        atol: Largest allowed absolute difference.
        task: The run's task (post-processing and metrics).
        split: Name of the split the images come from (recorded).

    Returns:
        The parity record written to ``parity.json`` (``passed`` says whether it passed).
    """
    session = ort_session(onnx_path)
    onnx_main, onnx_embedding = onnx_predict(session, images_nhwc, layout)
    single_main, single_embedding = onnx_predict(session, images_nhwc[:1], layout, batch_size=1)
    torch_main, torch_embedding = _torch_predict(model, images_nhwc, run_manifest, task.postprocess)
    main_name = task.main_output
    pairs = {
        main_name: (onnx_main, single_main, torch_main),
        EMBEDDING_NAME: (onnx_embedding, single_embedding, torch_embedding),
    }
    differences: dict[str, float] = {}
    bounds: dict[str, float] = {}
    for name, (batched, single, reference) in pairs.items():
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

    return {
        "passed": not failures,
        "failures": failures,
        "split": split,
        "images": len(images_nhwc),
        "batch_sizes": sorted({1, min(_BATCH, len(images_nhwc))}),
        "atol": atol,
        "max_abs_diff": differences,
        "bound": bounds,
        "top1_agreement": agreement,
        "min_top1_agreement": MIN_TOP1_AGREEMENT if agreement is not None else None,
        "metric": {
            "name": task.monitor,
            "pytorch": _finite(metric_torch),
            "onnxruntime": _finite(metric_onnx),
            "difference": _finite(metric_onnx - metric_torch),
        },
        "engines": {
            "pytorch": f"torch {torch.__version__} eager, CPU, fp32",
            "onnxruntime": f"onnxruntime {onnxruntime.__version__} CPUExecutionProvider",
        },
        "checked_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


# --------------------------------------------------------------------------- int8


def quantize_int8(
    fp32_path: Path,
    int8_path: Path,
    calibration_nhwc: NDArray[np.uint8],
    *,
    layout: str,
    batch_size: int = 16,
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
            self._parts = _batches(len(calibration_nhwc), batch_size)

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
                quant_pre_process(str(fp32_path), str(prepared))
                quantize_static(
                    str(prepared),
                    str(int8_path),
                    _Reader(),
                    quant_format=QuantFormat.QDQ,
                    per_channel=True,
                    activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8,
                    calibrate_method=CalibrationMethod.MinMax,
                )
        except Exception as exc:
            raise ExportError(
                f"ONNX Runtime cannot quantise this graph ({type(exc).__name__}:"
                f" {_first_line(exc)}) — export without --quantize (fp32 is kept)"
            ) from exc
        if noise.getvalue().strip():
            logger.debug(f"quantiser output: {noise.getvalue().strip()}")


def _quantize_and_judge(
    tmp: Path,
    dataset: PreparedDataset,
    task: Task,
    *,
    layout: str,
    tolerance: float,
    eval_split: str,
    eval_indices: NDArray[np.int64],
    fp32_outputs: NDArray[np.float32],
) -> dict[str, Any]:
    """Quantise, compare the metric with fp32, keep or drop the int8 file; return the record."""
    from visionops.benchmarking import compare_latency

    train = dataset.indices("train")
    rng = np.random.default_rng(_REFERENCE_SEED)
    calibration = np.sort(rng.permutation(train)[:CALIBRATION_MAX_IMAGES])
    if len(calibration) == 0:
        return {
            "accepted": False,
            "reason": "int8 calibration needs training images and the prepared dataset's train"
            " split is empty — fp32 kept",
            "file": None,
            "metric": task.monitor,
        }
    fp32_path, int8_path = tmp / "model.onnx", tmp / "model.int8.onnx"
    started = time.perf_counter()
    try:
        quantize_int8(fp32_path, int8_path, np.asarray(dataset.images[calibration]), layout=layout)
    except ExportError as exc:
        # The fp32 bundle is still good: keep it and say why there is no int8 model.
        int8_path.unlink(missing_ok=True)
        return {"accepted": False, "reason": str(exc), "file": None, "metric": task.monitor}
    images = np.asarray(dataset.images[eval_indices])
    targets = np.asarray(dataset.targets[eval_indices])
    int8_outputs, _ = onnx_predict(ort_session(int8_path), images, layout)
    fp32_metric = monitored_metric(task, fp32_outputs, targets)
    int8_metric = monitored_metric(task, int8_outputs, targets)
    drop = fp32_metric - int8_metric
    latency = compare_latency(
        {"fp32": ort_session(fp32_path), "int8": ort_session(int8_path)}, images[:1], layout
    )
    speedup = latency["fp32"] / latency["int8"] if latency["int8"] > 0 else None
    record: dict[str, Any] = {
        "file": "model.int8.onnx",
        "format": "QDQ",
        "activations": "uint8",
        "weights": "int8, per channel",
        "calibration": {"split": "train", "images": len(calibration), "method": "minmax"},
        "metric": task.monitor,
        "split": eval_split,
        "images": len(eval_indices),
        "fp32": _finite(fp32_metric),
        "int8": _finite(int8_metric),
        "drop": _finite(drop),
        "tolerance": tolerance,
        "latency_ms_batch1": {name: round(value, 3) for name, value in latency.items()},
        "speedup": round(speedup, 2) if speedup else None,
        "size_bytes": {"fp32": fp32_path.stat().st_size, "int8": int8_path.stat().st_size},
        "seconds": round(time.perf_counter() - started, 2),
    }
    if not math.isfinite(drop):
        record.update(
            accepted=False,
            reason=f"the {task.monitor} of the int8 model is not a number on the {eval_split}"
            " split — fp32 kept",
        )
    elif drop > tolerance:
        record.update(
            accepted=False,
            reason=f"int8 {task.monitor} {int8_metric:.4f} vs fp32 {fp32_metric:.4f} on"
            f" {len(eval_indices)} {eval_split} images: a drop of {drop:.4f}, above"
            f" export.max_accuracy_drop={tolerance:g} — fp32 kept (raise the tolerance to"
            " accept it)",
        )
    else:
        record.update(accepted=True, reason=None)
    if not record["accepted"]:
        int8_path.unlink()
    return record


# --------------------------------------------------------------------------- reference


def build_reference(
    session: onnxruntime.InferenceSession,
    images_nhwc: NDArray[np.uint8],
    *,
    layout: str,
    indices: NDArray[np.int64] | None = None,
) -> dict[str, NDArray[Any]]:
    """The drift reference of a sample of held-out images, computed through the graph.

    Args:
        session: A session of the exported graph.
        images_nhwc: ``(n, H, W, C)`` uint8 images.
        layout: The graph's input layout.
        indices: Their indices in the prepared dataset (recorded).

    Returns:
        The arrays of ``reference.npz``: ``embeddings (n, D)`` float32, ``stats (n, S)``
        float32 (from :func:`visionops.imaging.image_statistics`, the function serve uses),
        ``stat_names (S,)`` str, ``predictions (n, K)`` float32 and ``indices (n,)`` int64.
    """
    predictions, embeddings = onnx_predict(session, images_nhwc, layout)
    rows = [image_statistics(np.asarray(image)) for image in images_nhwc]
    names = list(rows[0]) if rows else []
    stats = np.array([[row[name] for name in names] for row in rows], dtype=np.float32)
    return {
        "embeddings": embeddings.astype(np.float32),
        "stats": stats.reshape(len(rows), len(names)),
        "stat_names": np.array(names, dtype=np.str_),
        "predictions": predictions.astype(np.float32),
        "indices": (
            np.asarray(indices, dtype=np.int64)
            if indices is not None
            else np.arange(len(images_nhwc), dtype=np.int64)
        ),
    }


# --------------------------------------------------------------------------- the stage


@dataclass
class ExportResult:
    """What ``visionops export`` made.

    Attributes:
        bundle_dir: The bundle folder.
        manifest: ``visionops.json`` as written.
        parity: ``parity.json`` as written.
        quantized: The int8 record (``accepted``, ``reason``, metrics, speed-up) or None.
        warnings: Things the user should know (dataset changed since training, ...).
        seconds: Wall time of the export.
    """

    bundle_dir: Path
    manifest: dict[str, Any]
    parity: dict[str, Any]
    quantized: dict[str, Any] | None
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0


def find_run_dataset(run_dir: Path, run_manifest: Mapping[str, Any]) -> Path:
    """The folder of the prepared dataset a run was trained on.

    The path recorded in ``run.json`` is tried as it is (relative to the working folder),
    then relative to the project folder that holds ``runs/``.

    Raises:
        DatasetNotFoundError: It is gone; the message names `visionops data preprocess`.
    """
    recorded = str((run_manifest.get("dataset") or {}).get("path") or "")
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


def _versions() -> dict[str, str]:
    import onnx
    import onnxruntime
    import onnxscript
    import torchvision

    return {
        "visionops": __version__,
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "onnx": onnx.__version__,
        "onnxscript": onnxscript.__version__,
        "onnxruntime": onnxruntime.__version__,
    }


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
            if len(indices) > PARITY_MAX_IMAGES:
                # Evenly spread, so every class region of a sorted split is represented.
                picks = np.linspace(0, len(indices) - 1, PARITY_MAX_IMAGES).round()
                indices = indices[picks.astype(np.int64)]
            return split, indices
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
    return {name: _finite(float(value)) for name, value in metrics.items()}


def export_run(
    settings: Settings,
    run: Path | str | None,
    *,
    force: bool = False,
    quantize: Literal["none", "int8"] | None = None,
    checkpoint: str = "best",
    progress: ProgressReporter = NULL_PROGRESS,
) -> ExportResult:
    """Export a trained run to ``runs/<name>/bundle/``, verified against PyTorch.

    Args:
        settings: Resolved settings (``runs_root``, ``export.*``,
            ``data.max_image_pixels`` are used).
        run: A run folder or name; None for ``runs/latest``.
        force: Replace an existing bundle.
        quantize: ``int8`` or ``none`` (default: ``export.quantize``).
        checkpoint: ``best`` or ``last``.
        progress: Progress reporter.

    Returns:
        Where the bundle is, its manifest, the parity record and the int8 outcome.

    Raises:
        ConfigError: A checkpoint other than best or last.
        ArtifactError: No such run, a damaged run, a missing or corrupt checkpoint, or an
            existing bundle without ``force``.
        DatasetNotFoundError: The run's prepared dataset is gone.
        ExportError: A task that cannot be exported, an operator without ONNX translation,
            or a failed parity check. No bundle is left behind by a failed export.
    """
    from visionops.data.prepared import PreparedDataset
    from visionops.runs import load_trained_model, read_run_manifest, resolve_run

    started = time.perf_counter()
    export_settings: ExportSettings = settings.export
    quantize = quantize or export_settings.quantize
    layout = export_settings.layout
    if checkpoint not in ("best", "last"):
        raise ConfigError(f"unknown checkpoint '{checkpoint}' — use best or last")
    run_dir = resolve_run(run, settings.runs_root)
    bundle_dir = run_dir / "bundle"
    if bundle_dir.exists() and not force:
        raise ArtifactError(
            f"{bundle_dir} already exists — pass --force to replace it (serve it as it is with"
            f" `visionops serve {run_dir}`)"
        )
    run_manifest = read_run_manifest(run_dir).to_json()
    task_name = str(run_manifest.get("task"))
    if task_name not in TASKS:
        raise ExportError(
            f"run {run_dir.name} is a {task_name} run; `visionops export` exports"
            f" {', '.join(TASKS)} runs"
        )
    notes: list[str] = []
    if run_manifest.get("status") != "completed":
        notes.append(
            f"run {run_dir.name} has status {run_manifest.get('status')!r} — exported its"
            f" {checkpoint} checkpoint as it is"
        )
    model, run_record = load_trained_model(run_dir, checkpoint)
    run_manifest = run_record.to_json()
    task = task_for(run_record)
    spec = run_manifest["model"]
    size, channels = int(spec["image_size"]), int(spec["channels"])

    recorded = run_manifest.get("dataset") or {}
    dataset = PreparedDataset.open(find_run_dataset(run_dir, run_manifest))
    if (dataset.image_size, dataset.channels) != (size, channels):
        raise ArtifactError(
            f"the prepared dataset {dataset.path} holds {dataset.image_size}px"
            f" {dataset.channels}-channel images but run {run_dir.name} was trained at"
            f" {size}px with {channels} channels — recreate the original dataset with"
            " `visionops data preprocess`"
        )
    if dataset.fingerprint != recorded.get("fingerprint"):
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
            wrapper = build_wrapper(model, run_manifest, layout)
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
                run_manifest,
                np.asarray(dataset.images[parity_indices]),
                np.asarray(dataset.targets[parity_indices]),
                layout=layout,
                atol=export_settings.parity_atol,
                task=task,
                split=parity_split,
            )
            diffs = ", ".join(f"{k} {v:.2g}" for k, v in parity["max_abs_diff"].items())
            if not parity["passed"]:
                raise ExportError(
                    f"parity check failed on {parity['images']} {parity_split} images:"
                    f" {'; '.join(parity['failures'])} — the ONNX graph does not reproduce"
                    " PyTorch; no bundle was written (rerun with -vv, or raise"
                    " export.parity_atol only if you accept the difference)"
                )
            logger.info(
                f"parity passed on {parity['images']} {parity_split} images: max |diff| {diffs}"
                + (
                    f", top-1 agreement {parity['top1_agreement']:.2%}"
                    if parity["top1_agreement"] is not None
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
            bar.advance(1, step="quantize" if quantize == "int8" else "reference")

            quantized: dict[str, Any] | None = None
            if quantize == "int8":
                quantized = _quantize_and_judge(
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
            reference = build_reference(
                fp32_session,
                np.asarray(dataset.images[sample]),
                layout=layout,
                indices=sample,
            )
            reference["split"] = np.array(reference_split, dtype=np.str_)
            if quantized and quantized["accepted"]:
                int8_outputs, int8_embeddings = onnx_predict(
                    ort_session(tmp / "model.int8.onnx"), np.asarray(dataset.images[sample]), layout
                )
                reference["embeddings_int8"] = int8_embeddings
                reference["predictions_int8"] = int8_outputs
            with (tmp / "reference.npz").open("wb") as handle:
                np.savez_compressed(handle, allow_pickle=False, **reference)

            config_hash = str(run_manifest.get("config_hash") or "")
            manifest: dict[str, Any] = {
                "task": task_name,
                "model_version": f"{run_manifest.get('name', run_dir.name)}@{config_hash[:8]}",
                "input": {
                    "name": INPUT_NAME,
                    "dtype": "uint8",
                    "layout": layout,
                    "size": size,
                    "channels": channels,
                    "resize": str(run_manifest.get("resize") or dataset.resize),
                    "max_image_pixels": settings.data.max_image_pixels,
                },
                "outputs": {"main": task.main_output, "embedding": EMBEDDING_NAME},
                "class_names": run_manifest.get("class_names"),
                "target_names": run_manifest.get("target_names"),
                "target_units": run_manifest.get("target_units"),
                "thresholds": run_manifest.get("thresholds"),
                "metrics": metrics,
                "metrics_split": {"split": eval_split, "images": len(eval_indices)},
                "training_data_fingerprint": recorded.get("fingerprint"),
                "config_hash": config_hash,
                "versions": _versions(),
                "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
                "quantized": quantized,
                "run": {
                    "name": run_manifest.get("name", run_dir.name),
                    "checkpoint": checkpoint,
                    "epoch": run_manifest.get("best_epoch")
                    if checkpoint == "best"
                    else run_manifest.get("epochs_completed"),
                    "model": spec.get("name"),
                    "dataset": recorded.get("name"),
                },
                "opset": export_settings.opset,
                "reference_samples": len(sample),
                "reference_split": reference_split,
            }
            metadata = {"schema_version": SCHEMA_VERSION, "kind": BUNDLE_KIND, **manifest}
            _set_metadata(model_path, metadata)
            if quantized and quantized["accepted"]:
                _set_metadata(tmp / "model.int8.onnx", metadata)
            atomic_write_json(tmp / "parity.json", parity)
            written = write_bundle_manifest(tmp, manifest)
            bar.advance(1, step="done")
    except VisionOpsError:
        raise
    except (OSError, ValueError, RuntimeError) as exc:
        raise ExportError(
            f"export of run {run_dir.name} failed ({type(exc).__name__}: {_first_line(exc)})"
            " — no bundle was written; rerun with -vv for the traceback"
        ) from exc
    finally:
        bar.close()
    seconds = time.perf_counter() - started
    logger.info(f"bundle written to {bundle_dir} in {seconds:.1f}s")
    return ExportResult(
        bundle_dir=bundle_dir,
        manifest=written,
        parity=parity,
        quantized=quantized,
        warnings=notes,
        seconds=seconds,
    )
