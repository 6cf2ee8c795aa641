"""What one serving replica of a bundle needs: measured, not guessed.

A child process does what a replica does at start-up and under full load — imports the
serving app, loads the bundle's model in ONNX Runtime, warms it up, then runs full batches
for a moment, as many at once as the server will on the replica's cores — and reports its
peak resident memory and the CPU it used. The memory request comes from these figures (with
head-room), so a bigger model gets a bigger pod; the CPU is the cores the replica is given,
since the server keeps all of them busy at full load (one batch per core, or one batch on
``serve.threads`` threads).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from visionops.errors import ArtifactError

__all__ = ["ServingNeeds", "measure_needs", "needs_from_measurement"]

MEMORY_HEADROOM = 1.5
"""Request = measured peak RSS x this: decoding buffers and request bodies come on top."""

_PROBE = """
import json, resource, sys, threading, time
from pathlib import Path
import numpy as np
import visionops.serve.app  # the server's own imports count in its memory
from visionops.inference.bundle import load_bundle
from visionops.inference.session import ModelSession

bundle = load_bundle(Path(sys.argv[1]), verify=False, allow_unverified=True)
threads, batch, seconds = int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
at_once = int(sys.argv[6])
session = ModelSession(bundle, threads=threads, precision=sys.argv[5])
batch = session.fixed_batch or batch
session.warm_up((batch,))
spec = bundle.meta.input
pixels = np.random.default_rng(0).integers(
    0, 256, (batch, spec.size, spec.size, spec.channels), dtype=np.uint8
)
done = [0] * at_once

def stream(index):
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
print(json.dumps({
    "peak_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
    "cpu_cores": (time.process_time() - cpu0) / wall,
    "ms_per_image": 1000 * wall / sum(done),
}))
"""


@dataclass(frozen=True)
class ServingNeeds:
    """One replica's measured needs and the Kubernetes quantities made from them.

    Attributes:
        cores: Cores one replica is given (its CPU request and limit).
        peak_rss_mib: Peak resident memory of one replica at full load (server imports,
            model, every batch it computes at once; times ``serve.workers``).
        cpu_cores: Cores busy at full load (measured; at most about ``cores``).
        ms_per_image: Wall time per image at full load.
        cpu_request: The CPU request and limit (``"2"``): ``cores``.
        memory_request: The memory request (``"384Mi"``): peak RSS with head-room.
        memory_limit: The memory limit: twice the request.
    """

    cores: int
    peak_rss_mib: float
    cpu_cores: float
    ms_per_image: float
    cpu_request: str
    memory_request: str
    memory_limit: str


def _mib(value: float) -> str:
    return f"{max(64, math.ceil(value / 64) * 64)}Mi"


def needs_from_measurement(
    cores: int, peak_rss_mib: float, cpu_cores: float, ms_per_image: float
) -> ServingNeeds:
    """Turn the replica's cores and its measured figures into requests and limits.

    Examples:
        >>> needs_from_measurement(2, 200.0, 1.9, 5.0).memory_request
        '320Mi'
    """
    request = max(64, math.ceil(peak_rss_mib * MEMORY_HEADROOM / 64) * 64)
    return ServingNeeds(
        cores=cores,
        peak_rss_mib=round(peak_rss_mib, 1),
        cpu_cores=round(cpu_cores, 2),
        ms_per_image=round(ms_per_image, 3),
        cpu_request=str(cores),
        memory_request=_mib(request),
        memory_limit=_mib(2 * request),
    )


def measure_needs(
    bundle_dir: Path,
    *,
    cores: int,
    threads: int,
    workers: int,
    max_batch: int,
    precision: str = "auto",
    seconds: float = 1.0,
) -> ServingNeeds:
    """Measure one replica's memory and CPU at full load in a child process.

    The replica's server divides ``cores`` among ``workers`` processes; each runs one batch
    per core on one thread (``threads`` 0) or one batch at a time on ``threads`` threads
    (:func:`visionops.serve.state.compute_plan`). The probe runs one worker's share and
    counts its memory ``workers`` times.

    Args:
        bundle_dir: The bundle folder.
        cores: Cores one replica is given.
        threads: ``serve.threads`` (0: one single-thread batch per core).
        workers: ``serve.workers``.
        max_batch: The batch size measured (``serve.max_batch``).
        precision: ``serve.precision``.
        seconds: How long to run full batches.

    Raises:
        ArtifactError: The probe could not load or run the model (its last line says why).
    """
    share = max(1, cores // workers)
    at_once, per_batch = (1, threads) if threads else (share, 1)
    result = subprocess.run(
        [sys.executable, "-c", _PROBE, str(bundle_dir), str(per_batch), str(max_batch),
         str(seconds), precision, str(at_once)],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    if result.returncode != 0:
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        reason = lines[-1] if lines else f"exit code {result.returncode}"
        raise ArtifactError(
            f"cannot measure what {bundle_dir} needs to serve ({reason}) — check it with"
            f" `visionops serve {bundle_dir}`"
        )
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    return needs_from_measurement(
        cores,
        workers * figures["peak_rss_kib"] / 1024,
        workers * figures["cpu_cores"],
        figures["ms_per_image"] / workers,
    )
