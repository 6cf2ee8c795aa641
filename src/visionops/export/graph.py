"""The bundle's graph: :class:`ExportWrapper` and its export to ONNX.

The wrapper takes uint8 pixels and returns what the task computes
(:meth:`~visionops.tasks.Task.graph_outputs`).

The uint8 → float conversion, the ``/255``, the normalisation with the run's mean and std,
and the task's post-processing (softmax, sigmoid, de-standardised regression targets, an
anomaly memory bank's distances) all happen *inside* the graph, so a server only decodes and
resizes images. The graph's named outputs (:func:`graph_output_names`) are the task output
(``probabilities``, ``values``, ``score``), the task's other outputs (an anomaly
``heatmap``) and ``embedding``, the pooled feature vector drift detection compares.

The graph is produced by PyTorch's ``torch.export``-based ONNX exporter (``dynamo=True``, the
default since PyTorch 2.9): it yields a clean graph (batch norm folded into the convolutions,
no TorchScript ``Identity``/``Constant`` clutter), a symbolic batch dimension, and — because
the program is captured first with :func:`torch.export.export` — the module path of any
operator that has no ONNX translation, which the error message names.
"""

from __future__ import annotations

import contextlib
import io
import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import torch
from loguru import logger
from torch import nn

from visionops import __version__
from visionops.errors import ExportError
from visionops.inference.runtime import INPUT_NAME
from visionops.tasks import Task, task_for

if TYPE_CHECKING:
    import onnx

    from visionops.artifacts import RunRecord

__all__ = [
    "EMBEDDING_NAME",
    "ExportWrapper",
    "build_wrapper",
    "export_onnx",
    "first_line",
    "graph_output_names",
]

EMBEDDING_NAME: Final = "embedding"
"""Name of the graph's second output (the task names the first: ``Task.main_output``)."""
_DIM_NAME: Final = "batch"


def graph_output_names(task: Task, model: nn.Module | None = None) -> tuple[str, ...]:
    """The bundle graph's output names, in order: main, the task's extras, embedding.

    Args:
        task: The run's task.
        model: The model being exported: a classifier with its class activation map
            (:meth:`~visionops.tasks.Task.explained_model`) adds ``cam`` to the extras.
    """
    return (task.main_output, *task.bundle_outputs(model), EMBEDDING_NAME)


class ExportWrapper(nn.Module):
    """What the bundle computes: uint8 pixels in; the task's outputs and embedding out.

    Args:
        model: The run's model (normalised float in), in eval mode.
        task: The run's task; its ``graph_outputs`` (softmax, sigmoid, de-standardisation,
            bank distances...) go into the graph, the one definition eval also uses.
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

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The graph's outputs (:func:`graph_output_names`) for uint8 pixels."""
        images = pixels.to(torch.float32)
        if self.layout == "NHWC":
            images = images.permute(0, 3, 1, 2)
        images = (images / 255.0 - self.mean) / self.std
        return self.task.graph_outputs(self.model, images)


def build_wrapper(model: nn.Module, run: RunRecord, layout: str = "NCHW") -> ExportWrapper:
    """Wrap a trained model with the normalisation and post-processing of its run.

    Args:
        model: The run's model (see :meth:`visionops.tasks.Task.load_model`).
        run: The run's ``run.json``.
        layout: Input layout of the graph.

    Returns:
        The wrapper, in eval mode.

    Raises:
        ConfigError: The run's task is not a registered task.
    """
    wrapper = ExportWrapper(
        model,
        task=task_for(run),
        mean=run.normalization.mean,
        std=run.normalization.std,
        layout=layout,
    )
    return wrapper.eval()


def first_line(exc: BaseException, limit: int = 160) -> str:
    """The first non-empty line of an error message, without colour codes, cut to ``limit``."""
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
                f" {first_line(exc)}) — the model has code torch.export cannot trace;"
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
                    f" {first_line(exc)}) — try another export.opset, or another model.name"
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


def toolchain_versions() -> dict[str, str]:
    """Versions of visionops and the export toolchain, recorded in every bundle."""
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
