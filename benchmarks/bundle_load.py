"""Checking ``visionops.json`` against the copy sealed in ``model.onnx``: cost per load.

``load_bundle`` compares the manifest with the ``visionops`` entry of the graph's
``metadata_props``. visionops reads that entry with ``read_onnx_metadata`` (top-level
protobuf fields only, seeking past the graph); the baseline is ``onnx.load`` (parse the whole
model, weights included), plus importing ``onnx`` in a process that has not yet (every
server worker). Both read the same ResNet-18 graph (random weights, 64 px input, exported by
visionops' own ``export_onnx``), interleaved (``visionops.export.timing.time_interleaved``).

Run: python benchmarks/bundle_load.py
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path


def import_seconds(module: str, repeats: int = 3) -> float:
    """Median wall time of ``import module`` in a fresh interpreter, less a bare start."""
    code = "import time, sys; t = time.perf_counter(); {} ; print(time.perf_counter() - t)"
    values = []
    for _ in range(repeats):
        out = subprocess.run(
            [sys.executable, "-c", code.format(f"import {module}")],
            capture_output=True,
            text=True,
            check=True,
        )
        values.append(float(out.stdout.strip()))
    return sorted(values)[len(values) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="time per method")
    args = parser.parse_args()

    import onnx
    import torch

    from visionops.export.graph import ExportWrapper, export_onnx
    from visionops.export.timing import time_interleaved
    from visionops.inference.bundle import read_onnx_metadata
    from visionops.models import IMAGENET_MEAN, IMAGENET_STD, build_model
    from visionops.tasks import ClassificationTask

    torch.manual_seed(0)
    model = build_model("resnet18", num_outputs=10).eval()
    task = ClassificationTask([f"class{i}" for i in range(10)])
    wrapper = ExportWrapper(model, task=task, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    with tempfile.TemporaryDirectory(prefix="visionops-bench-load-") as scratch:
        path = Path(scratch) / "model.onnx"
        export_onnx(wrapper.eval(), path, image_size=64, channels=3)
        proto = onnx.load(str(path))
        entry = proto.metadata_props.add()
        entry.key, entry.value = "visionops", json.dumps({"task": "classification"})
        onnx.save_model(proto, str(path))
        size_mb = path.stat().st_size / 2**20

        def full_parse() -> dict[str, str]:
            return {p.key: p.value for p in onnx.load(str(path)).metadata_props}

        assert read_onnx_metadata(path) == full_parse()
        timings = time_interleaved(
            {"read_onnx_metadata": lambda: read_onnx_metadata(path), "onnx.load": full_parse},
            min_seconds=args.seconds,
        )
    ours, baseline = timings["read_onnx_metadata"].p50, timings["onnx.load"].p50
    onnx_import_ms = 1000 * import_seconds("onnx")
    print(f"graph: ResNet-18, {size_mb:.1f} MB")
    print(f"read_onnx_metadata   p50 {ours:8.3f} ms")
    print(f"onnx.load            p50 {baseline:8.3f} ms  (+ import onnx {onnx_import_ms:.0f} ms)")
    print(f"ratio onnx.load / ours: {baseline / ours:.0f}x (with the import: ", end="")
    print(f"{(baseline + onnx_import_ms) / ours:.0f}x)")


if __name__ == "__main__":
    main()
