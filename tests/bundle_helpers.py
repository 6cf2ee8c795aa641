"""A real, tiny bundle built without torch: an ONNX graph made with ``onnx.helper``.

The graph takes uint8 pixels ``(batch, 3, 4, 4)``; ``embedding`` is the mean of each channel
and ``probabilities`` the softmax of the embedding over 64. It is sealed by the real bundle
writer, so every check :func:`visionops.inference.bundle.load_bundle` makes applies to it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper

from visionops.artifacts import BundleInput, BundleMeta, ParityRecord
from visionops.inference.bundle import write_bundle_manifest
from visionops.inference.runtime import PARITY_SAMPLES_FILE, ort_session, parity_samples

SIZE = 4
CLASS_NAMES = ["red", "green", "blue"]


def tiny_graph(path: Path, *, scale: float = 64.0) -> None:
    """Write the tiny classification graph (``scale`` changes its answers)."""
    nodes = [
        helper.make_node("Cast", ["pixels"], ["floats"], to=TensorProto.FLOAT),
        helper.make_node("ReduceMean", ["floats", "axes"], ["embedding"], keepdims=0),
        helper.make_node("Div", ["embedding", "scale"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("pixels", TensorProto.UINT8, ["batch", 3, SIZE, SIZE])],
        [
            helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 3]),
            helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", 3]),
        ],
        initializer=[
            helper.make_tensor("axes", TensorProto.INT64, [2], [2, 3]),
            helper.make_tensor("scale", TensorProto.FLOAT, [], [scale]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    onnx.save_model(model, str(path))


def images(count: int = 6, seed: int = 0) -> np.ndarray:
    """``(count, SIZE, SIZE, 3)`` uint8 images."""
    return np.random.default_rng(seed).integers(0, 256, (count, SIZE, SIZE, 3), dtype=np.uint8)


def tiny_meta(**fields: Any) -> BundleMeta:
    """The manifest of the tiny bundle (``fields`` replace its values)."""
    values: dict[str, Any] = {
        "task": "classification",
        "model_version": "tiny-run@abcdef12",
        "input": BundleInput(size=SIZE, channels=3, max_image_pixels=64_000_000),
        "outputs": {"main": "probabilities", "embedding": "embedding"},
        "class_names": CLASS_NAMES,
        **fields,
    }
    return BundleMeta(**values)


def make_bundle(
    folder: Path,
    *,
    passed: bool | None = True,
    int8: bool = False,
    samples: bool = True,
    sample_scale: float = 64.0,
    **fields: Any,
) -> Path:
    """Write and seal a tiny bundle in ``folder``; return it.

    ``sample_scale`` other than 64 records parity samples that ``model.onnx`` does not
    reproduce: what a provider with a wrong kernel looks like.
    """
    folder.mkdir(parents=True)
    tiny_graph(folder / "model.onnx")
    (folder / "reference.npz").write_bytes(b"reference bytes")
    if passed is not None:
        record = ParityRecord(passed=passed, bound={"probabilities": 1e-4, "embedding": 1e-4 * 255})
        (folder / "parity.json").write_text(record.model_dump_json())
    if samples:
        pixels = images()
        tiny_graph(folder / "samples.onnx", scale=sample_scale)
        arrays = parity_samples(
            ort_session(folder / "samples.onnx"), pixels, "NCHW", indices=np.arange(len(pixels))
        )
        (folder / "samples.onnx").unlink()
        with (folder / PARITY_SAMPLES_FILE).open("wb") as handle:
            np.savez_compressed(handle, allow_pickle=False, **arrays)
    if int8:
        tiny_graph(folder / "model.int8.onnx", scale=63.0)
        fields["quantized"] = {"accepted": True, "file": "model.int8.onnx"}
    write_bundle_manifest(folder, tiny_meta(**fields))
    return folder
