"""What one serving replica of a bundle needs: measured, not guessed.

A child process (:mod:`visionops.serve.probe`) does what a replica does at start-up and
under full load — imports the serving app, loads the bundle's model in ONNX Runtime, warms
it up, then runs full batches for a moment, as many at once as the server will on the
replica's cores — and reports its peak resident memory and the CPU it used. The memory
request comes from these figures (with head-room), so a bigger model gets a bigger pod; the
CPU is the cores the replica is given, since the server keeps all of them busy at full load
(one batch per core, or one batch on ``serve.threads`` threads).
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
    # A process of its own: the server's imports and the model are what is measured.
    result = subprocess.run(
        [sys.executable, "-m", "visionops.serve.probe", str(bundle_dir), str(per_batch),
         str(max_batch), str(seconds), precision, str(at_once)],
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
