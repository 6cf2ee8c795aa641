"""Serving under load: ``visionops serve`` versus its limits, in one run on the same images.

1. The bundle: a ResNet-18 at 224 px made by the real pipeline in a scratch project
   (``data fetch demo:shapes`` → ``data preprocess --size 224`` → ``train --epochs 1`` →
   ``export``), or ``--project DIR`` holding one already.
2. The images: photo-like 640×480 JPEGs, generated once, pre-encoded as multipart bodies
   (and as raw bodies: the image itself, ``Content-Type: image/jpeg``).
3. Limits: the in-process pipeline (``load_image`` + ONNX Runtime, no HTTP) sequential at
   batch 1, and batched with threaded decoding; then the naive server
   (``benchmarks/naive_server.py``: FastAPI + PyTorch, one request at a time).
4. ``visionops serve`` (the real CLI, in its own process) at ``--concurrency`` clients for
   each ``--max-batch`` in ``--batch-sweep``, then with its defaults (fp32 and the int8
   model, multipart and raw bodies), then ``--overload-concurrency`` clients for
   ``--overload-duration`` seconds.

The load generator is one asyncio process: keep-alive connections (one per client), requests
encoded once up front, no per-request logging. Its client is ``--client lean`` (pre-encoded
HTTP/1.1 on asyncio streams) or ``httpx``; it shares the cores with the server, so its CPU per
request is printed beside the server's (CPU time of the server process over the run, divided
by the requests answered) and the in-process pipeline's CPU per image.

With ``--isolation``: one server with the bundle twice (``a=BUNDLE b=BUNDLE``, two models of
one ``visionops serve``); a single client on model b alone, then the same client while
``--overload-concurrency`` clients saturate model a; b's p99 under a's load over its p99
alone (goal: <= 2x: a saturated model does not starve another).

With ``--upload-ab``: defaults with the prediction log kept locally vs uploaded to a bucket
(``--log-dir s3://...`` on a local S3-compatible server, moto's server mode, uploading every
second), interleaved rounds, and the ratio (goal: uploads on >= 0.97x uploads off).

Run: python benchmarks/serve.py --concurrency 32 --duration 20
Load-test any running server: python benchmarks/serve.py --url http://127.0.0.1:8000 -c 64
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import multiprocessing
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from preprocess import photo

HERE = Path(__file__).resolve().parent
BOUNDARY = "visionops-benchmark-boundary"


# --------------------------------------------------------------------------- inputs


def make_bundle(project: Path, size: int = 224, reference_per_class: int = 100) -> Path:
    """A ResNet-18 bundle made by the real CLI pipeline (reused if already there).

    Args:
        project: The scratch project folder.
        size: The model's input side (px); 224 for every published figure.
        reference_per_class: Drift reference images per class (100 for published figures).
    """
    bundle = project / "runs" / "latest" / "bundle"
    if (bundle / "visionops.json").is_file():
        return bundle.resolve()
    project.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "WANDB_MODE": "disabled", "MPLBACKEND": "Agg"}
    steps = [
        [
            "data",
            "fetch",
            "demo:shapes",
            "data.demo.images_per_class=8",
            "data.demo.image_size=256",
        ],
        ["data", "preprocess", "data/raw/shapes", "--size", str(size)],
        ["train", "--epochs", "1", "--model", "resnet18", "--device", "cpu", "--batch-size", "16"],
        ["export", "--quantize", "int8"],
        # A reference as large as a real one (the training data above is tiny to keep
        # training short), so online drift in serve tests a realistic amount of data.
        [
            "data",
            "fetch",
            "demo:shapes",
            f"data.demo.images_per_class={reference_per_class}",
            "data.demo.image_size=256",
            "data.demo.seed=1",
            "data.raw_root=data/reference-raw",
        ],
        [
            "data",
            "preprocess",
            "data/reference-raw/shapes",
            "--size",
            str(size),
            "data.prepared_root=data/reference-prepared",
        ],
        ["drift", "reference", "runs/latest", "data/reference-prepared/shapes"],
    ]
    for step in steps:
        print(f"  $ visionops {' '.join(step)}", flush=True)
        subprocess.run(
            [sys.executable, "-m", "visionops", *step, "-q"], cwd=project, env=env, check=True
        )
    return bundle.resolve()


def make_images(count: int, width: int, height: int, seed: int = 0) -> list[bytes]:
    """Photo-like JPEGs (the preprocess benchmark's generator), quality 90, in memory."""
    rng = np.random.default_rng(seed)
    images = []
    for _ in range(count):
        buffer = io.BytesIO()
        photo(rng, width, height).save(buffer, format="JPEG", quality=90)
        images.append(buffer.getvalue())
    return images


def multipart(data: bytes, name: str) -> bytes:
    head = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
        "Content-Type: image/jpeg\r\n\r\n"
    ).encode()
    return head + data + f"\r\n--{BOUNDARY}--\r\n".encode()


# --------------------------------------------------------------------------- load generator


@dataclass
class LoadResult:
    name: str
    concurrency: int
    seconds: float
    requests: int
    throughput: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    statuses: dict[str, int]
    generator_cpu: float
    load_average: float
    health_p99_ms: float
    health_max_ms: float
    body: str = "multipart"
    client: str = "lean"
    generator_cpu_ms: float = 0.0
    server_cpu_ms: float | None = None
    server: dict[str, float] = field(default_factory=dict)

    @property
    def failed(self) -> int:
        return sum(n for status, n in self.statuses.items() if status != "200")


def _probe(url: str, seconds: float, results: Any) -> None:
    """GET /health every 0.25 s from its own process (so the generator's loop adds no lag)."""
    latencies = []
    deadline = time.perf_counter() + seconds
    with httpx.Client(base_url=url, timeout=120.0) as client:
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            try:
                client.get("/health")
                latencies.append(time.perf_counter() - started)
            except httpx.TransportError:
                latencies.append(float("inf"))
            time.sleep(0.25)
    results.put(latencies)


@dataclass(frozen=True)
class Payloads:
    """What the clients send: request bodies and their Content-Type (one kind per run)."""

    kind: str  # "multipart" or "raw" (the image itself as the body)
    bodies: list[bytes]
    content_type: str
    path: str = "/predict"  # /models/NAME/predict: one model of a server with several


def payloads(images: list[bytes], kind: str) -> Payloads:
    if kind == "raw":
        return Payloads(kind, images, "image/jpeg")
    bodies = [multipart(data, f"{i}.jpg") for i, data in enumerate(images)]
    return Payloads(kind, bodies, f"multipart/form-data; boundary={BOUNDARY}")


class _HttpxConnection:
    """One simulated client on httpx (one keep-alive connection)."""

    def __init__(self, url: str, sent: Payloads) -> None:
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        self.client = httpx.AsyncClient(base_url=url, limits=limits, timeout=120.0)
        self.headers = {"Content-Type": sent.content_type}
        self.bodies = sent.bodies
        self.path = sent.path

    async def post(self, turn: int) -> str:
        body = self.bodies[turn % len(self.bodies)]
        try:
            response = await self.client.post(self.path, content=body, headers=self.headers)
            return str(response.status_code)
        except httpx.TimeoutException:
            return "client-timeout"
        except httpx.TransportError as exc:
            return type(exc).__name__

    async def aclose(self) -> None:
        await self.client.aclose()


class _LeanConnection:
    """One simulated client speaking just enough HTTP/1.1 (keep-alive, Content-Length bodies).

    The requests are encoded once, headers and all; an answer is read as its status line,
    headers and Content-Length bytes. Costs a fraction of httpx's CPU per request, which on
    a machine whose cores the server shares is CPU the server gets back.
    """

    def __init__(self, url: str, sent: Payloads) -> None:
        parsed = httpx.URL(url)
        self.host, self.port = parsed.host, parsed.port or 80
        self.requests = [
            (
                f"POST {sent.path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
                f"Content-Type: {sent.content_type}\r\nContent-Length: {len(body)}\r\n\r\n"
            ).encode()
            + body
            for body in sent.bodies
        ]
        self.streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def _exchange(self, request: bytes) -> tuple[int, bool]:
        if self.streams is None:
            self.streams = await asyncio.open_connection(self.host, self.port)
        reader, writer = self.streams
        writer.write(request)
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        length, close = 0, False
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"connection":
                close = value.strip().lower() == b"close"
            elif name == b"transfer-encoding":
                raise RuntimeError("a chunked answer: load this server with --client httpx")
        await reader.readexactly(length)
        return int(head[9:12]), close

    async def post(self, turn: int) -> str:
        try:
            async with asyncio.timeout(120.0):
                status, close = await self._exchange(self.requests[turn % len(self.requests)])
        except TimeoutError:
            status, close = "client-timeout", True  # type: ignore[assignment]
        except (OSError, asyncio.IncompleteReadError) as exc:
            status, close = type(exc).__name__, True  # type: ignore[assignment]
        if close:
            await self.aclose()
        return str(status)

    async def aclose(self) -> None:
        if self.streams is not None:
            self.streams[1].close()
            self.streams = None


CLIENTS = {"lean": _LeanConnection, "httpx": _HttpxConnection}


async def _load(
    url: str,
    sent: Payloads,
    concurrency: int,
    duration: float,
    ramp_up: float,
    client: str,
) -> tuple[list[float], Counter[str], float]:
    latencies: list[float] = []
    statuses: Counter[str] = Counter()
    begin = time.perf_counter()
    window_start = begin + ramp_up
    window_end = window_start + duration

    async def worker(index: int) -> None:
        # One client (one keep-alive connection) per simulated user: a shared pool of
        # hundreds of connections costs httpx far more CPU per request.
        connection = CLIENTS[client](url, sent)
        try:
            await asyncio.sleep(ramp_up * index / concurrency)  # ramp up evenly
            turn = index
            while (started := time.perf_counter()) < window_end:
                status = await connection.post(turn)
                turn += concurrency
                finished = time.perf_counter()
                statuses[status] += 1  # every request counts for errors, ramp-up included
                if status == "200" and window_start <= finished <= window_end:
                    latencies.append(finished - started)
        finally:
            await connection.aclose()

    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    return latencies, statuses, duration


def run_load(
    name: str,
    url: str,
    sent: Payloads,
    concurrency: int,
    duration: float,
    ramp_up: float,
    client: str = "lean",
    server_pid: int | None = None,
) -> LoadResult:
    queue: Any = multiprocessing.get_context("fork").Queue()
    probe = multiprocessing.get_context("fork").Process(
        target=_probe, args=(url, ramp_up + duration, queue), daemon=True
    )
    probe.start()
    server0 = _cpu_seconds(server_pid) if server_pid else None
    cpu0, wall0 = time.process_time(), time.perf_counter()
    latencies, statuses, seconds = asyncio.run(
        _load(url, sent, concurrency, duration, ramp_up, client)
    )
    cpu_seconds, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    server1 = _cpu_seconds(server_pid) if server_pid else None
    health = queue.get(timeout=300)
    probe.join(timeout=30)
    ms = np.array(latencies) * 1000 if latencies else np.zeros(1)
    requests = sum(statuses.values())
    result = LoadResult(
        name=name,
        concurrency=concurrency,
        seconds=seconds,
        requests=requests,
        throughput=len(latencies) / seconds,
        p50_ms=float(np.percentile(ms, 50)),
        p95_ms=float(np.percentile(ms, 95)),
        p99_ms=float(np.percentile(ms, 99)),
        max_ms=float(ms.max()),
        statuses=dict(statuses),
        generator_cpu=cpu_seconds / wall,
        load_average=os.getloadavg()[0],
        health_p99_ms=float(np.percentile(health, 99) * 1000) if health else 0.0,
        health_max_ms=float(max(health, default=0.0) * 1000),
        body=sent.kind,
        client=client,
        generator_cpu_ms=cpu_seconds / max(requests, 1) * 1000,
        server_cpu_ms=(
            (server1 - server0) / max(requests, 1) * 1000
            if server0 is not None and server1 is not None
            else None
        ),
    )
    server_cpu = f"server {result.server_cpu_ms:.1f}, " if result.server_cpu_ms is not None else ""
    print(
        f"  {name:<34} c={concurrency:<4} {result.throughput:7.1f} req/s  p50 {result.p50_ms:7.0f}"
        f"  p95 {result.p95_ms:7.0f}  p99 {result.p99_ms:7.0f} ms  statuses {result.statuses}"
        f"  /health p99 {result.health_p99_ms:.0f} max {result.health_max_ms:.0f} ms"
        f"  (CPU ms/request: {server_cpu}{client} client {result.generator_cpu_ms:.2f};"
        f" generator {result.generator_cpu:.0%} of a core, load {result.load_average:.1f})",
        flush=True,
    )
    return result


# --------------------------------------------------------------------------- servers


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


_MEASURED = {
    'visionops_image_statistics_uploads_total{measured="true"}': "measured",
    'visionops_image_statistics_uploads_total{measured="false"}': "not_measured",
}


class Process:
    """A server subprocess, waited on until ``ready_path`` answers 200."""

    def __init__(self, command: list[str], url: str, ready_path: str, log: Path) -> None:
        self.url = url
        self.log = log.open("w")
        self.process = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"server exited: see {log}")
            try:
                if httpx.get(url + ready_path, timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        self.stop()
        raise SystemExit(f"server not ready in 300 s: see {log}")

    def metrics(self) -> dict[str, float]:
        try:
            text = httpx.get(self.url + "/metrics", timeout=10).text
        except httpx.TransportError:
            return {}
        values = {}
        for line in text.splitlines():
            key, _, value = line.partition(" ")
            if key in {"visionops_batch_size_sum", "visionops_batch_size_count", *_MEASURED}:
                values[_MEASURED.get(key, key)] = float(value)
        uploads = values.get("measured", 0.0) + values.get("not_measured", 0.0)
        if uploads:
            # Under load serve measures the drift statistics of a random share of uploads.
            values["statistics_measured"] = values["measured"] / uploads
        if values.get("visionops_batch_size_count"):
            values["mean_batch"] = (
                values["visionops_batch_size_sum"] / values["visionops_batch_size_count"]
            )
        return values

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()


def visionops_server(bundle: Path, work: Path, *flags: str, tag: str) -> Process:
    port = free_port()
    command = [sys.executable, "-m", "visionops", "serve", str(bundle), "--port", str(port)]
    command += ["--log-dir", str(work / f"predictions-{tag}"), *flags]
    return Process(command, f"http://127.0.0.1:{port}", "/ready", work / f"server-{tag}.log")


def launcher_server(bundle: Path, work: Path, decode_threads: int, tag: str) -> Process:
    """The same app, started directly so the decode pool can be switched off (A/B only)."""
    port = free_port()
    code = (
        "import uvicorn; from pathlib import Path;"
        "from visionops.inference.bundle import load_bundle;"
        "from visionops.config import ServeSettings;"
        "from visionops.serve.app import create_app;"
        f"app = create_app(load_bundle(Path({str(bundle)!r})), ServeSettings(),"
        f" Path({str(work / ('predictions-' + tag))!r}), decode_threads={decode_threads});"
        f"uvicorn.run(app, host='127.0.0.1', port={port}, log_level='warning', access_log=False)"
    )
    return Process(
        [sys.executable, "-c", code], f"http://127.0.0.1:{port}", "/ready", work / f"{tag}.log"
    )


def naive_server(run_dir: Path, work: Path, threads: int) -> Process:
    port = free_port()
    command = [sys.executable, str(HERE / "naive_server.py"), str(run_dir), "--port", str(port)]
    command += ["--threads", str(threads)]
    return Process(command, f"http://127.0.0.1:{port}", "/health", work / f"naive{threads}.log")


def _cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a live process and its live children (``--workers N``)
    from Linux's /proc, or None elsewhere."""

    def stat(process: int) -> list[str] | None:
        try:
            return Path(f"/proc/{process}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return None

    own = stat(pid)
    if own is None:
        return None
    fields = [own]
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (child := stat(int(entry.name))) and child[1] == str(pid):
            fields.append(child)
    ticks = sum(int(f[11]) + int(f[12]) for f in fields)
    return ticks / os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------- in-process limit


def in_process(
    bundle: Path, model_file: str, images: list[bytes], seconds: float
) -> dict[str, float]:
    """Decode + resize + ONNX Runtime, no HTTP: batch 1 sequential and batch 8 with decoding
    threaded ahead, each with ONNX Runtime's default threads and with one thread; and one
    single-thread batch of 8 per core at once, decoded on the pool.

    Returns images/s per pipeline, the median decode time (``decode_ms``) and the process's
    CPU time per image in each pipeline (``cpu_ms <pipeline>``: decode and model together).
    """
    import onnxruntime as ort

    from visionops.imaging import load_image
    from visionops.inference.bundle import load_bundle

    spec = load_bundle(bundle).meta.input

    def prepare(data: bytes) -> np.ndarray:
        return load_image(data, size=spec.size, policy=spec.resize)

    results = {}
    decode_ms = []
    for data in images[:16]:
        t0 = time.perf_counter()
        prepare(data)
        decode_ms.append((time.perf_counter() - t0) * 1000)
    results["decode_ms"] = float(np.median(decode_ms))
    for threads in (0, 1):
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        session = ort.InferenceSession(
            str(bundle / model_file), options, providers=["CPUExecutionProvider"]
        )

        def run(batch: list[np.ndarray], session: Any = session) -> None:
            pixels = np.ascontiguousarray(np.stack(batch).transpose(0, 3, 1, 2))
            session.run(None, {"pixels": pixels})

        tag = "default_threads" if threads == 0 else f"{threads}_thread"
        run([prepare(images[0])] * 8)  # warm-up
        count, started, cpu = 0, time.perf_counter(), time.process_time()
        while time.perf_counter() - started < seconds:
            run([prepare(images[count % len(images)])])
            count += 1
        results[f"sequential_batch1_{tag}"] = count / (time.perf_counter() - started)
        results[f"cpu_ms sequential_batch1_{tag}"] = (time.process_time() - cpu) / count * 1000

        with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
            count, started, cpu = 0, time.perf_counter(), time.process_time()
            pending = pool.map(prepare, [images[i % len(images)] for i in range(8)])
            while time.perf_counter() - started < seconds:
                batch = list(pending)
                upcoming = [images[(count + 8 + i) % len(images)] for i in range(8)]
                pending = pool.map(prepare, upcoming)  # decode the next batch meanwhile
                run(batch)
                count += 8
            list(pending)
        results[f"threaded_batch8_{tag}"] = count / (time.perf_counter() - started)
        results[f"cpu_ms threaded_batch8_{tag}"] = (time.process_time() - cpu) / count * 1000
    cores = os.cpu_count() or 1
    if cores > 1:
        # What `visionops serve` does by default: one single-thread batch per core at once
        # (`session` is the one-thread session of the last round above).
        counts = [0] * cores
        with ThreadPoolExecutor(max_workers=cores) as pool:
            started, cpu = time.perf_counter(), time.process_time()

            def runner(index: int) -> None:
                turn = index * 8
                while time.perf_counter() - started < seconds:
                    chosen = [images[(turn + i) % len(images)] for i in range(8)]
                    run(list(pool.map(prepare, chosen)))
                    counts[index] += 8
                    turn += 8 * cores

            runners = [threading.Thread(target=runner, args=(i,)) for i in range(cores)]
            for thread in runners:
                thread.start()
            for thread in runners:
                thread.join()
        name = f"concurrent_batch8_{cores}x1_thread"
        results[name] = sum(counts) / (time.perf_counter() - started)
        results[f"cpu_ms {name}"] = (time.process_time() - cpu) / sum(counts) * 1000
    for key, value in results.items():
        print(f"  in-process {model_file} {key:<34} {value:7.2f}", flush=True)
    return results


# --------------------------------------------------------------------------- main


def isolation(
    bundle: Path, work: Path, sent: Payloads, args: argparse.Namespace
) -> dict[str, float]:
    """Model b's latency alone, then while model a (same server) is saturated.

    Returns:
        b's p99 alone and under a's load (ms), their ratio, and a's throughput and statuses.
    """
    port = free_port()
    command = [sys.executable, "-m", "visionops", "serve", f"a={bundle}", f"b={bundle}"]
    command += ["--port", str(port), "--log-dir", str(work / "predictions-isolation")]
    server = Process(command, f"http://127.0.0.1:{port}", "/ready", work / "server-isolation.log")
    alone_b = replace(sent, path="/models/b/predict")
    load_a = replace(sent, path="/models/a/predict")

    async def both() -> tuple[
        tuple[list[float], Counter[str], float], tuple[list[float], Counter[str], float]
    ]:
        busy = _load(
            server.url,
            load_a,
            args.overload_concurrency,
            args.duration + args.ramp_up,  # a is saturated before b's window opens
            args.ramp_up,
            args.client,
        )
        probe = _load(server.url, alone_b, 1, args.duration, 2 * args.ramp_up, args.client)
        return await asyncio.gather(busy, probe)

    try:
        idle, idle_statuses, _ = asyncio.run(
            _load(server.url, alone_b, 1, args.duration, args.ramp_up, args.client)
        )
        (a_latencies, a_statuses, a_seconds), (busy, busy_statuses, _) = asyncio.run(both())
    finally:
        server.stop()

    def p99(latencies: list[float]) -> float:
        return float(np.percentile(np.array(latencies) * 1000, 99)) if latencies else float("nan")

    result = {
        "b_alone_p99_ms": p99(idle),
        "b_alone_p50_ms": float(np.median(idle) * 1000) if idle else float("nan"),
        "b_under_load_p99_ms": p99(busy),
        "b_under_load_p50_ms": float(np.median(busy) * 1000) if busy else float("nan"),
        "a_throughput": len(a_latencies) / a_seconds,
        "a_p99_ms": p99(a_latencies),
    }
    result["ratio"] = result["b_under_load_p99_ms"] / result["b_alone_p99_ms"]
    print(
        f"  model b alone: p50 {result['b_alone_p50_ms']:.0f} p99 {result['b_alone_p99_ms']:.0f}"
        f" ms ({len(idle)} requests, {dict(idle_statuses)}); while model a takes"
        f" {args.overload_concurrency} clients ({result['a_throughput']:.1f} req/s, p99"
        f" {result['a_p99_ms']:.0f} ms, {dict(a_statuses)}): b p50"
        f" {result['b_under_load_p50_ms']:.0f} p99 {result['b_under_load_p99_ms']:.0f} ms"
        f" ({len(busy)} requests, {dict(busy_statuses)})",
        flush=True,
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="Only load-test this running server, then exit.")
    parser.add_argument("--project", type=Path, help="Folder with (or for) the bundle's run.")
    parser.add_argument("-c", "--concurrency", type=int, default=32)
    parser.add_argument("-d", "--duration", type=float, default=15.0, help="Seconds measured.")
    parser.add_argument("--ramp-up", type=float, default=3.0, help="Seconds before measuring.")
    parser.add_argument("--overload-concurrency", type=int, default=200)
    parser.add_argument("--overload-duration", type=float, default=60.0)
    parser.add_argument("--batch-sweep", default="1,4,8", help="max_batch values; '' skips.")
    parser.add_argument("--wait-ms", type=float, default=2.0, help="max_wait_ms in the sweep.")
    parser.add_argument("--rounds", type=int, default=2, help="Interleaved rounds of the sweep.")
    parser.add_argument("--threads-sweep", default="1", help="--threads values tried; '' skips.")
    parser.add_argument("--naive-threads", default="0,1", help="torch threads; 0 = default.")
    parser.add_argument(
        "--overload-flags", default="", help="Extra `visionops serve` flags for the overload run."
    )
    parser.add_argument("--decode-ab", action="store_true", help="Also measure inline decoding.")
    parser.add_argument(
        "--configs",
        default="",
        help="Extra `visionops serve` flag sets measured at -c, ';'-separated"
        " (e.g. '--workers 2 --threads 1;--workers 1 --threads 2').",
    )
    parser.add_argument(
        "--drift-ab",
        action="store_true",
        help="Also measure defaults with online drift off vs on (interleaved --rounds).",
    )
    parser.add_argument(
        "--upload-ab",
        action="store_true",
        help="Also measure defaults with the log local vs uploaded to a local S3 server"
        " every second (interleaved --rounds).",
    )
    parser.add_argument(
        "--isolation",
        action="store_true",
        help="Also measure two models in one server: model b's p99 alone vs while"
        " --overload-concurrency clients saturate model a.",
    )
    parser.add_argument("--skip-naive", action="store_true")
    parser.add_argument(
        "--client",
        choices=sorted(CLIENTS),
        default="lean",
        help="The load generator's HTTP client: lean (pre-encoded HTTP/1.1 on asyncio streams,"
        " the least CPU taken from the server's cores) or httpx.",
    )
    parser.add_argument(
        "--body",
        choices=["multipart", "raw"],
        default="multipart",
        help="What --url and every run but the raw-body ones send.",
    )
    parser.add_argument(
        "--skip-raw", action="store_true", help="Skip the raw-body runs (defaults, fp32)."
    )
    parser.add_argument("--size", type=int, default=224, help="The bundle's input side (px).")
    parser.add_argument(
        "--reference-per-class", type=int, default=100, help="Drift reference images per class."
    )
    parser.add_argument("--images", type=int, default=48)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--in-process-seconds", type=float, default=8.0)
    parser.add_argument("--json", type=Path, help="Also write the results here.")
    args = parser.parse_args()

    print(
        f"machine: {os.cpu_count()} cores, {platform.processor() or platform.machine()},"
        f" Python {platform.python_version()}, load average {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    images = make_images(args.images, args.width, args.height)
    sent = payloads(images, args.body)
    raw = payloads(images, "raw")
    print(
        f"images: {len(images)} JPEGs {args.width}x{args.height}, median"
        f" {int(np.median([len(b) for b in images])) // 1000} kB",
        flush=True,
    )
    if args.url:
        run_load(
            "server", args.url, sent, args.concurrency, args.duration, args.ramp_up, args.client
        )
        return

    scratch = Path(tempfile.mkdtemp(prefix="visionops-serve-bench-"))
    project = args.project or scratch / "project"
    print(f"bundle: ResNet-18 {args.size} px in {project}", flush=True)
    bundle = make_bundle(project, args.size, args.reference_per_class)
    report: dict[str, Any] = {"bundle": str(bundle), "loads": []}

    from visionops.inference.bundle import load_bundle

    meta = load_bundle(bundle).meta
    models = ["model.onnx"] + ([meta.int8_file] if meta.int8_file else [])
    print("limits:", flush=True)
    report["in_process"] = {
        model: in_process(bundle, model, images, args.in_process_seconds) for model in models
    }
    limits = {
        model: max(v for k, v in values.items() if "ms" not in k)
        for model, values in report["in_process"].items()
    }
    # The CPU per image of the fastest pipeline: what a served request is compared with.
    limit_cpu_ms = {
        model: values[f"cpu_ms {max((k for k in values if 'ms' not in k), key=values.__getitem__)}"]
        for model, values in report["in_process"].items()
    }
    served_model = models[-1]  # what `visionops serve` runs by default (precision auto)

    loads: list[LoadResult] = []

    def measure(
        server: Process, name: str, concurrency: int, duration: float, body: Payloads = sent
    ) -> LoadResult:
        try:
            result = run_load(
                name,
                server.url,
                body,
                concurrency,
                duration,
                args.ramp_up,
                args.client,
                server.process.pid,
            )
            result.server = server.metrics()
            if "statistics_measured" in result.server:
                print(
                    f"    drift image statistics measured on"
                    f" {result.server['statistics_measured']:.0%} of the uploads",
                    flush=True,
                )
        finally:
            server.stop()
        loads.append(result)
        return result

    naives = []
    if not args.skip_naive:
        for threads in [int(v) for v in args.naive_threads.split(",") if v.strip()]:
            naives.append(
                measure(
                    naive_server(bundle.parent, scratch, threads),
                    f"naive FastAPI+PyTorch threads={threads or 'default'}",
                    args.concurrency,
                    args.duration,
                    payloads(images, "multipart"),  # it reads a `file` field only
                )
            )
    naive = max(naives, key=lambda r: r.throughput) if naives else None

    print("visionops serve:", flush=True)
    for round_ in range(args.rounds):  # interleaved, so background load hits every setting
        for value in [int(v) for v in args.batch_sweep.split(",") if v.strip()]:
            flags = ("--max-batch", str(value), "--max-wait-ms", str(args.wait_ms))
            server = visionops_server(bundle, scratch, *flags, tag=f"b{value}r{round_}")
            name = f"max_batch={value} max_wait={args.wait_ms:g}ms"
            measure(server, name, args.concurrency, args.duration)
    for value in [int(v) for v in args.threads_sweep.split(",") if v.strip()]:
        server = visionops_server(bundle, scratch, "--threads", str(value), tag=f"t{value}")
        measure(server, f"defaults, --threads {value}", args.concurrency, args.duration)
    if args.decode_ab:
        for threads in (0, os.cpu_count() or 1):
            server = launcher_server(bundle, scratch, threads, tag=f"decode{threads}")
            measure(server, f"defaults, decode_threads={threads}", args.concurrency, args.duration)
    for number, flags in enumerate(f.split() for f in args.configs.split(";") if f.strip()):
        server = visionops_server(bundle, scratch, *flags, tag=f"config{number}")
        measure(server, f"defaults, {' '.join(flags)}", args.concurrency, args.duration)
    drift_ab: dict[str, list[float]] = {"off": [], "on": []}
    if args.drift_ab:
        for round_ in range(args.rounds):
            for mode in ("off", "on"):
                flags = ("drift.online=false",) if mode == "off" else ()
                server = visionops_server(bundle, scratch, *flags, tag=f"drift-{mode}{round_}")
                result = measure(
                    server, f"defaults, online drift {mode}", args.concurrency, args.duration
                )
                drift_ab[mode].append(result.throughput)
    upload_ab: dict[str, list[float]] = {"off": [], "on": []}
    uploaded = 0
    storage_cpu: float | None = None
    if args.upload_ab:
        sys.path.insert(0, str(HERE.parent / "tests"))
        from s3_helpers import s3_server

        with s3_server() as s3:  # sets AWS_ENDPOINT_URL etc. for the servers it outlives
            s3.make_bucket("benchmark-logs")
            for round_ in range(args.rounds):
                # Alternate which goes first, so a drift in background load favours neither.
                for mode in ("off", "on") if round_ % 2 == 0 else ("on", "off"):
                    flags: tuple[str, ...] = ()
                    if mode == "on":
                        url = f"s3://benchmark-logs/r{round_}"
                        flags = ("--log-dir", url, "serve.log_upload_seconds=1")
                    server = visionops_server(bundle, scratch, *flags, tag=f"upload-{mode}{round_}")
                    result = measure(
                        server, f"defaults, log uploads {mode}", args.concurrency, args.duration
                    )
                    upload_ab[mode].append(result.throughput)
            uploaded = sum(key.endswith(".jsonl") for key in s3.keys("benchmark-logs"))
            storage_cpu = _cpu_seconds(s3.process.pid) if s3.process else None
    isolated: dict[str, float] | None = None
    if args.isolation:
        print("two models in one server:", flush=True)
        isolated = isolation(bundle, scratch, sent, args)
        report["isolation"] = isolated
    fp32 = None
    if len(models) > 1:
        fp32 = measure(
            visionops_server(bundle, scratch, "--precision", "fp32", tag="fp32"),
            "defaults, --precision fp32",
            args.concurrency,
            args.duration,
        )
    defaults = measure(
        visionops_server(bundle, scratch, tag="defaults"),
        f"defaults ({served_model})",
        args.concurrency,
        args.duration,
    )
    # The same two, with the image itself as the body (no multipart around it).
    fp32_raw = defaults_raw = None
    if not args.skip_raw and args.body != "raw":
        if fp32 is not None:
            fp32_raw = measure(
                visionops_server(bundle, scratch, "--precision", "fp32", tag="fp32-raw"),
                "defaults, --precision fp32, raw body",
                args.concurrency,
                args.duration,
                raw,
            )
        defaults_raw = measure(
            visionops_server(bundle, scratch, tag="defaults-raw"),
            f"defaults ({served_model}), raw body",
            args.concurrency,
            args.duration,
            raw,
        )
    overload = measure(
        visionops_server(bundle, scratch, *args.overload_flags.split(), tag="overload"),
        "defaults (overload)",
        args.overload_concurrency,
        args.overload_duration,
    )

    report["loads"] = [asdict(r) for r in loads]
    print("\nsummary", flush=True)
    for model, limit in limits.items():
        print(
            f"  in-process limit, {model} (best of five pipelines): {limit:.1f} images/s,"
            f" {limit_cpu_ms[model]:.1f} CPU ms per image"
        )

    def against_limit(what: str, model: str, result: LoadResult, raw: LoadResult | None) -> None:
        def ratio(run: LoadResult) -> str:
            text = f"{run.throughput:.1f} req/s = {run.throughput / limits[model]:.2f}x"
            if run.server_cpu_ms:
                efficiency = limit_cpu_ms[model] / run.server_cpu_ms
                text += (
                    f" (server CPU {run.server_cpu_ms:.1f} ms/request, in-process"
                    f" {limit_cpu_ms[model]:.1f} ms/image: {efficiency:.2f}x as efficient;"
                    f" client {run.generator_cpu_ms:.2f} ms/request)"
                )
            return text

        print(f"  {what} @ {args.concurrency}, {result.body}: {ratio(result)} (goal >= 0.85x)")
        if raw is not None:
            print(f"    raw body: {ratio(raw)}")

    against_limit(f"visionops defaults ({served_model})", served_model, defaults, defaults_raw)
    if fp32 is not None:
        against_limit("visionops --precision fp32", "model.onnx", fp32, fp32_raw)
    if drift_ab["on"]:
        off, on = np.mean(drift_ab["off"]), np.mean(drift_ab["on"])
        print(
            f"  online drift @ {args.concurrency}: off {off:.1f} req/s, on {on:.1f} req/s (mean of"
            f" {len(drift_ab['on'])} interleaved rounds) = {on / off:.3f}x, a"
            f" {max(0.0, 1 - on / off):.1%} slowdown (goal <= 5 %)"
        )
        report["drift_ab"] = drift_ab
    if upload_ab["on"]:
        off, on = np.mean(upload_ab["off"]), np.mean(upload_ab["on"])
        print(
            f"  log uploads @ {args.concurrency}: off {off:.1f} req/s, on {on:.1f} req/s (mean of"
            f" {len(upload_ab['on'])} interleaved rounds; {uploaded} segments uploaded) ="
            f" uploads on / off = {on / off:.3f}x (goal >= 0.97x)"
        )
        if storage_cpu is not None:
            print(
                f"    the local S3 server, on the same cores, used {storage_cpu:.1f} CPU-seconds"
                " receiving them (a real bucket is elsewhere)"
            )
        report["upload_ab"] = {**upload_ab, "segments_uploaded": uploaded}
    if isolated is not None:
        print(
            f"  isolation: model b's p99 {isolated['b_alone_p99_ms']:.0f} ms alone,"
            f" {isolated['b_under_load_p99_ms']:.0f} ms while model a (same server) is"
            f" saturated by {args.overload_concurrency} clients = {isolated['ratio']:.2f}x"
            " (goal <= 2x)"
        )
    if naive is not None:
        print(
            f"  best naive @ {args.concurrency}: {naive.throughput:.1f} req/s; visionops is"
            f" {defaults.throughput / max(naive.throughput, 1e-9):.2f}x (goal >= 3x)"
        )
    print(
        f"  overload @ {args.overload_concurrency} for {args.overload_duration:g} s:"
        f" {overload.requests} requests, {overload.failed} failed, p99"
        f" {overload.p99_ms:.0f} ms, {overload.throughput:.1f} req/s, /health p99"
        f" {overload.health_p99_ms:.0f} ms (max {overload.health_max_ms:.0f} ms); Little's law:"
        f" {args.overload_concurrency} clients / {limits[served_model]:.1f} images/s (the"
        f" in-process limit) = {args.overload_concurrency / limits[served_model]:.2f} s mean"
        " latency at best"
    )
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
