"""``visionops benchmark``: PyTorch eager vs ONNX Runtime fp32 vs ONNX Runtime int8 on the CPU.

For one exported run it measures, with the same number of threads for every engine and
after a warm-up: latency at batch 1 (p50 and p95), throughput at batch 8 and 32, the size
of the weights on disk, and the run's monitored metric on the test split. PyTorch runs the
exact computation of the bundle (:class:`~visionops.export.graph.ExportWrapper`: uint8 in,
normalisation and post-processing included) in eager mode under ``torch.inference_mode``.

Examples:
    >>> result = benchmark_run(load_settings(), "run-001")  # doctest: +SKIP
    >>> [engine.engine for engine in result.engines]  # doctest: +SKIP
    ['pytorch eager', 'onnxruntime fp32', 'onnxruntime int8']
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np
from loguru import logger
from numpy.typing import NDArray

from visionops.errors import ArtifactError
from visionops.export.timing import time_interleaved
from visionops.progress import NULL_PROGRESS, ProgressReporter

if TYPE_CHECKING:
    import onnxruntime

    from visionops.config import Settings

__all__ = [
    "BATCH_SIZES",
    "BenchmarkResult",
    "EngineResult",
    "benchmark_run",
    "cpu_threads",
]

BATCH_SIZES: Final = (8, 32)
"""Batch sizes whose throughput is measured (latency is measured at batch 1)."""


def cpu_threads() -> int:
    """CPU cores this process may run on (its affinity mask, else ``os.cpu_count``)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS and Windows have no affinity API
        return os.cpu_count() or 1


@dataclass(frozen=True)
class EngineResult:
    """One row of the benchmark table.

    Attributes:
        engine: ``pytorch eager``, ``onnxruntime fp32`` or ``onnxruntime int8``.
        p50_ms: Median latency at batch 1.
        p95_ms: 95th-percentile latency at batch 1.
        throughput: Images per second, by batch size.
        size_bytes: Size of the weights on disk (ONNX file; serialised ``state_dict``).
        metric: The monitored metric on the scored split.
    """

    engine: str
    p50_ms: float
    p95_ms: float
    throughput: dict[int, float]
    size_bytes: int
    metric: float | None


@dataclass
class BenchmarkResult:
    """The benchmark of one run.

    Attributes:
        run: Run name.
        task: Its task.
        metric: Name of the monitored metric.
        split: Split the metric was computed on.
        images: Images in that split.
        threads: CPU threads every engine used.
        engines: One row per engine.
        notes: What the reader should know (int8 missing, ...).
    """

    run: str
    task: str
    metric: str
    split: str
    images: int
    threads: int
    engines: list[EngineResult]
    notes: list[str] = field(default_factory=list)
    measured_at: str = ""

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (``--json``)."""
        payload = asdict(self)
        for engine in payload["engines"]:
            engine["throughput"] = {str(k): v for k, v in engine["throughput"].items()}
        return payload

    def speedup(self, engine: str, baseline: str) -> float | None:
        """Ratio of batch-1 median latencies ``baseline / engine`` (None if either is absent)."""
        rows = {row.engine: row for row in self.engines}
        if engine not in rows or baseline not in rows or rows[engine].p50_ms <= 0:
            return None
        return rows[baseline].p50_ms / rows[engine].p50_ms


def _batch_of(images: NDArray[np.uint8], size: int) -> NDArray[np.uint8]:
    """``size`` images from ``images``, repeating them when there are fewer."""
    repeats = -(-size // len(images))
    return np.ascontiguousarray(np.concatenate([images] * repeats)[:size])


@dataclass(frozen=True)
class _Engine:
    """One engine under test: how to prepare a batch, run it, and predict a split."""

    name: str
    prepare: Callable[[NDArray[np.uint8]], Any]
    run: Callable[[Any], object]
    predict: Callable[[NDArray[np.uint8]], NDArray[np.float32]]
    size_bytes: int


def benchmark_run(
    settings: Settings,
    run: Path | str | None,
    *,
    threads: int | None = None,
    min_seconds: float = 2.0,
    batch_sizes: Sequence[int] = BATCH_SIZES,
    progress: ProgressReporter = NULL_PROGRESS,
) -> BenchmarkResult:
    """Benchmark an exported run's engines on the CPU.

    Engines are timed in round-robin (see :func:`time_interleaved`) with the same threads,
    on real test images prepared in each engine's input form before timing.

    Args:
        settings: Resolved settings (``runs_root``).
        run: A run folder or name, or a bundle folder; None for ``runs/latest``.
        threads: CPU threads for every engine (default: every core this process may use).
        min_seconds: Time spent per engine on each measurement (more: steadier numbers).
        batch_sizes: Batch sizes whose throughput is measured.
        progress: Progress reporter.

    Returns:
        One row per engine: PyTorch eager, ORT fp32 and (if the bundle has one) ORT int8.

    Raises:
        ArtifactError: No run, no bundle (the message names ``visionops export``), a bundle
            edited after export, or a missing checkpoint.
        DatasetNotFoundError: The run's prepared dataset is gone.
    """
    import torch

    from visionops.artifacts import RunRecord
    from visionops.data.prepared import PreparedDataset
    from visionops.export.graph import build_wrapper
    from visionops.export.parity import monitored_metric
    from visionops.inference.bundle import find_bundle, load_bundle
    from visionops.inference.runtime import INPUT_NAME, onnx_predict, ort_session, to_layout
    from visionops.runs import find_run_dataset
    from visionops.tasks import task_for

    bundle = load_bundle(find_bundle(Path(run) if run is not None else None, settings.runs_root))
    run_dir = bundle.path.parent
    if not (run_dir / "run.json").is_file():
        raise ArtifactError(
            f"bundle {bundle.path} is not inside its run folder — benchmark needs the run's"
            " checkpoint; pass the run folder"
        )
    which = bundle.meta.run.checkpoint if bundle.meta.run is not None else "best"
    model, run_record = task_for(RunRecord.read(run_dir)).load_model(run_dir, which)
    layout = bundle.meta.input.layout
    task = task_for(run_record)
    dataset = PreparedDataset.open(find_run_dataset(run_dir, run_record))
    split = "test"
    indices = dataset.indices("test")
    notes: list[str] = []
    if not len(indices):
        split, indices = "val", dataset.indices("val")
        notes.append("the prepared dataset has no test split — the metric is on val")
    eval_images = np.asarray(dataset.images[indices])
    eval_targets = np.asarray(dataset.targets[indices])
    pool = eval_images if len(eval_images) else np.asarray(dataset.images[:32])
    threads = threads or cpu_threads()
    int8_path = bundle.int8_model_path
    if int8_path is None:
        notes.append("the bundle has no int8 model — export with --quantize int8 to compare it")

    previous_threads = torch.get_num_threads()
    bar = progress.start(
        f"benchmark {run_dir.name} ({threads} threads)", total=2 + len(batch_sizes)
    )
    try:
        torch.set_num_threads(threads)
        wrapper = build_wrapper(model, run_record, layout)
        weights = io.BytesIO()
        torch.save(model.state_dict(), weights)

        def torch_prepare(images: NDArray[np.uint8]) -> torch.Tensor:
            return torch.from_numpy(to_layout(images, layout))

        def torch_run(pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            with torch.inference_mode():
                outputs: tuple[torch.Tensor, torch.Tensor] = wrapper(pixels)
            return outputs

        def torch_predict(images: NDArray[np.uint8]) -> NDArray[np.float32]:
            parts = [
                torch_run(torch_prepare(images[start : start + 32]))[0].numpy()
                for start in range(0, len(images), 32)
            ]
            return np.concatenate(parts).astype(np.float32)

        def ort_prepare(images: NDArray[np.uint8]) -> dict[str, NDArray[np.uint8]]:
            return {INPUT_NAME: to_layout(images, layout)}

        def ort_predict(
            session: onnxruntime.InferenceSession, images: NDArray[np.uint8]
        ) -> NDArray[np.float32]:
            return onnx_predict(session, images, layout)[0]

        engines = [
            _Engine(
                "pytorch eager", torch_prepare, torch_run, torch_predict, len(weights.getvalue())
            )
        ]
        for name, path in (
            ("onnxruntime fp32", bundle.model_path),
            ("onnxruntime int8", int8_path),
        ):
            if path is None:
                continue
            session = ort_session(path, threads)
            engines.append(
                _Engine(
                    name,
                    ort_prepare,
                    partial(session.run, None),
                    partial(ort_predict, session),
                    path.stat().st_size,
                )
            )

        single = {e.name: partial(e.run, e.prepare(_batch_of(pool, 1))) for e in engines}
        latency = time_interleaved(single, min_seconds=min_seconds)
        bar.advance(1, step="batch 1")
        throughput: dict[str, dict[int, float]] = {e.name: {} for e in engines}
        for size in batch_sizes:
            batched = {e.name: partial(e.run, e.prepare(_batch_of(pool, size))) for e in engines}
            timings = time_interleaved(batched, min_calls=5, min_seconds=min_seconds)
            for name, timing in timings.items():
                throughput[name][size] = size / (timing.p50 / 1000.0)
            bar.advance(1, step=f"batch {size}")
        rows: list[EngineResult] = []
        for engine in engines:
            score = (
                monitored_metric(task, engine.predict(eval_images), eval_targets)
                if len(eval_images)
                else float("nan")
            )
            rows.append(
                EngineResult(
                    engine=engine.name,
                    p50_ms=latency[engine.name].p50,
                    p95_ms=latency[engine.name].p95,
                    throughput=throughput[engine.name],
                    size_bytes=engine.size_bytes,
                    metric=score if np.isfinite(score) else None,
                )
            )
            logger.info(
                f"{engine.name}: p50 {latency[engine.name].p50:.2f} ms at batch 1, "
                + ", ".join(
                    f"{value:.0f} img/s at batch {size}"
                    for size, value in throughput[engine.name].items()
                )
            )
        bar.advance(1, step="metrics")
    finally:
        torch.set_num_threads(previous_threads)
        bar.close()
    return BenchmarkResult(
        run=run_record.name,
        task=bundle.task,
        metric=task.monitor,
        split=split,
        images=len(indices),
        threads=threads,
        engines=rows,
        notes=notes,
        measured_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
