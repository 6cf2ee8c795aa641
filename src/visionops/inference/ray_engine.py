"""``visionops predict --engine ray``: the same batches on a Ray cluster, with Ray Data.

Ray Data reads the listed inputs (``read_binary_files``: local paths, or the bucket through
the same fsspec driver the local engine uses), ``map_batches`` hands each batch to a pool of
actors that each hold one :class:`~visionops.inference.batch.BatchPredictor` (one ONNX
Runtime session: ``threads`` CPU threads, or one GPU), and ``write_parquet`` puts the rows,
the local engine's columns, in shards under ``--out``. Scaling is the actor pool: by default
one actor per ``threads`` CPUs of the cluster (one per GPU with ``--device cuda``), so adding
nodes adds actors.

Without ``--ray-address`` a local Ray starts for the job and stops after it; with one, the
job joins that cluster (``ray start --head``, KubeRay, Vertex AI Ray), whose nodes need
visionops installed and the inputs reachable (a bucket, or a shared file system).
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from visionops.errors import ConfigError
from visionops.inference.batch import BatchPredictor
from visionops.inference.bundle import Bundle
from visionops.inference.rows import require_pyarrow
from visionops.inference.runtime import CPU_PROVIDER, available_cores
from visionops.inference.stream import KEPT_FAILURES, StreamSummary
from visionops.inference.writers import SHARD_ROWS, out_exists
from visionops.storage import filesystem, is_url, storage_error

__all__ = ["RayPredictor", "predict_with_ray", "require_ray"]


def require_ray() -> Any:
    """``ray`` with Ray Data, or the one-line error that says how to install it.

    Raises:
        ConfigError: Ray (or Ray Data) is not installed.
    """
    try:
        import ray
        import ray.data  # Ray without its data extra has no ray.data
    except ImportError:
        raise ConfigError(
            "--engine ray needs Ray Data — pip install 'visionops[ray]' (or use --engine local)"
        ) from None
    require_pyarrow("--engine ray")
    return ray


class RayPredictor:
    """One Ray actor's predictor: a batch of ``{path, bytes}`` in, parquet rows out.

    Args:
        bundle_dir: The bundle folder (each actor loads and verifies it).
        protocol: The inputs' URL scheme (Ray reads bucket paths without it), or None.
        options: :class:`BatchPredictor` keyword arguments.
    """

    def __init__(self, bundle_dir: str, protocol: str | None, options: dict[str, Any]) -> None:
        from visionops.inference.bundle import load_bundle

        self.predictor = BatchPredictor(load_bundle(Path(bundle_dir)), **options)
        self.prefix = f"{protocol}://" if protocol else ""

    def __call__(self, batch: dict[str, np.ndarray]) -> Any:
        """Decode, run and answer one batch; the rows as an Arrow table."""
        loaded = [
            self.predictor.decode(self.prefix + str(path), bytes(data))
            for path, data in zip(batch["path"], batch["bytes"], strict=True)
        ]
        outcome = self.predictor.predict(loaded)
        return self.predictor.rows.arrow_table(outcome.predictions)


def _protocol(inputs: Sequence[str]) -> str | None:
    schemes = {path.partition("://")[0] if is_url(path) else None for path in inputs}
    if len(schemes) > 1:
        raise ConfigError(
            "--engine ray reads one kind of location per job, but the inputs mix"
            f" {sorted(str(s or 'local') for s in schemes)} — run one job per store"
        )
    return schemes.pop()


def _arrow_filesystem(location: str) -> Any:
    """A pyarrow file system over the fsspec driver (same credentials and endpoint)."""
    from pyarrow.fs import FSSpecHandler, PyFileSystem

    fs, _ = filesystem(location)
    return PyFileSystem(FSSpecHandler(fs))


def _start(ray: Any, address: str | None, cpus: int) -> bool:
    """Join ``address`` or start a local Ray; True when this job started it."""
    if ray.is_initialized():
        return False
    quiet = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.WARNING}
    try:
        if address:
            ray.init(address=address, **quiet)
        else:
            ray.init(num_cpus=cpus, **quiet)
    except (ConnectionError, RuntimeError, ValueError) as error:
        where = address or "a local Ray"
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ConfigError(
            f"cannot start or join {where}: {reason[:200]} — check --ray-address"
            " (`ray status` on the head node)"
        ) from None
    return True


def _new_shards(out: str, before: set[str]) -> list[str]:
    fs, root = filesystem(out)
    try:
        return sorted(p for p in fs.find(root) if p.endswith(".parquet") and p not in before)
    except Exception as error:
        raise storage_error(out, error, "list") from None


def _summarise(out: str, shards: list[str], summary: StreamSummary) -> None:
    pq = require_pyarrow().parquet
    fs, _ = filesystem(out)
    for shard in shards:
        with fs.open(shard, "rb") as handle:
            table = pq.read_table(handle, columns=["path", "error"])
        for path, error in zip(
            table.column("path").to_pylist(), table.column("error").to_pylist(), strict=True
        ):
            summary.inputs += 1
            if error is None:
                summary.predicted += 1
                continue
            summary.failed += 1
            if len(summary.failures) < KEPT_FAILURES:
                summary.failures.append((path, error))


def predict_with_ray(
    bundle: Bundle,
    inputs: Sequence[str],
    out: str,
    *,
    address: str | None = None,
    actors: int = 0,
    threads: int = 0,
    providers: Sequence[str] = (CPU_PROVIDER,),
    precision: str = "auto",
    batch_size: int = 16,
    top_k: int = 5,
    local_cpus: int = 0,
) -> tuple[StreamSummary, str]:
    """Predict ``inputs`` with a Ray Data actor pool; parquet shards under ``out``.

    Args:
        bundle: A verified bundle (its folder must be readable by every node).
        inputs: Listed inputs, all local or all under one URL scheme.
        out: The shard folder or prefix (``FOLDER.parquet``).
        address: A running cluster (``ray://host:10001``, ``auto``); None starts a local Ray.
        actors: Actors in the pool (0: one per ``threads`` CPUs, or one per GPU).
        threads: ONNX Runtime threads per actor (0: 1).
        providers: ONNX Runtime providers; a GPU provider gives each actor one GPU.
        precision: ``auto``, ``fp32`` or ``int8``, as ``serve``.
        batch_size: Images per model call.
        top_k: Labels in a classification answer.
        local_cpus: CPUs of a local Ray (0: this machine's cores).

    Returns:
        Counts read back from the new shards (``seconds``: once the cluster is up), and the
        precision the actors ran.

    Raises:
        ConfigError: Ray missing, a cluster that cannot be joined, or mixed input stores.
        StorageError: ``out`` cannot be listed.
    """
    ray = require_ray()
    protocol = _protocol(inputs) if inputs else None
    threads = threads or 1
    gpu = providers[0] != CPU_PROVIDER
    options: dict[str, Any] = {
        "threads": threads, "precision": precision, "providers": list(providers), "top_k": top_k,
    }  # fmt: skip
    # Built here first, so a wrong precision or device fails before Ray starts.
    precision_used = BatchPredictor(
        bundle, threads=threads, precision=precision, providers=providers, top_k=top_k
    ).precision
    summary = StreamSummary()
    if not inputs:
        return summary, precision_used
    before = set(_new_shards(out, set())) if out_exists(out) else set()
    # Ray's log monitor prints to stdout, which belongs to the command's result (`--json`).
    with contextlib.redirect_stdout(sys.stderr):
        own = _start(ray, address, local_cpus or available_cores())
        # Timed from here: a running cluster is the steady state; a local Ray's start
        # (seconds) is paid once per job, whatever its size.
        started = time.perf_counter()
        try:
            _pipeline(ray, bundle, inputs, out, protocol, options, actors, gpu, batch_size)
            _summarise(out, _new_shards(out, before), summary)
        finally:
            if own:
                ray.shutdown()
    summary.seconds = time.perf_counter() - started
    return summary, precision_used


def _pipeline(
    ray: Any,
    bundle: Bundle,
    inputs: Sequence[str],
    out: str,
    protocol: str | None,
    options: dict[str, Any],
    actors: int,
    gpu: bool,
    batch_size: int,
) -> None:
    """Read, predict and write with Ray Data (see :func:`predict_with_ray`)."""
    import ray.data

    logging.getLogger("ray.data").setLevel(logging.ERROR)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    threads = options["threads"]
    if actors <= 0:
        cluster = ray.cluster_resources()
        pool = cluster.get("GPU", 0) if gpu else cluster.get("CPU", 1) // threads
        actors = max(1, int(pool))
    filesystem_arg = _arrow_filesystem(inputs[0]) if protocol else None
    paths = [path.partition("://")[2] if protocol else path for path in inputs]
    # Reads and writes take no CPU slot: the actors hold them all, and a read waiting for a
    # slot would wait for ever (a write, until every batch sat in memory). Without a slot
    # to wait for, their concurrency is capped instead: one worker process each.
    dataset = ray.data.read_binary_files(
        paths, include_paths=True, filesystem=filesystem_arg, num_cpus=0, concurrency=actors
    )
    rows = dataset.map_batches(
        RayPredictor,
        fn_constructor_args=(str(bundle.path.resolve()), protocol, options),
        batch_size=batch_size,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=actors),
        num_cpus=0 if gpu else threads,
        num_gpus=1 if gpu else 0,
    )
    rows.write_parquet(
        str(Path(out).resolve()) if not is_url(out) else filesystem(out)[1],
        filesystem=_arrow_filesystem(out) if is_url(out) else None,
        min_rows_per_file=SHARD_ROWS,
        ray_remote_args={"num_cpus": 0},
        concurrency=actors,
    )
