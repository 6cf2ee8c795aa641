"""Decode images into the prepared dataset's memory-mapped arrays, in parallel.

Each worker process opens the pre-allocated ``.npy`` files once and writes its rows in
place, so decoded pixels never travel through a pipe. Workers die with the process that
started them.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal, NamedTuple

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from visionops._io import file_sha256, pid_alive
from visionops.errors import DataError, ImageError
from visionops.imaging import decode_image, displayed_size, load_image

__all__ = ["DecodeConfig", "DecodeJob", "Decoded", "decode_all", "resize_mask"]


@dataclass(frozen=True)
class DecodeConfig:
    """Where decoded pixels go and how images are decoded (the same for every job).

    Attributes:
        images_path: The pre-allocated ``(N, size, size, channels)`` uint8 ``.npy``.
        masks_path: The pre-allocated ``(N, size, size)`` uint8 ``.npy`` (anomaly), or None.
        size: Side of the stored square images.
        channels: 1 or 3.
        policy: ``crop`` or ``letterbox``.
        max_pixels: Images with more pixels are refused (decompression bombs).
    """

    images_path: str
    masks_path: str | None
    size: int
    channels: Literal[1, 3]
    policy: Literal["crop", "letterbox"]
    max_pixels: int


class DecodeJob(NamedTuple):
    """One image to decode into row ``slot`` (``sha256`` when already known)."""

    slot: int
    path: str
    mask: str | None
    sha256: str | None


class Decoded(NamedTuple):
    """The outcome of a job: the content hash and displayed size, or the rejection reason."""

    slot: int
    sha256: str | None
    reason: str | None
    size: tuple[int, int] | None = None


def _image_reason(exc: ImageError, path: Path) -> str:
    """A rejection reason ``"<kind>: <detail>"`` from a decode error."""
    detail = str(exc).removeprefix(f"{path.name}: ").removeprefix("cannot decode image: ")
    lower = detail.lower()
    if "empty" in lower:
        kind = "empty file"
    elif "not an image" in lower:
        kind = "not an image"
    elif "pixels" in lower or "bomb" in lower:
        kind = "too large"
    elif "truncated" in lower:
        kind = "truncated image"
    else:
        kind = "corrupt image"
    if kind == "empty file":
        detail = "0 bytes"
    elif detail.lower().startswith(kind):
        # "not an image (unknown file signature) — use ..." would say its kind twice.
        rest = detail[len(kind) :].strip()
        if rest.startswith("(") and ")" in rest:
            rest = rest[1 : rest.index(")")] + rest[rest.index(")") + 1 :]
        detail = rest or detail
    return f"{kind}: {detail}"


class _Decoder:
    """Decodes jobs into the shared memory-mapped arrays (one per worker process)."""

    def __init__(self, config: DecodeConfig) -> None:
        self.config = config
        self.images = np.load(config.images_path, mmap_mode="r+")
        self.masks = np.load(config.masks_path, mmap_mode="r+") if config.masks_path else None

    def decode(self, jobs: Sequence[DecodeJob]) -> list[Decoded]:
        """Decode each job into its row."""
        results = []
        for job in jobs:
            results.append(self._one(job))
        return results

    def _one(self, job: DecodeJob) -> Decoded:
        config = self.config
        path = Path(job.path)
        try:
            pixels = load_image(
                path,
                size=config.size,
                channels=config.channels,
                policy=config.policy,
                max_pixels=config.max_pixels,
            )
            sha = job.sha256 or file_sha256(path)
            # The original size is a drift statistic (serve logs it for every upload).
            with Image.open(path) as opened:
                size = displayed_size(opened)
        except ImageError as exc:
            return Decoded(job.slot, None, _image_reason(exc, path))
        except OSError as exc:
            return Decoded(job.slot, None, f"unreadable file: {exc.strerror or exc}")
        if self.masks is not None:
            if job.mask is None:
                self.masks[job.slot] = 0
            else:
                try:
                    mask_image = decode_image(
                        Path(job.mask), channels=1, max_pixels=config.max_pixels
                    )
                except ImageError as exc:
                    return Decoded(job.slot, None, f"bad mask: {exc}")
                if mask_image.size != size:
                    # A mask of another size would be resized onto the wrong pixels.
                    return Decoded(
                        job.slot,
                        None,
                        f"bad mask: {Path(job.mask).name} is {mask_image.width}x"
                        f"{mask_image.height}, its image {size[0]}x{size[1]} — use the mask"
                        " made for this image",
                    )
                self.masks[job.slot] = resize_mask(mask_image, config.size, config.policy)
        self.images[job.slot] = pixels
        return Decoded(job.slot, sha, None, size)


def resize_mask(
    mask: Image.Image, size: int, policy: Literal["crop", "letterbox"] = "crop"
) -> NDArray[np.uint8]:
    """A ground-truth mask on the same square as its image, still binary.

    Any non-zero pixel is a defect; the mask is then resized with nearest-neighbour sampling
    on the same crop or letterbox geometry as :func:`visionops.imaging.resize_image`.
    Bilinear resampling with a >= 128 threshold erased thin defects: an anti-aliased line
    1-2 px wide averages below half on a reduced grid, and its pixels vanished from the
    ground truth (anomalib's MVTec reader also binarises first and resizes with nearest).

    Args:
        mask: The decoded mask, mode "L", the size of its image.
        size: Output side in pixels.
        policy: ``crop`` or ``letterbox``.

    Returns:
        A ``(size, size)`` uint8 array of 0 and 255.
    """
    binary = mask.point(lambda value: 255 if value > 0 else 0)
    width, height = binary.size
    if policy == "crop":
        side = min(width, height)
        left = (width - side) / 2
        top = (height - side) / 2
        out = binary.resize(
            (size, size), Image.Resampling.NEAREST, box=(left, top, left + side, top + side)
        )
    else:
        scale = size / max(width, height)
        new_w = max(1, round(width * scale))
        new_h = max(1, round(height * scale))
        out = Image.new("L", (size, size), 0)
        out.paste(
            binary.resize((new_w, new_h), Image.Resampling.NEAREST),
            ((size - new_w) // 2, (size - new_h) // 2),
        )
    return np.asarray(out, dtype=np.uint8).copy()


_WORKER: _Decoder | None = None
_PR_SET_PDEATHSIG: Final = 1
_WATCH_SECONDS: Final = 1.0


def _die_with_parent(owner: int) -> None:
    """Make this worker exit when the process that made the pool dies, however it dies.

    ``kill -9`` of the parent runs no cleanup, so nothing would tell the workers to stop:
    they would wait for work forever under PID 1, holding the temporary output open. On Linux
    the kernel kills the worker when its parent dies (``PR_SET_PDEATHSIG``); everywhere a
    daemon thread watches the parent PID as well, which also covers a forkserver parent.
    """
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    parent = os.getppid()
    # The parent may have died before prctl took effect; then no signal will ever come.
    if not pid_alive(owner):
        os._exit(1)

    def watch() -> None:
        while True:
            time.sleep(_WATCH_SECONDS)
            if os.getppid() != parent or not pid_alive(owner):
                os._exit(1)

    threading.Thread(target=watch, name="parent-watchdog", daemon=True).start()


def _init_worker(config: DecodeConfig, owner: int) -> None:
    _die_with_parent(owner)
    # The parent handles Ctrl-C (cancels the queue and cleans up); workers just finish.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    global _WORKER
    _WORKER = _Decoder(config)


def _decode_in_worker(jobs: list[DecodeJob]) -> list[Decoded]:
    assert _WORKER is not None, "worker not initialised"
    return _WORKER.decode(jobs)


def decode_all(
    jobs: list[DecodeJob],
    config: DecodeConfig,
    workers: int,
    advance: Callable[[int], None],
) -> list[Decoded]:
    """Decode every job, in a process pool when ``workers > 1``.

    Workers die with this process (see :func:`_die_with_parent`), so a killed preprocess
    leaves no orphan decoding for nobody.

    Args:
        jobs: The images to decode.
        config: Where and how to decode them.
        workers: Processes to use (1: decode in this process).
        advance: Called with the number of images done after each chunk.

    Returns:
        One result per job, in slot order.

    Raises:
        DataError: A worker died (usually out of memory).
    """
    chunk = max(1, min(64, len(jobs) // max(1, workers * 4)))
    chunks = [jobs[i : i + chunk] for i in range(0, len(jobs), chunk)]
    workers = min(workers, len(chunks))
    results: list[Decoded] = []
    if workers <= 1:
        decoder = _Decoder(config)
        for part in chunks:
            results.extend(decoder.decode(part))
            advance(len(part))
        del decoder
    else:
        executor = ProcessPoolExecutor(
            max_workers=workers, initializer=_init_worker, initargs=(config, os.getpid())
        )
        try:
            futures = [executor.submit(_decode_in_worker, part) for part in chunks]
            for future in as_completed(futures):
                done = future.result()
                results.extend(done)
                advance(len(done))
        except BrokenProcessPool as exc:
            executor.shutdown(wait=True, cancel_futures=True)
            raise DataError(
                f"a decoding worker died ({exc}); usually out of memory — retry with fewer"
                " processes, e.g. data.workers=1"
            ) from None
        except BaseException:
            executor.shutdown(wait=True, cancel_futures=True)
            raise
        executor.shutdown(wait=True)
    results.sort(key=lambda r: r.slot)
    return results
