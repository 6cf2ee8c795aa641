"""Drift detection inside ``serve``: the report's tests on a rolling window, off the hot path.

The inference thread only appends each prediction's output row, embedding and image
statistics to a bounded deque (:meth:`OnlineDriftMonitor.observe`, microseconds). Every
``drift.every`` predictions a background thread — at low OS priority and with one BLAS
thread, so it takes spare cycles rather than the model's — copies the window and runs
:func:`visionops.drift.detect.compare` against the bundle's reference. Runs are spaced out so
their CPU time stays under ``drift.max_cpu_share`` of the machine. The latest verdict is
served at ``GET /drift`` and as Prometheus gauges.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
from loguru import logger
from numpy.typing import NDArray
from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

from visionops.artifacts import LoggedImage
from visionops.config import DriftSettings
from visionops.drift.detect import DriftResult, compare
from visionops.drift.features import image_features
from visionops.drift.samples import Sample, reference_sample
from visionops.errors import DriftError
from visionops.inference.bundle import Bundle
from visionops.inference.runtime import available_cores
from visionops.tasks import task_for

__all__ = ["OnlineDriftMonitor", "monitor_for_serve"]

_LOW_PRIORITY = 10


class OnlineDriftMonitor:
    """Rolling-window drift tests in a background thread.

    Args:
        bundle: The served bundle (its ``reference.npz`` is the baseline).
        settings: ``drift.*`` (``window``, ``every``, α, permutations, minimum sample).
        on_result: Called from the background thread with each new verdict (gauges).
        cores: The cores ``drift.max_cpu_share`` is a share of (None: every core this
            process may use).

    Raises:
        DriftError: The bundle has no held-out reference (serve then runs without it).
    """

    def __init__(
        self,
        bundle: Bundle,
        settings: DriftSettings,
        on_result: Callable[[DriftResult], None] | None = None,
        cores: int | None = None,
    ) -> None:
        self.bundle = bundle
        self.settings = settings
        self.cores = cores or available_cores()
        self.reference = reference_sample(bundle)
        self.task = task_for(bundle.meta)
        self.on_result = on_result
        self._window: deque[tuple[NDArray[np.float32], NDArray[np.float32] | None, LoggedImage]]
        self._window = deque(maxlen=settings.window)
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._since_last = 0
        self._seen = 0
        self.runs = 0
        self.paused_until: float | None = None
        self.latest: dict[str, Any] | None = None
        self.last_error: str | None = None
        self._thread = threading.Thread(target=self._loop, name="drift", daemon=True)

    def start(self) -> None:
        """Start the background thread."""
        self._thread.start()

    @staticmethod
    def import_libraries() -> None:
        """Import SciPy and scikit-learn, which the tests load lazily, on the calling thread.

        Importing scikit-learn sets environment variables (``KMP_DUPLICATE_LIB_OK``, ...): a
        server does it before other threads that read the environment (ONNX Runtime's) run.
        """
        import scipy.linalg.blas
        import scipy.stats  # noqa: F401
        import sklearn.decomposition  # noqa: F401

    def warm_up(self) -> None:
        """Import and run the tests once on the reference itself, before traffic arrives.

        The first run would otherwise import SciPy and scikit-learn (seconds of CPU, holding
        the import lock) in the middle of serving.
        """
        settings = self.settings.model_copy(update={"permutations": 19, "min_samples": 5})
        started = time.perf_counter()
        try:
            with threadpool_limits(limits=1):
                compare(self.reference, self.reference, task=self.task, settings=settings)
        except DriftError as exc:  # a tiny reference: the real runs will say so
            logger.debug("online drift warm-up skipped: {}", exc)
        except Exception:  # never let a drift bug keep the model from serving
            logger.exception("online drift warm-up failed")
        logger.debug("online drift warmed up in {:.2f}s", time.perf_counter() - started)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the background thread (a test in progress finishes first)."""
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def observe(
        self,
        outputs: NDArray[np.float32],
        embeddings: NDArray[np.float32] | None,
        infos: Sequence[LoggedImage],
    ) -> None:
        """Record one batch of predictions (called from the inference thread; cheap).

        Args:
            outputs: ``(B, K)`` task outputs of the batch.
            embeddings: ``(B, D)`` embeddings, or None.
            infos: Each image's statistics (what the prediction log records as ``image``).
        """
        rows = np.asarray(outputs, np.float32).reshape(len(infos), -1)
        with self._lock:
            for i, info in enumerate(infos):
                embedding = None if embeddings is None else np.array(embeddings[i], np.float32)
                self._window.append((rows[i].copy(), embedding, info))
            self._seen += len(infos)
            self._since_last += len(infos)
            due = (
                self._since_last >= self.settings.every
                and len(self._window) >= self.settings.min_samples
            )
            if due:
                self._since_last = 0
        if due:
            self._wake.set()

    def snapshot(self) -> dict[str, Any]:
        """The latest verdict as JSON, or the collecting status before the first one."""
        with self._lock:
            window = len(self._window)
        status = {
            "window": window,
            "window_size": self.settings.window,
            "every": self.settings.every,
            "predictions_seen": self._seen,
            "runs": self.runs,
            "paused_s": round(max(0.0, (self.paused_until or 0.0) - time.monotonic()), 1),
            "reference_split": self.reference.split,
            "error": self.last_error,
        }
        if self.latest is None:
            return {
                "status": "collecting",
                "needed": max(0, self.settings.min_samples - window),
                **status,
            }
        return {"status": "ok", **status, **self.latest}

    def run_now(self) -> DriftResult:
        """Test the current window at once (in the calling thread)."""
        with self._lock:
            items = list(self._window)
        current = self._sample(items)
        started = time.perf_counter()
        result = compare(
            self.reference,
            current,
            task=self.task,
            settings=self.settings,
            channels=self.bundle.meta.input.channels,
        )
        self.runs += 1
        self.latest = {
            "checked_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "seconds": round(time.perf_counter() - started, 3),
            "drifted": result.drifted,
            "p_value": result.p_value,
            "alpha": result.alpha,
            "current_n": result.current_count,
            "reference_n": result.reference_count,
            "what_drifted": result.what_drifted,
            "families": {
                f.name: {"p_value": f.p_value, "drifted": f.drifted} for f in result.families
            },
            "notes": result.notes,
        }
        if self.on_result is not None:
            self.on_result(result)
        return result

    def _sample(
        self, items: list[tuple[NDArray[np.float32], NDArray[np.float32] | None, LoggedImage]]
    ) -> Sample:
        outputs = np.stack([item[0] for item in items]).astype(np.float64)
        embeddings = [item[1] for item in items]
        stacked = (
            np.stack([e for e in embeddings if e is not None])
            if all(e is not None for e in embeddings)
            else None
        )
        return Sample(
            source=f"serve window of {len(items)} predictions",
            count=len(items),
            embeddings=stacked,
            outputs=outputs,
            classes=self.task.predicted_classes(outputs),
            features=image_features([item[2] for item in items]),
        )

    def _loop(self) -> None:
        with contextlib.suppress(AttributeError, OSError):  # not on every OS
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), _LOW_PRIORITY)
        while not self._stop.is_set():
            self._wake.wait()
            self._wake.clear()
            if self._stop.is_set():
                break
            cpu_started = time.thread_time()
            try:
                with threadpool_limits(limits=1):
                    self.run_now()
                self.last_error = None
            except DriftError as exc:
                self.last_error = str(exc)
            except Exception as exc:  # never let a drift bug take the server down
                self.last_error = f"{type(exc).__name__}: {exc}"
                logger.exception("online drift test failed")
            # Keep the tests' share of the machine under drift.max_cpu_share: a run that took
            # t CPU seconds is followed by t / (share x cores) seconds without one; wake-ups in
            # between are served after it, on the then-latest window.
            spent = time.thread_time() - cpu_started
            pause = spent / (self.settings.max_cpu_share * self.cores)
            self.paused_until = time.monotonic() + pause
            self._stop.wait(pause)
            self.paused_until = None


def monitor_for_serve(
    bundle: Bundle, settings: DriftSettings, registry: Any, cores: int | None = None
) -> OnlineDriftMonitor | None:
    """The monitor ``serve`` runs, with its gauges in ``registry``; None when off or impossible.

    Gauges: ``visionops_drift_p_value{family}`` (``overall``, ``embeddings``, ``outputs``,
    ``images``) and ``visionops_drift_detected`` (1 = drift in the latest window).
    """
    from prometheus_client import Gauge

    if not settings.online:
        logger.info("online drift detection is off (drift.online=false)")
        return None
    try:
        monitor = OnlineDriftMonitor(bundle, settings, cores=cores)
    except DriftError as exc:
        logger.warning("online drift detection is off: {}", exc)
        return None
    p_values = Gauge(
        "visionops_drift_p_value",
        "p-value of the latest online drift test, overall and per family.",
        ["family"],
        registry=registry,
    )
    detected = Gauge(
        "visionops_drift_detected",
        "1 when the latest online drift test found drift, else 0.",
        registry=registry,
    )

    def update(result: DriftResult) -> None:
        p_values.labels("overall").set(result.p_value)
        for family in result.families:
            p_values.labels(family.name).set(family.p_value)
        detected.set(1.0 if result.drifted else 0.0)

    monitor.on_result = update
    return monitor
