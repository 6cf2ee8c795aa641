"""ONNX Runtime sessions and prediction helpers shared by every bundle reader. No torch.

``export`` (parity, metrics, int8 judgement, drift reference), ``benchmark``, ``predict`` and
``serve`` all open bundle graphs through :func:`ort_session` and feed them uint8 pixels through
the helpers here, so the session options, the input layout, the batching and the choice of
execution providers (:func:`execution_providers`) are decided in one place.

A bundle also carries ``parity.npz``: a few of the parity images with the outputs ONNX Runtime
computed for them on the CPU at export time. :func:`check_provider_parity` reruns them on
another execution provider (CUDA) and compares with the bound the export's parity check used;
:class:`~visionops.inference.session.ModelSession` does so when it loads on a GPU, so a server
on ``--device cuda`` has checked that the GPU gives the answers export verified.

Examples:
    >>> session = ort_session(bundle.model_path, threads=2)  # doctest: +SKIP
    >>> probabilities, embeddings = onnx_predict(session, images_nhwc, "NCHW")  # doctest: +SKIP
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np
from numpy.typing import NDArray

from visionops.errors import ArtifactError, DeviceError

if TYPE_CHECKING:
    import onnxruntime

    from visionops.inference.bundle import Bundle

__all__ = [
    "CPU_PROVIDER",
    "CUDA_PROVIDER",
    "INPUT_NAME",
    "PARITY_SAMPLES_FILE",
    "PARITY_SAMPLE_IMAGES",
    "ProviderParity",
    "available_cores",
    "batch_slices",
    "check_provider_parity",
    "execution_providers",
    "onnx_predict",
    "ort_session",
    "parity_samples",
    "to_layout",
    "verify_provider_parity",
]

INPUT_NAME: Final = "pixels"
"""Name of the uint8 pixel input of every bundle graph."""
CPU_PROVIDER: Final = "CPUExecutionProvider"
CUDA_PROVIDER: Final = "CUDAExecutionProvider"
PARITY_SAMPLES_FILE: Final = "parity.npz"
"""Bundle file with parity images and their CPU outputs (see :func:`parity_samples`)."""
PARITY_SAMPLE_IMAGES: Final = 16
"""Parity images kept in the bundle to check another execution provider at load."""
DEFAULT_BATCH: Final = 32


def to_layout(images_nhwc: NDArray[np.uint8], layout: str) -> NDArray[np.uint8]:
    """Bring ``(N, H, W, C)`` uint8 images into the graph's input layout (contiguous)."""
    if layout == "NCHW":
        return np.ascontiguousarray(np.transpose(images_nhwc, (0, 3, 1, 2)))
    return np.ascontiguousarray(images_nhwc)


def batch_slices(count: int, size: int = DEFAULT_BATCH) -> Iterator[slice]:
    """Consecutive slices of at most ``size`` items covering ``range(count)``."""
    for start in range(0, count, size):
        yield slice(start, min(start + size, count))


def _cgroup_cpu_limit(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """The CPU quota of this container in cores (cgroup v2 ``cpu.max``, or v1), or None.

    A Kubernetes CPU limit or ``docker run --cpus`` sets a quota without narrowing the CPU
    affinity, so a pod on a 64-core node still sees 64 CPUs unless the quota is read.
    """
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota_us = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period_us = int((root / "cpu" / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return quota_us / period_us if quota_us > 0 and period_us > 0 else None


def available_cores(cgroup_root: Path = Path("/sys/fs/cgroup")) -> int:
    """CPU cores this process may use: its CPU affinity, capped by a container's CPU quota.

    A fractional quota rounds up (1.5 cores: 2 threads that share the time).

    Args:
        cgroup_root: Where the cgroup file system is mounted (tests point elsewhere).
    """
    try:
        cores = max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        cores = max(1, os.cpu_count() or 1)
    limit = _cgroup_cpu_limit(cgroup_root)
    if limit is not None:
        cores = min(cores, max(1, math.ceil(limit - 1e-9)))
    return cores


def execution_providers(
    device: str, available: Sequence[str] | None = None
) -> tuple[list[str], str]:
    """The ONNX Runtime providers for ``--device``, and one sentence on why.

    The bundle's parity with PyTorch was checked on the CPU provider at export. On CUDA,
    :class:`~visionops.inference.session.ModelSession` reruns the bundle's parity samples at
    load and refuses a GPU that does not reproduce them, so ``--device cuda`` is allowed;
    ``auto`` keeps the CPU (saying so): never a silent switch to another provider.

    Args:
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
        available: Providers this ONNX Runtime has (None: ask it).

    Returns:
        The providers to use, best first, and the reason.

    Raises:
        DeviceError: A device that cannot serve this bundle with checked answers.
    """
    if available is None:
        import onnxruntime

        available = onnxruntime.get_available_providers()
    have = list(available)
    if device == "cpu":
        return [CPU_PROVIDER], "--device cpu"
    if device.startswith("cuda"):
        if CUDA_PROVIDER not in have:
            raise DeviceError(
                f"--device {device}: this ONNX Runtime has no CUDA execution provider (it has"
                f" {', '.join(have)}) — install onnxruntime-gpu, or serve with --device cpu"
            )
        if device not in {"cuda", "cuda:0"}:
            raise DeviceError(
                f"--device {device}: a server runs on the first visible GPU — select it with"
                f" CUDA_VISIBLE_DEVICES={device.removeprefix('cuda:')} and --device cuda, or"
                " serve with --device cpu"
            )
        return [CUDA_PROVIDER, CPU_PROVIDER], (
            f"--device {device}: CUDA, the bundle's parity samples re-checked on it at load"
        )
    if device == "mps":
        raise DeviceError(
            "--device mps: ONNX Runtime has no Apple GPU provider for visionops bundles —"
            " serve with --device cpu"
        )
    if CUDA_PROVIDER in have:
        return [CPU_PROVIDER], (
            "auto: CUDA is present, but the CPU serves unless asked (--device cuda re-checks"
            " the bundle's parity on the GPU at load)"
        )
    return [CPU_PROVIDER], "auto: this ONNX Runtime has no CUDA execution provider"


def ort_session(
    path: Path,
    threads: int | None = None,
    *,
    providers: Sequence[str] = (CPU_PROVIDER,),
    sequential: bool = False,
    spinning: bool = True,
) -> onnxruntime.InferenceSession:
    """An ONNX Runtime session with every graph optimisation on.

    The session runs on exactly the providers asked for: when ONNX Runtime cannot start the
    first one (no GPU, wrong CUDA) it would quietly run on the CPU, so that is an error here.

    Args:
        path: The ``.onnx`` file.
        threads: Intra-op threads (None or 0: ONNX Runtime's default, one per core).
        providers: Execution providers, best first (``--device`` decides them in serve).
        sequential: One operator at a time (``inter_op_num_threads=1``), what a server
            running several sessions side by side wants.
        spinning: Let idle intra-op threads spin; a server turns it off so decode threads
            and the event loop keep their cores (measured: 2 threads went from 14.8 to 21.8
            images/s on a busy 2-core box).

    Raises:
        ArtifactError: ONNX Runtime cannot load the graph (re-export names the fix).
        DeviceError: The first provider asked for did not start.
    """
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
    if sequential:
        options.inter_op_num_threads = 1
        options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        with warnings.catch_warnings():
            # A provider ORT lacks is only a warning to it; the check below makes it an error.
            warnings.simplefilter("ignore", UserWarning)
            session = onnxruntime.InferenceSession(
                str(path), sess_options=options, providers=list(providers)
            )
    except Exception as exc:  # ORT raises its own untyped errors for a damaged graph
        raise ArtifactError(
            f"ONNX Runtime cannot load {path} ({type(exc).__name__}) — re-export the bundle"
            " with `visionops export --force`"
        ) from None
    if providers and providers[0] not in session.get_providers():
        raise DeviceError(
            f"ONNX Runtime could not start {providers[0]} for {path.name} (it fell back to"
            f" {', '.join(session.get_providers())}) — check the GPU driver and CUDA libraries"
            " with `visionops doctor`, or use --device cpu"
        )
    return session


def onnx_predict(
    session: onnxruntime.InferenceSession,
    images_nhwc: NDArray[np.uint8],
    layout: str,
    batch_size: int = DEFAULT_BATCH,
    *,
    output_names: Sequence[str] | None = None,
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """Run a bundle graph over ``(N, H, W, C)`` uint8 images, ``batch_size`` at a time.

    Args:
        session: A session of a bundle graph.
        images_nhwc: The images, whatever the graph's layout.
        layout: The graph's input layout (``NCHW`` or ``NHWC``).
        batch_size: Images per ``run`` call.
        output_names: The task output and the embedding (default: the graph's first two
            outputs, which is how visionops exports them).

    Returns:
        ``(task outputs (N, K), embeddings (N, D))`` as float32.
    """
    names = list(output_names or [node.name for node in session.get_outputs()[:2]])
    mains: list[NDArray[np.float32]] = []
    embeddings: list[NDArray[np.float32]] = []
    for part in batch_slices(len(images_nhwc), batch_size):
        main, embedding = session.run(names, {INPUT_NAME: to_layout(images_nhwc[part], layout)})
        mains.append(np.asarray(main, dtype=np.float32))
        embeddings.append(np.asarray(embedding, dtype=np.float32))
    return np.concatenate(mains), np.concatenate(embeddings)


# ----------------------------------------------------------- parity on other providers


def parity_samples(
    session: onnxruntime.InferenceSession,
    images_nhwc: NDArray[np.uint8],
    layout: str,
    *,
    indices: NDArray[np.int64],
    output_names: Sequence[str] | None = None,
) -> dict[str, NDArray[Any]]:
    """The arrays of ``parity.npz``: images and the outputs a CPU session gives for them.

    Args:
        session: A CPU session of the bundle's fp32 graph.
        images_nhwc: ``(n, H, W, C)`` uint8 parity images (a few suffice).
        layout: The graph's input layout.
        indices: Their indices in the prepared dataset (recorded).
        output_names: The task output and the embedding (default: the graph's first two).

    Returns:
        ``pixels (n, H, W, C)`` uint8, ``main (n, K)`` and ``embedding (n, D)`` float32,
        ``indices (n,)`` int64.
    """
    main, embedding = onnx_predict(session, images_nhwc, layout, output_names=output_names)
    return {
        "pixels": np.ascontiguousarray(images_nhwc, dtype=np.uint8),
        "main": main,
        "embedding": embedding,
        "indices": np.asarray(indices, dtype=np.int64),
    }


@dataclass(frozen=True)
class ProviderParity:
    """A bundle's recorded CPU outputs compared with what a session computes.

    Attributes:
        providers: The providers the session runs on, best first.
        images: How many parity images were compared.
        max_abs_diff: Largest absolute difference, by output name.
        bound: The limit for each output (the bundle's parity bound).
        failures: One sentence per output over its bound; empty when it passed.
    """

    providers: tuple[str, ...]
    images: int
    max_abs_diff: dict[str, float]
    bound: dict[str, float]
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        """Whether every output stayed within its bound."""
        return not self.failures


def check_provider_parity(
    bundle: Bundle,
    providers: Sequence[str] = (CUDA_PROVIDER, CPU_PROVIDER),
    *,
    session: onnxruntime.InferenceSession | None = None,
) -> ProviderParity:
    """Rerun the bundle's parity images on ``providers``; compare with the CPU outputs.

    Export checked ONNX Runtime on the CPU against PyTorch; this checks that another
    execution provider reproduces those CPU outputs within the same bound (``parity.json``'s
    ``bound``: ``parity_atol`` × the output's scale), on the images kept in ``parity.npz``.

    Args:
        bundle: A verified bundle (``parity.npz`` is among its checksummed files).
        providers: Execution providers to check, best first (ignored with ``session``).
        session: A session of the bundle's fp32 ``model.onnx`` to check instead (the one a
            server is about to use).

    Returns:
        The comparison; ``passed`` says whether it is within bounds.

    Raises:
        ArtifactError: The bundle has no ``parity.npz`` (exported before it was recorded).
        DeviceError: A provider asked for cannot start.
    """
    samples_path = bundle.path / PARITY_SAMPLES_FILE
    if not samples_path.is_file():
        raise ArtifactError(
            f"bundle {bundle.path} has no {PARITY_SAMPLES_FILE} to check a GPU against — it was"
            " exported by an older visionops; re-export with `visionops export --force`, or"
            " use --device cpu"
        )
    with np.load(samples_path, allow_pickle=False) as samples:
        pixels, expected = samples["pixels"], (samples["main"], samples["embedding"])
    if session is None:
        session = ort_session(bundle.model_path, providers=providers)
    meta = bundle.meta
    names = [meta.main_output, meta.embedding_output or "embedding"]
    actual = onnx_predict(session, pixels, meta.input.layout, output_names=names)
    bounds = bundle.parity.bound if bundle.parity is not None else {}
    atol = bundle.parity.atol if bundle.parity is not None else 1e-4
    differences: dict[str, float] = {}
    limits: dict[str, float] = {}
    failures: list[str] = []
    for name, want, got in zip(names, expected, actual, strict=True):
        differences[name] = float(np.abs(got - want).max(initial=0.0))
        limits[name] = float(bounds.get(name, atol * max(1.0, float(np.abs(want).max()))))
        if not differences[name] <= limits[name]:
            failures.append(
                f"{name} differs by up to {differences[name]:.3g} (limit {limits[name]:.3g})"
            )
    return ProviderParity(
        providers=tuple(session.get_providers()),
        images=len(pixels),
        max_abs_diff=differences,
        bound=limits,
        failures=failures,
    )


def verify_provider_parity(
    bundle: Bundle,
    providers: Sequence[str] = (CUDA_PROVIDER, CPU_PROVIDER),
    *,
    session: onnxruntime.InferenceSession | None = None,
) -> ProviderParity:
    """:func:`check_provider_parity`, raising when the provider does not reproduce the CPU.

    Raises:
        DeviceError: An output is over its bound (the message says which and by how much),
            or a provider cannot start.
        ArtifactError: The bundle has no ``parity.npz``.
    """
    record = check_provider_parity(bundle, providers, session=session)
    if not record.passed:
        raise DeviceError(
            f"bundle {bundle.path} does not reproduce its verified CPU outputs on"
            f" {record.providers[0]}: {'; '.join(record.failures)} — serve it with --device cpu"
        )
    return record
