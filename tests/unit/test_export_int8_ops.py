"""Which operators int8 quantises: the task's choice, else a transformer's weighted ones."""

from __future__ import annotations

from pathlib import Path

import onnx
from onnx import TensorProto, helper

from visionops.export.quantize import ATTENTION_INT8_OPS, int8_op_types
from visionops.tasks import AnomalyTask, ClassificationTask


def _graph(path: Path, ops: list[str]) -> Path:
    """A chain of one-input operators on a (1, 4) float tensor."""
    nodes, previous = [], "x"
    for index, op in enumerate(ops):
        nodes.append(helper.make_node(op, [previous], [f"y{index}"]))
        previous = f"y{index}"
    graph = helper.make_graph(
        nodes,
        "chain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info(previous, TensorProto.FLOAT, [1, 4])],
    )
    onnx.save(helper.make_model(graph), path)
    return path


def test_a_graph_with_attention_quantises_its_weighted_operators(tmp_path: Path) -> None:
    task = ClassificationTask(["a", "b"])
    attention = _graph(tmp_path / "vit.onnx", ["Relu", "Softmax"])
    assert int8_op_types(task, attention) == ATTENTION_INT8_OPS == ("Conv", "MatMul", "Gemm")
    convolutional = _graph(tmp_path / "cnn.onnx", ["Relu", "Sigmoid"])
    assert int8_op_types(task, convolutional) is None  # every operator, as before


def test_the_tasks_own_choice_wins(tmp_path: Path) -> None:
    anomaly = AnomalyTask()
    attention = _graph(tmp_path / "vit.onnx", ["Softmax"])
    assert int8_op_types(anomaly, attention) == tuple(anomaly.int8_op_types or ())
