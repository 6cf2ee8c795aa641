"""What one worker of this server holds and burns at full load, measured in its own process.

``visionops deploy`` runs ``python -m visionops.serve.probe`` to size a replica: the process
imports the serving app (its imports count in the memory), loads and warms up the bundle's
model in ONNX Runtime, then runs full batches for a moment, as many at once as the server
runs on the replica's cores, and prints one JSON line: peak resident memory (KiB), cores
busy, milliseconds per image.

Usage::

    python -m visionops.serve.probe BUNDLE THREADS BATCH SECONDS PRECISION AT_ONCE
"""

from __future__ import annotations

import json
import resource
import sys
import threading
import time
from pathlib import Path

import numpy as np

import visionops.serve.app  # noqa: F401  # the server's own imports count in its memory
from visionops.inference.bundle import load_bundle
from visionops.inference.session import ModelSession


def measure(
    bundle_dir: Path, *, threads: int, batch: int, seconds: float, precision: str, at_once: int
) -> dict[str, float]:
    """Run ``at_once`` streams of full batches for ``seconds`` each; return the figures.

    Args:
        bundle_dir: The bundle folder.
        threads: ONNX Runtime threads per batch.
        batch: Images per batch (a fixed-batch graph's own size wins).
        seconds: How long each stream runs (at least one batch).
        precision: ``serve.precision``.
        at_once: Batches computed at the same time.

    Returns:
        ``peak_rss_kib``, ``cpu_cores`` and ``ms_per_image``.
    """
    bundle = load_bundle(bundle_dir, verify=False, allow_unverified=True)
    session = ModelSession(bundle, threads=threads, precision=precision)
    batch = session.fixed_batch or batch
    session.warm_up((batch,))
    spec = bundle.meta.input
    pixels = np.random.default_rng(0).integers(
        0, 256, (batch, spec.size, spec.size, spec.channels), dtype=np.uint8
    )
    done = [0] * at_once

    def stream(index: int) -> None:
        started = time.perf_counter()
        while time.perf_counter() - started < seconds or done[index] == 0:
            session.run(pixels)
            done[index] += batch

    cpu0, wall0 = time.process_time(), time.perf_counter()
    streams = [threading.Thread(target=stream, args=(i,)) for i in range(at_once)]
    for thread in streams:
        thread.start()
    for thread in streams:
        thread.join()
    wall = time.perf_counter() - wall0
    return {
        "peak_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "cpu_cores": (time.process_time() - cpu0) / wall,
        "ms_per_image": 1000 * wall / sum(done),
    }


if __name__ == "__main__":
    bundle_arg, threads_arg, batch_arg, seconds_arg, precision_arg, at_once_arg = sys.argv[1:7]
    figures = measure(
        Path(bundle_arg),
        threads=int(threads_arg),
        batch=int(batch_arg),
        seconds=float(seconds_arg),
        precision=precision_arg,
        at_once=int(at_once_arg),
    )
    print(json.dumps(figures))
