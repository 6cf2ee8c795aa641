"""Where one serving process spends its time per request, stage by stage.

One process serves the bundle with uvicorn (the same app ``visionops serve`` builds, ONNX
Runtime on one thread so that its work is the calling thread's) while
``benchmarks/serve.py --url`` loads it from another process. Both instruments count CPU
time of the thread doing the work (``time.thread_time``), not wall time, so a machine shared
with other work changes throughput but hardly the breakdown; both cover the measured window:

- **cProfile on the event-loop thread** (the only thread cProfile sees): HTTP parsing,
  multipart, routing, response encoding, metrics — every function's own time, grouped by the
  module it lives in;
- **CPU clocks around the worker threads' stages**: decode + resize (decode pool), the
  ONNX Runtime call and the prediction-log write inside the inference thread's whole batch
  function (the rest of which is post-processing and building the log records).

Everything is divided by the images logged in the window (one per request), so the table
reads "CPU ms per request". cProfile slows the loop it measures (2-5× for Python-heavy
code), so its event-loop rows are upper bounds, good for shares, not sums. So a first window,
as long, runs without it: **the CPU time of every thread of the process** read from Linux's
/proc (event loop, decode pool, inference, prediction log, online drift, ONNX Runtime's own
threads), the real cost of a request, thread by thread.

Run: python benchmarks/serve_profile.py --project /tmp/serveproj -c 32 -d 20
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import os
import pstats
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import uvicorn

from serve import free_port, make_bundle

HERE = Path(__file__).resolve().parent

# Module path fragment -> the stage it belongs to (first match wins).
CATEGORIES = [
    ("h11", "HTTP parsing and writing (h11)"),
    ("httptools", "HTTP parsing and writing (httptools)"),
    ("uvicorn/protocols", "HTTP parsing and writing (uvicorn protocol)"),
    ("multipart", "multipart parsing"),
    ("formparsers", "multipart parsing"),
    ("serve/uploads.py", "body reading and upload checks"),
    ("pydantic", "response models and JSON encoding"),
    ("json", "response models and JSON encoding"),
    ("prometheus_client", "metrics"),
    ("serve/metrics.py", "metrics"),
    ("serve/batcher.py", "queueing (micro-batcher)"),
    ("serve/routes.py", "request handler"),
    ("serve/http_errors.py", "request handler"),
    ("fastapi", "routing and validation (FastAPI/Starlette)"),
    ("starlette", "routing and validation (FastAPI/Starlette)"),
    ("asyncio", "event loop, sockets, futures"),
    ("selectors", "event loop, sockets, futures"),
    ("concurrent/futures", "event loop, sockets, futures"),
    ("threading", "event loop, sockets, futures"),
    ("socket", "event loop, sockets, futures"),
    ("loguru", "logging"),
    ("logging", "logging"),
]


def _category(filename: str) -> str:
    if filename.startswith("<built-in") or filename == "~":
        return "built-ins (C calls from the above)"
    for fragment, name in CATEGORIES:
        if fragment in filename:
            return name
    return "other Python"


class StageClock:
    """Sum of the calling thread's CPU seconds in wrapped calls, by stage (thread-safe)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.active = False
        self._lock = threading.Lock()

    def wrap(self, stage: str, function: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.thread_time()
            try:
                return function(*args, **kwargs)
            finally:
                if self.active:
                    with self._lock:
                        self.seconds[stage] += time.thread_time() - started

        return timed


def thread_cpu_seconds() -> dict[int, float]:
    """CPU seconds (user + system) of each live thread of this process, by native id."""
    seconds = {}
    tick = os.sysconf("SC_CLK_TCK")
    for tid in os.listdir("/proc/self/task"):
        try:
            fields = Path(f"/proc/self/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # the thread ended meanwhile
            continue
        seconds[int(tid)] = (int(fields[11]) + int(fields[12])) / tick
    return seconds


def thread_group(native_id: int) -> str:
    """What a thread of the server is, from its Python name (prefix of a pool's threads)."""
    if native_id == threading.main_thread().native_id:
        return "event loop (HTTP, routing, multipart, handler, queueing)"
    names = {t.native_id: t.name for t in threading.enumerate()}
    name = names.get(native_id)
    if name is None:
        return "threads outside Python (ONNX Runtime's pool)"
    for prefix, group in (
        ("decode", "decode pool (decode, resize, image statistics)"),
        ("inference", "inference (ONNX Runtime, post-processing, log records)"),
        ("predlog", "prediction-log writer"),
    ):
        if name.startswith(prefix):
            return group
    return f"other: {name}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", type=Path, default=Path(tempfile.gettempdir()) / "serveproj")
    parser.add_argument("-c", "--concurrency", type=int, default=32)
    parser.add_argument("-d", "--duration", type=float, default=20.0)
    parser.add_argument("--ramp-up", type=float, default=3.0)
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--top", type=int, default=15, help="Functions listed by own time.")
    args = parser.parse_args()

    from visionops.config import ServeSettings
    from visionops.inference.bundle import load_bundle
    from visionops.serve.app import create_app

    bundle = load_bundle(make_bundle(args.project))
    log_dir = Path(tempfile.mkdtemp(prefix="serve-profile-"))
    app = create_app(bundle, ServeSettings(precision=args.precision, threads=1), log_dir)
    state = app.state.serving
    clock = StageClock()
    state.decode = clock.wrap("decode + resize (decode pool)", state.decode)
    state.predlog.write = clock.wrap("prediction log write (log thread)", state.predlog.write)
    # The whole batch function; post-processing and record building = the rest of it.
    state.batcher._function = clock.wrap("inference thread, whole batch", state.batcher._function)
    real_make_session = state._make_session

    def make_session() -> Any:
        session = real_make_session()
        session.run = clock.wrap("ONNX Runtime (inference thread)", session.run)
        return session

    state._make_session = make_session

    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False)
    )
    profiler = cProfile.Profile(time.thread_time)
    window: dict[str, float] = {}
    by_thread: dict[str, float] = defaultdict(float)

    async def measure() -> None:
        while not state.ready:
            await asyncio.sleep(0.1)
        load = await asyncio.create_subprocess_exec(
            sys.executable,
            str(HERE / "serve.py"),
            "--url",
            f"http://127.0.0.1:{port}",
            "-c",
            str(args.concurrency),
            "-d",
            str(2 * args.duration + 30),  # outlasts both windows, however long it starts
            "--ramp-up",
            str(args.ramp_up),
            stdout=subprocess.PIPE,
        )
        while state.predlog.records_written == 0:  # the generator takes a while to start
            await asyncio.sleep(0.1)
        await asyncio.sleep(args.ramp_up)
        # Window 1: every thread's CPU time, nothing instrumented.
        before, cpu_before = state.predlog.records_written, thread_cpu_seconds()
        await asyncio.sleep(args.duration)
        cpu_after = thread_cpu_seconds()
        window["thread_requests"] = state.predlog.records_written - before
        for native_id, seconds in cpu_after.items():
            by_thread[thread_group(native_id)] += seconds - cpu_before.get(native_id, 0.0)
        # Window 2: cProfile on the loop, CPU clocks around the stages.
        before = state.predlog.records_written
        clock.active = True
        window["start"] = time.perf_counter()
        profiler.enable()
        await asyncio.sleep(args.duration)
        profiler.disable()
        window["seconds"] = time.perf_counter() - window["start"]
        clock.active = False
        window["requests"] = state.predlog.records_written - before
        load.terminate()
        await load.wait()
        server.should_exit = True

    async def serve_and_measure() -> None:
        task = asyncio.get_running_loop().create_task(measure())
        await server.serve()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(serve_and_measure())
    requests, seconds = window["requests"], window["seconds"]
    if not requests or not window["thread_requests"]:
        raise SystemExit("no request was answered in a window — lengthen --duration")
    answered = window["thread_requests"]
    print(f"window 1 (not profiled): {answered:.0f} requests; CPU ms per request by thread:\n")
    print("| thread | CPU ms per request |\n|---|---:|")
    for group, cpu in sorted(by_thread.items(), key=lambda kv: -kv[1]):
        print(f"| {group} | {cpu / answered * 1000:.3f} |")
    print(f"| **whole process** | **{sum(by_thread.values()) / answered * 1000:.3f}** |\n")
    print(f"window 2 (cProfile): {requests:.0f} requests in {seconds:.1f} s\n")

    stats = pstats.Stats(profiler)
    by_category: dict[str, float] = defaultdict(float)
    rows = []
    for (filename, line, name), (_, _, own, _, _) in stats.stats.items():  # type: ignore[attr-defined]
        by_category[_category(filename)] += own
        rows.append((own, f"{Path(filename).name}:{line}({name})"))
    loop_total = sum(by_category.values())
    print("| stage | ms per request |\n|---|---:|")
    for category, seconds in sorted(by_category.items(), key=lambda kv: -kv[1]):
        if category.startswith("event loop"):
            continue  # printed last
        print(f"| event loop: {category} | {seconds / requests * 1000:.3f} |")
    idle = by_category.get("event loop, sockets, futures", 0.0)
    print(f"| event loop: asyncio, sockets, select() | {idle / requests * 1000:.3f} |")
    for stage, seconds in sorted(clock.seconds.items()):
        print(f"| {stage} | {seconds / requests * 1000:.3f} |")
    print(f"\nevent-loop thread total (profiled): {loop_total / requests * 1000:.3f} ms/request")
    print(f"\ntop {args.top} functions on the event loop by own time (ms per request):")
    for own, where in sorted(rows, reverse=True)[: args.top]:
        print(f"  {own / requests * 1000:7.3f}  {where}")


if __name__ == "__main__":
    main()
