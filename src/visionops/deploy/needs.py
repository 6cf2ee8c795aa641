"""What one serving replica of a bundle needs: measured, not guessed.

A child process does what a replica does at start-up and under load — imports the serving
app, loads the bundle's model in ONNX Runtime, warms it up, then runs full batches for a
moment — and reports its peak resident memory and the CPU it used. The manifests'
requests come from these figures (with head-room), so a bigger model gets a bigger pod.
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
import json, resource, sys, time
from pathlib import Path
import numpy as np
import visionops.serve.app  # the server's own imports count in its memory
from visionops.inference.bundle import load_bundle
from visionops.inference.session import ModelSession

bundle = load_bundle(Path(sys.argv[1]), verify=False, allow_unverified=True)
threads, batch, seconds = int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
session = ModelSession(bundle, threads=threads, precision=sys.argv[5])
batch = session.fixed_batch or batch
session.warm_up((batch,))
spec = bundle.meta.input
pixels = np.random.default_rng(0).integers(
    0, 256, (batch, spec.size, spec.size, spec.channels), dtype=np.uint8
)
images, cpu0, wall0 = 0, time.process_time(), time.perf_counter()
while time.perf_counter() - wall0 < seconds or images == 0:
    session.run(pixels)
    images += batch
wall = time.perf_counter() - wall0
print(json.dumps({
    "peak_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
    "cpu_cores": (time.process_time() - cpu0) / wall,
    "ms_per_image": 1000 * wall / images,
}))
"""


@dataclass(frozen=True)
class ServingNeeds:
    """One replica's measured needs and the Kubernetes quantities made from them.

    Attributes:
        peak_rss_mib: Peak resident memory of the probe (server imports, model, a batch).
        cpu_cores: Cores busy while running back-to-back batches.
        ms_per_image: Wall time per image at the measured batch size.
        cpu_request: The CPU request (``"500m"``, ``"2"``): the cores used, rounded up to
            a quarter core, at least half a core.
        memory_request: The memory request (``"384Mi"``): peak RSS with head-room.
        memory_limit: The memory limit: twice the request.
    """

    peak_rss_mib: float
    cpu_cores: float
    ms_per_image: float
    cpu_request: str
    memory_request: str
    memory_limit: str


def _cpu_quantity(cores: float) -> str:
    quarters = max(2, math.ceil(cores * 4 - 1e-6))
    millis = quarters * 250
    return str(millis // 1000) if millis % 1000 == 0 else f"{millis}m"


def _mib(value: float) -> str:
    return f"{max(64, math.ceil(value / 64) * 64)}Mi"


def needs_from_measurement(
    peak_rss_mib: float, cpu_cores: float, ms_per_image: float
) -> ServingNeeds:
    """Turn measured figures into requests and limits.

    Examples:
        >>> needs_from_measurement(200.0, 1.1, 5.0).cpu_request
        '1250m'
    """
    request = max(64, math.ceil(peak_rss_mib * MEMORY_HEADROOM / 64) * 64)
    return ServingNeeds(
        peak_rss_mib=round(peak_rss_mib, 1),
        cpu_cores=round(cpu_cores, 2),
        ms_per_image=round(ms_per_image, 3),
        cpu_request=_cpu_quantity(cpu_cores),
        memory_request=_mib(request),
        memory_limit=_mib(2 * request),
    )


def measure_needs(
    bundle_dir: Path,
    *,
    threads: int,
    max_batch: int,
    precision: str = "auto",
    seconds: float = 1.0,
) -> ServingNeeds:
    """Measure one replica's memory and CPU in a child process.

    Args:
        bundle_dir: The bundle folder.
        threads: ONNX Runtime threads (what ``serve.threads`` gives a worker).
        max_batch: The batch size measured (``serve.max_batch``).
        precision: ``serve.precision``.
        seconds: How long to run full batches.

    Raises:
        ArtifactError: The probe could not load or run the model (its last line says why).
    """
    result = subprocess.run(
        [sys.executable, "-c", _PROBE, str(bundle_dir), str(threads), str(max_batch),
         str(seconds), precision],
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
        figures["peak_rss_kib"] / 1024, figures["cpu_cores"], figures["ms_per_image"]
    )
