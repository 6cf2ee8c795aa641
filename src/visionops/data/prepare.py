"""``visionops data preprocess``: decode a raw dataset once into a prepared dataset.

The raw folder's layout is read by :mod:`visionops.data.layouts`; every listed image is
decoded and resized exactly once by :func:`visionops.imaging.load_image` (the function
``serve`` uses too) in a pool of worker processes that write straight into a memory-mapped
``images.npy`` in a temporary folder. Splits are kept from the source or made (seeded,
stratified), exact duplicates are kept out of two splits at once, statistics come from the
train split, and the finished folder is moved into place atomically. See
``docs/artifacts.md`` for the format.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import os
import signal
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Literal, NamedTuple

import numpy as np
from loguru import logger
from numpy.typing import NDArray

from visionops import __version__
from visionops._io import atomic_dir, file_sha256, read_json
from visionops.config import Settings
from visionops.data.layouts import (
    SOURCE_FILE,
    SPLIT_NAMES,
    RawItem,
    RawListing,
    Rejection,
    count_reasons,
    list_files,
    detect,
)
from visionops.data.prepared import (
    PREPARED_KIND,
    SCHEMA_VERSION,
    PreparedDataset,
    is_prepared,
)
from visionops.errors import (
    ArtifactError,
    DataError,
    DatasetNotFoundError,
    ImageError,
    LayoutError,
)
from visionops.imaging import decode_image, load_image, resize_image
from visionops.progress import NULL_PROGRESS, ProgressReporter

__all__ = [
    "PREPROCESS_VERSION",
    "PrepareResult",
    "dataset_info",
    "fingerprint_folder",
    "prepare_dataset",
    "resolve_raw",
]

PREPROCESS_VERSION: Final = 1
"""Bump when decoding, resizing, splitting or the layout readers change what is written, so
that re-running preprocess on unchanged data does the work again."""

_DECODE_FILE: Final = ".images.decoding.npy"
_MASK_FILE: Final = ".masks.decoding.npy"
_LOG_FORMAT: Final = "{time:YYYY-MM-DD HH:mm:ss.SSS} | {level:<7} | {name}:{line} | {message}"
_COPY_ROWS: Final = 512


@dataclass
class PrepareResult:
    """What :func:`prepare_dataset` did.

    Attributes:
        path: The prepared dataset folder.
        manifest: Its manifest.
        skipped: True when an identical prepared dataset already existed (nothing done).
        seconds: Wall time of the run.
        images_per_s: Candidate images decoded per second of wall time (0 when skipped).
        rejected_by_reason: Rejected files counted by reason category, most common first.
        notes: How the raw layout was read.
    """

    path: Path
    manifest: dict[str, Any]
    skipped: bool
    seconds: float
    images_per_s: float
    rejected_by_reason: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- source


def resolve_raw(raw: Path, settings: Settings) -> Path:
    """The raw folder ``raw`` names: the path itself, or ``<raw_root>/<raw>`` for a bare name.

    Raises:
        DatasetNotFoundError: Neither exists.
    """
    if raw.exists():
        return raw
    under_root = settings.data.raw_root / raw
    if len(raw.parts) == 1 and under_root.exists():
        return under_root
    raise DatasetNotFoundError(
        f"no raw dataset at {raw} — check the path or fetch one first, e.g."
        f" `visionops data fetch demo:shapes` then `visionops data preprocess"
        f" {settings.data.raw_root / 'shapes'}`"
    )


def fingerprint_folder(
    root: Path, files: Sequence[str] | None = None
) -> tuple[str, dict[str, str], int, int]:
    """Fingerprint a folder: SHA-256 over sorted (relative path, size, content SHA-256).

    Files are hashed on threads (hashlib releases the GIL on large buffers).

    Args:
        root: The folder.
        files: Relative paths to include (default: :func:`~visionops.data.layouts.list_files`).

    Returns:
        ``(fingerprint, {relative path: sha256}, file count, total bytes)``.
    """
    names = list(files) if files is not None else list_files(root)
    with ThreadPoolExecutor(max_workers=min(8, 2 * (os.cpu_count() or 1))) as pool:
        hashes = list(pool.map(lambda rel: file_sha256(root / rel), names))
    digest = hashlib.sha256()
    total = 0
    for rel, sha in zip(names, hashes, strict=True):
        size = (root / rel).stat().st_size
        total += size
        digest.update(f"{rel}\0{size}\0{sha}\n".encode())
    return digest.hexdigest(), dict(zip(names, hashes, strict=True)), len(names), total


def _source_info(raw: Path) -> tuple[dict[str, Any], dict[str, str]]:
    """The raw ``source.json``, or a synthesized one with a computed fingerprint.

    A ``source.json`` is trusted only while the folder still has the file count and size it
    records (a cheap check that catches files added or removed since the fetch).
    """
    files = list_files(raw)
    source_path = raw / SOURCE_FILE
    if source_path.is_file():
        try:
            source = read_json(source_path)
        except (OSError, ValueError):
            source = None
        if isinstance(source, dict) and isinstance(source.get("fingerprint"), str):
            count = len(files)
            total = sum((raw / rel).stat().st_size for rel in files)
            own = source_path.stat().st_size
            if source.get("file_count") in (count, count + 1) and source.get("bytes") in (
                total,
                total + own,
            ):
                return source, {}
            logger.warning(
                "{} does not match the files on disk ({} files, {} bytes; it records {} and"
                " {}) — fingerprinting the files instead",
                source_path,
                count,
                total,
                source.get("file_count"),
                source.get("bytes"),
            )
        else:
            logger.warning("{} is unreadable — fingerprinting the files instead", source_path)
    fingerprint, hashes, count, total = fingerprint_folder(raw, files)
    source = {
        "schema_version": 1,
        "kind": "visionops.raw",
        "name": raw.resolve().name,
        "source": f"folder:{raw.resolve()}",
        "version": None,
        "file_count": count,
        "bytes": total,
        "fingerprint": fingerprint,
        "fetched_at": None,
        "visionops_version": __version__,
    }
    return source, hashes


def _params(settings: Settings) -> dict[str, Any]:
    data = settings.data
    return {
        "image_size": data.image_size,
        "channels": data.channels,
        "resize": data.resize,
        "val_ratio": data.val_ratio,
        "test_ratio": data.test_ratio,
        "seed": data.seed,
        "task": data.task,
        "camera": data.camera,
    }


def _fingerprint(source_fingerprint: str, params: dict[str, Any], max_pixels: int) -> str:
    payload = {
        "source": source_fingerprint,
        "params": params,
        "max_image_pixels": max_pixels,
        "preprocess_version": PREPROCESS_VERSION,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _existing_manifest(folder: Path) -> dict[str, Any] | None:
    try:
        manifest = read_json(folder / "manifest.json")
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict) or manifest.get("kind") != PREPARED_KIND:
        return None
    needed = ["images.npy", "targets.npy", "splits.npy", "items.csv", "rejected.csv"]
    if manifest.get("task") == "anomaly":
        needed.append("masks.npy")
    return manifest if all((folder / f).is_file() for f in needed) else None


# --------------------------------------------------------------------------- decoding


@dataclass(frozen=True)
class _DecodeConfig:
    images_path: str
    masks_path: str | None
    size: int
    channels: Literal[1, 3]
    policy: Literal["crop", "letterbox"]
    max_pixels: int


class _Job(NamedTuple):
    slot: int
    path: str
    mask: str | None
    sha256: str | None


class _Decoded(NamedTuple):
    slot: int
    sha256: str | None
    reason: str | None


def _image_reason(exc: ImageError, path: Path) -> str:
    """A rejection reason ``"<kind>: <detail>"`` from a decode error."""
    detail = str(exc).removeprefix(f"{path.name}: ")
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
    return f"{kind}: {detail}"


class _Decoder:
    """Decodes jobs into the shared memory-mapped arrays (one per worker process)."""

    def __init__(self, config: _DecodeConfig) -> None:
        self.config = config
        self.images = np.load(config.images_path, mmap_mode="r+")
        self.masks = np.load(config.masks_path, mmap_mode="r+") if config.masks_path else None

    def decode(self, jobs: Sequence[_Job]) -> list[_Decoded]:
        results = []
        for job in jobs:
            results.append(self._one(job))
        return results

    def _one(self, job: _Job) -> _Decoded:
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
        except ImageError as exc:
            return _Decoded(job.slot, None, _image_reason(exc, path))
        except OSError as exc:
            return _Decoded(job.slot, None, f"unreadable file: {exc.strerror or exc}")
        if self.masks is not None:
            if job.mask is None:
                self.masks[job.slot] = 0
            else:
                try:
                    mask_image = decode_image(
                        Path(job.mask), channels=1, max_pixels=config.max_pixels
                    )
                except ImageError as exc:
                    return _Decoded(job.slot, None, f"bad mask: {exc}")
                mask = resize_image(mask_image, config.size, config.policy)[:, :, 0]
                self.masks[job.slot] = np.where(mask >= 128, 255, 0).astype(np.uint8)
        self.images[job.slot] = pixels
        return _Decoded(job.slot, sha, None)


_WORKER: _Decoder | None = None


def _init_worker(config: _DecodeConfig) -> None:
    # The parent handles Ctrl-C (cancels the queue and cleans up); workers just finish.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    global _WORKER
    _WORKER = _Decoder(config)


def _decode_in_worker(jobs: list[_Job]) -> list[_Decoded]:
    assert _WORKER is not None, "worker not initialised"
    return _WORKER.decode(jobs)


def _decode_all(
    jobs: list[_Job],
    config: _DecodeConfig,
    workers: int,
    advance: Callable[[int], None],
) -> list[_Decoded]:
    """Decode every job, in a process pool when ``workers > 1``; results by job index."""
    chunk = max(1, min(64, len(jobs) // max(1, workers * 4)))
    chunks = [jobs[i : i + chunk] for i in range(0, len(jobs), chunk)]
    workers = min(workers, len(chunks))
    results: list[_Decoded] = []
    if workers <= 1:
        decoder = _Decoder(config)
        for part in chunks:
            results.extend(decoder.decode(part))
            advance(len(part))
        del decoder
    else:
        executor = ProcessPoolExecutor(
            max_workers=workers, initializer=_init_worker, initargs=(config,)
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


# --------------------------------------------------------------------------- splitting


def _rare_merged(strata: Sequence[str]) -> list[str]:
    """Merge strata too small to stratify (one member) so scikit-learn can still stratify."""
    counts = Counter(strata)
    merged = [s if counts[s] >= 2 else "\0rare" for s in strata]
    merged_counts = Counter(merged)
    if merged_counts.get("\0rare") == 1:
        common = max((s for s in merged_counts if s != "\0rare"), key=merged_counts.__getitem__)
        merged = [common if s == "\0rare" else s for s in merged]
    return merged


def _take(
    members: list[int], strata: Sequence[str], fraction: float, seed: int
) -> tuple[list[int], list[int]]:
    """Split ``members`` into (kept, taken) with ``round(fraction * n)`` taken, stratified.

    ``strata[i]`` is the stratum of ``members[i]``; falls back to an unstratified shuffle
    where a stratified split is impossible (e.g. fewer taken items than strata).
    """
    from sklearn.model_selection import train_test_split

    count = round(len(members) * fraction)
    if count <= 0 or len(members) < 2:
        return list(members), []
    if count >= len(members):
        return [], list(members)
    labels = _rare_merged(strata)
    try:
        kept, taken = train_test_split(
            members, test_size=count, random_state=seed, shuffle=True, stratify=labels
        )
    except ValueError:
        kept, taken = train_test_split(members, test_size=count, random_state=seed, shuffle=True)
    return sorted(int(i) for i in kept), sorted(int(i) for i in taken)


@dataclass
class _SplitPlan:
    splits: NDArray[np.uint8]  # per usable item
    dropped: dict[int, int]  # usable position -> position of the copy that was kept
    from_source: bool


def _regression_strata(targets: NDArray[np.float32]) -> list[str]:
    """Quantile bins of the first target, so every split sees small and large values."""
    bins = max(1, min(5, len(targets) // 10))
    if bins == 1:
        return [""] * len(targets)
    edges = np.quantile(targets[:, 0], np.linspace(0, 1, bins + 1)[1:-1])
    return [str(int(b)) for b in np.digitize(targets[:, 0], edges)]


def _plan_splits(
    listing: RawListing,
    usable: list[RawItem],
    hashes: list[str],
    strata: list[str],
    settings: Settings,
) -> _SplitPlan:
    data = settings.data
    groups: dict[str, list[int]] = defaultdict(list)
    for position, sha in enumerate(hashes):
        groups[sha].append(position)
    splits = np.zeros(len(usable), dtype=np.uint8)
    dropped: dict[int, int] = {}
    from_source = listing.splits_from_source

    def split_groups(members: list[int], fraction: float, seed: int) -> tuple[list[int], list[int]]:
        """Split whole duplicate groups, so identical images stay in one split."""
        leaders = sorted({groups[hashes[m]][0] for m in members})
        kept, taken = _take(leaders, [strata[p] for p in leaders], fraction, seed)
        member_set = set(members)

        def expand(chosen: list[int]) -> list[int]:
            return sorted(p for lead in chosen for p in groups[hashes[lead]] if p in member_set)

        return expand(kept), expand(taken)

    if not from_source:
        everything = list(range(len(usable)))
        rest, test = split_groups(everything, data.test_ratio, data.seed)
        rest_share = 1.0 - data.test_ratio
        _, val = split_groups(rest, data.val_ratio / rest_share, data.seed)
        splits[val] = 1
        splits[test] = 2
        return _SplitPlan(splits, dropped, False)

    for position, item in enumerate(usable):
        splits[position] = item.split if item.split is not None else 0
    # A file that is in two splits at once leaks: keep the copy in the earliest split.
    for members in groups.values():
        first = min(members, key=lambda p: (splits[p], p))
        for position in members:
            if splits[position] > splits[first]:
                dropped[position] = first
    present = {int(s) for p, s in enumerate(splits) if p not in dropped}
    if 1 not in present and data.val_ratio > 0:
        source = listing.carve_val_from
        if source == 2:
            total = data.val_ratio + data.test_ratio
            fraction = data.val_ratio / total if total else 0.5
        else:
            fraction = data.val_ratio
        members = [p for p in range(len(usable)) if splits[p] == source and p not in dropped]
        _, val = split_groups(members, fraction, data.seed)
        splits[val] = 1
    return _SplitPlan(splits, dropped, True)


# --------------------------------------------------------------------------- writing


def _target_array(
    listing: RawListing, items: Sequence[RawItem]
) -> NDArray[np.int64] | NDArray[np.float32]:
    if listing.task in ("classification", "anomaly"):
        return np.array([int(item.target) for item in items], dtype=np.int64)  # type: ignore[arg-type]
    width = len(listing.class_names or listing.target_names or [])
    values = [item.target for item in items]
    return np.array(values, dtype=np.float32).reshape(len(items), width)


def _target_text(listing: RawListing, target: NDArray[Any]) -> str:
    if listing.task in ("classification", "anomaly"):
        return (listing.class_names or [])[int(target)]
    if listing.task == "multilabel":
        names = listing.class_names or []
        return ";".join(name for name, flag in zip(names, target, strict=True) if flag >= 0.5)
    return ";".join(format(float(value), ".10g") for value in target)


def _class_counts(
    listing: RawListing, targets: NDArray[Any], splits: NDArray[np.uint8]
) -> dict[str, dict[str, int]]:
    counts: dict[str, dict[str, int]] = {}
    names = listing.class_names or []
    for code, split in enumerate(SPLIT_NAMES):
        chosen = targets[splits == code]
        if listing.task in ("classification", "anomaly"):
            tally = np.bincount(chosen.astype(np.int64), minlength=len(names))
            counts[split] = {name: int(tally[i]) for i, name in enumerate(names)}
        elif listing.task == "multilabel":
            positives = (chosen >= 0.5).sum(axis=0) if len(chosen) else np.zeros(len(names))
            counts[split] = {name: int(positives[i]) for i, name in enumerate(names)}
        else:
            counts[split] = {}
    return counts


def _compact(
    source: Path, destination: Path, keep: NDArray[np.int64], shape_tail: tuple[int, ...]
) -> None:
    """Copy the rows ``keep`` of the .npy ``source`` into a new .npy ``destination``."""
    full = np.load(source, mmap_mode="r")
    out = np.lib.format.open_memmap(
        destination, mode="w+", dtype=np.uint8, shape=(len(keep), *shape_tail)
    )
    for start in range(0, len(keep), _COPY_ROWS):
        rows = keep[start : start + _COPY_ROWS]
        out[start : start + len(rows)] = full[rows]
    out.flush()
    del out, full
    source.unlink()


def _channel_statistics(
    images_path: Path, rows: NDArray[np.intp]
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Per-channel mean and standard deviation (0..1 scale) of the given rows of images.npy.

    Sums are exact integers, so the result does not depend on chunking or worker count.
    """
    images = np.load(images_path, mmap_mode="r")
    channels = images.shape[-1]
    total = np.zeros(channels, dtype=np.uint64)
    squares = np.zeros(channels, dtype=np.uint64)
    per_chunk = max(1, (1 << 24) // int(np.prod(images.shape[1:])))
    for start in range(0, len(rows), per_chunk):
        flat = np.asarray(images[rows[start : start + per_chunk]]).reshape(-1, channels)
        total += flat.sum(axis=0, dtype=np.uint64)
        squares += np.square(flat, dtype=np.uint32).sum(axis=0, dtype=np.uint64)
    count = max(1, len(rows) * images.shape[1] * images.shape[2])
    mean = total.astype(np.float64) / count
    variance = np.maximum(squares.astype(np.float64) / count - mean**2, 0.0)
    return mean / 255.0, np.sqrt(variance) / 255.0


def _write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    path.write_text(buffer.getvalue(), encoding="utf-8")


def _check_training_data(
    listing: RawListing, targets: NDArray[Any], splits: NDArray[np.uint8], raw: Path
) -> None:
    train = targets[splits == 0]
    if len(train) == 0:
        raise DataError(
            f"{raw}: no image is left in the train split — add training images (or, for"
            " split folders, put some in train/)"
        )
    names = listing.class_names or []
    if listing.task == "classification" and len(names) < 2:
        raise DataError(
            f"{raw}: only one class ({', '.join(names)}) — classification needs at least two"
            " class folders; for good-versus-defect data name the folders good/ and"
            " <defect>/ and pass --task anomaly"
        )
    if listing.task == "classification":
        missing = [n for i, n in enumerate(names) if not np.any(train == i)]
        if missing:
            raise DataError(
                f"{raw}: class {', '.join(repr(m) for m in missing[:5])} has no usable training"
                " image — add images of it to the train split, or remove the class"
            )
    elif listing.task == "multilabel":
        missing = [n for i, n in enumerate(names) if not np.any(train[:, i] >= 0.5)]
        if missing:
            raise DataError(
                f"{raw}: label {', '.join(repr(m) for m in missing[:5])} is on no usable"
                " training image — add images with it, or drop the label"
            )
    elif listing.task == "anomaly" and not np.any(train == 0):
        raise DataError(
            f"{raw}: no good image in the train split — anomaly detection learns from good"
            " images (MVTec: train/good/)"
        )


def _rejected_counts(path: Path) -> dict[str, int]:
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
    except OSError:
        return {}
    rejected = (Rejection(row.get("path", ""), row.get("reason", "")) for row in rows)
    return dict(count_reasons(rejected).most_common())


def _no_usable(raw: Path, rejected: Sequence[Rejection], candidates: int) -> DataError:
    reasons = count_reasons(rejected).most_common(3)
    why = ", ".join(f"{count} {kind}" for kind, count in reasons) or "no image files"
    example = f"; e.g. {rejected[0].path}: {rejected[0].reason}" if rejected else ""
    return DataError(
        f"{raw}: no usable image among {candidates} candidates (rejected: {why}{example}) —"
        " fix or replace the files (-vv lists every skipped file)"
    )


# --------------------------------------------------------------------------- main entry


def prepare_dataset(
    raw: Path,
    settings: Settings,
    *,
    force: bool = False,
    progress: ProgressReporter = NULL_PROGRESS,
) -> PrepareResult:
    """Decode a raw dataset folder into ``<prepared_root>/<raw folder name>``.

    Args:
        raw: The raw dataset folder (or a bare name under ``data.raw_root``).
        settings: Resolved settings; ``settings.data`` holds every preprocessing parameter.
        force: Redo the work even when an identical prepared dataset exists.
        progress: Receives one bar over the images.

    Returns:
        What was done and where.

    Raises:
        DatasetNotFoundError: ``raw`` does not exist.
        LayoutError: The folder is empty, its layout is not recognised, or it cannot
            provide the requested task.
        DataError: No usable image, or a class with no training image.
        ArtifactError: The output folder exists and is not a prepared dataset.

    Examples:
        >>> result = prepare_dataset(Path("data/raw/shapes"), load_settings())  # doctest: +SKIP
        >>> result.manifest["counts"]
        {'train': 448, 'val': 96, 'test': 96, 'rejected': 0, 'duplicates_across_splits': 0}
    """
    started = time.perf_counter()
    data = settings.data
    raw = resolve_raw(Path(raw), settings)
    name = raw.resolve().name
    final = data.prepared_root / name

    lines: list[str] = []
    sink = logger.add(lines.append, level="DEBUG", format=_LOG_FORMAT, colorize=False)
    try:
        source, known_hashes = _source_info(raw)
        params = _params(settings)
        fingerprint = _fingerprint(source["fingerprint"], params, data.max_image_pixels)
        existing = _existing_manifest(final)
        if not force and existing is not None and existing.get("fingerprint") == fingerprint:
            logger.info(
                "{} is already prepared from the same files with the same parameters —"
                " nothing to do (pass --force to redo it)",
                final,
            )
            return PrepareResult(
                final,
                existing,
                skipped=True,
                seconds=time.perf_counter() - started,
                images_per_s=0.0,
                rejected_by_reason=_rejected_counts(final / "rejected.csv"),
            )
        if final.exists() and existing is None and not is_prepared(final) and any(final.iterdir()):
            raise ArtifactError(
                f"{final} exists and is not a prepared dataset; preprocess will not overwrite"
                " it — move it away or set data.prepared_root to another folder"
            )

        listing = detect(raw, task=data.task, camera=data.camera)
        for note in listing.notes:
            logger.info(note)
        logger.info(
            "{}: {} layout, task {}, {} candidate images",
            raw,
            listing.layout,
            listing.task,
            len(listing.items),
        )
        if not listing.items:
            raise _no_usable(raw, listing.rejected, 0)
        with atomic_dir(final) as tmp:
            manifest, rejected = _build(
                tmp, raw, name, listing, settings, source, fingerprint, known_hashes, progress
            )
            seconds = time.perf_counter() - started
            manifest_path = tmp / "manifest.json"
            manifest_path.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
            logger.info(
                "prepared {} images in {:.1f} s ({:.0f} images/s) → {}",
                len(listing.items),
                seconds,
                len(listing.items) / max(seconds, 1e-9),
                final,
            )
            (tmp / "preprocess.log").write_text("".join(lines), encoding="utf-8")
    finally:
        logger.remove(sink)
    return PrepareResult(
        path=final,
        manifest=manifest,
        skipped=False,
        seconds=seconds,
        images_per_s=len(listing.items) / max(seconds, 1e-9),
        rejected_by_reason=dict(count_reasons(rejected).most_common()),
        notes=listing.notes,
    )


def _build(
    tmp: Path,
    raw: Path,
    name: str,
    listing: RawListing,
    settings: Settings,
    source: dict[str, Any],
    fingerprint: str,
    known_hashes: dict[str, str],
    progress: ProgressReporter,
) -> tuple[dict[str, Any], list[Rejection]]:
    """Decode, split, check and write everything but the manifest and log into ``tmp``."""
    data = settings.data
    items = listing.items
    size, channels = data.image_size, data.channels
    anomaly = listing.task == "anomaly"
    images_path = tmp / _DECODE_FILE
    masks_path = tmp / _MASK_FILE if anomaly else None
    np.lib.format.open_memmap(
        images_path, mode="w+", dtype=np.uint8, shape=(len(items), size, size, channels)
    ).flush()
    if masks_path is not None:
        np.lib.format.open_memmap(
            masks_path, mode="w+", dtype=np.uint8, shape=(len(items), size, size)
        ).flush()
    config = _DecodeConfig(
        images_path=str(images_path),
        masks_path=str(masks_path) if masks_path else None,
        size=size,
        channels=channels,
        policy=data.resize,
        max_pixels=data.max_image_pixels,
    )
    jobs = [
        _Job(
            index,
            str(raw / item.path),
            str(raw / item.mask) if item.mask else None,
            known_hashes.get(item.path),
        )
        for index, item in enumerate(items)
    ]
    workers = data.workers or os.cpu_count() or 1
    bar = progress.start(f"preprocess {name}", total=len(jobs))
    try:
        decoded = _decode_all(jobs, config, workers, lambda n: bar.advance(n))
    finally:
        bar.close()

    rejected = list(listing.rejected)
    good = [r for r in decoded if r.reason is None]
    for result in decoded:
        if result.reason is not None:
            rejected.append(Rejection(items[result.slot].path, result.reason))
    for rejection in rejected:
        logger.debug("skipped {}: {}", rejection.path, rejection.reason)
    if not good:
        raise _no_usable(raw, rejected, len(items))
    usable = [items[r.slot] for r in good]
    hashes = [r.sha256 or "" for r in good]
    targets_all = _target_array(listing, usable)
    strata = (
        _regression_strata(targets_all)  # type: ignore[arg-type]
        if listing.task == "regression"
        else [item.stratum for item in usable]
    )
    plan = _plan_splits(listing, usable, hashes, strata, settings)

    for position, kept in sorted(plan.dropped.items()):
        rejected.append(
            Rejection(
                usable[position].path,
                f"duplicate across splits: same content as {usable[kept].path} in"
                f" {SPLIT_NAMES[plan.splits[kept]]}; dropped from"
                f" {SPLIT_NAMES[plan.splits[position]]} so the splits do not leak",
            )
        )
    if plan.dropped:
        position, kept = next(iter(sorted(plan.dropped.items())))
        logger.warning(
            "{} exact duplicate images across splits (e.g. {} = {}); kept the copy in the"
            " earlier split and dropped the other",
            len(plan.dropped),
            usable[position].path,
            usable[kept].path,
        )
    duplicates_within = len(hashes) - len(set(hashes)) - len(plan.dropped)
    if duplicates_within > 0:
        logger.info("{} exact duplicate images kept together in one split", duplicates_within)

    keep_positions = [p for p in range(len(usable)) if p not in plan.dropped]
    kept_items = [usable[p] for p in keep_positions]
    targets = targets_all[keep_positions]
    splits = plan.splits[keep_positions]
    _check_training_data(listing, targets, splits, raw)

    keep_index = np.array([good[p].slot for p in keep_positions], dtype=np.int64)
    tail = (size, size, channels)
    if len(keep_index) == len(items):
        os.replace(images_path, tmp / "images.npy")
        if masks_path is not None:
            os.replace(masks_path, tmp / "masks.npy")
    else:
        _compact(images_path, tmp / "images.npy", keep_index, tail)
        if masks_path is not None:
            _compact(masks_path, tmp / "masks.npy", keep_index, (size, size))
    np.save(tmp / "targets.npy", targets)
    np.save(tmp / "splits.npy", splits)

    mean, std = _channel_statistics(tmp / "images.npy", np.flatnonzero(splits == 0))

    target_mean: list[float] | None = None
    target_std: list[float] | None = None
    if listing.task == "regression":
        train_targets = targets[splits == 0].astype(np.float64)
        spread = train_targets.std(axis=0)
        constant = [n for n, s in zip(listing.target_names or [], spread, strict=True) if s == 0]
        if constant:
            # A constant target would divide by zero when training normalises it.
            logger.warning("target {} is constant in train; its std is stored as 1", constant)
        target_mean = [float(v) for v in train_targets.mean(axis=0)]
        target_std = [float(v) if v > 0 else 1.0 for v in spread]

    _write_csv(
        tmp / "items.csv",
        ["index", "path", "split", "target", "sha256"],
        [
            (i, item.path, SPLIT_NAMES[splits[i]], _target_text(listing, targets[i]), hashes[p])
            for i, (item, p) in enumerate(zip(kept_items, keep_positions, strict=True))
        ],
    )
    _write_csv(tmp / "rejected.csv", ["path", "reason"], [(r.path, r.reason) for r in rejected])
    if rejected:
        top = ", ".join(f"{n} {kind}" for kind, n in count_reasons(rejected).most_common(3))
        logger.warning("skipped {} files ({}) — listed in rejected.csv", len(rejected), top)

    counts = {
        split: int(np.count_nonzero(splits == code)) for code, split in enumerate(SPLIT_NAMES)
    }
    manifest: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "kind": PREPARED_KIND,
        "name": name,
        "task": listing.task,
        "class_names": listing.class_names,
        "target_names": listing.target_names,
        "target_units": listing.target_units,
        "target_mean": target_mean,
        "target_std": target_std,
        "image_size": size,
        "channels": channels,
        "resize": data.resize,
        "mean": [round(float(v), 6) for v in mean],
        "std": [round(float(v), 6) for v in std],
        "counts": {
            **counts,
            "rejected": len(rejected),
            "duplicates_across_splits": len(plan.dropped),
        },
        "class_counts": _class_counts(listing, targets, splits),
        "splits_from_source": plan.from_source,
        "source": source,
        "params": _params(settings),
        "fingerprint": fingerprint,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "visionops_version": __version__,
    }
    return manifest, rejected


# --------------------------------------------------------------------------- info


def dataset_info(path: Path, settings: Settings) -> dict[str, Any]:
    """Describe a prepared or raw dataset folder (what ``visionops data info`` prints).

    Args:
        path: A prepared dataset, a raw dataset folder, or a bare name under
            ``data.prepared_root`` / ``data.raw_root``.
        settings: Resolved settings (roots, task and camera for raw folders).

    Returns:
        For a prepared dataset: ``kind="prepared"``, ``path``, ``manifest``,
        ``class_balance`` (per split), ``rejected`` (count per reason). For a raw folder:
        ``kind="raw"``, ``layout``, ``task``, ``tasks``, ``images``, ``splits`` (count per
        source split or ``unsplit``), ``class_balance``, ``rejected``, ``source``, ``notes``.

    Raises:
        DatasetNotFoundError: Nothing there, or a folder that is neither kind.
        ArtifactError: A prepared dataset that is corrupt.
    """
    if not path.exists() and len(path.parts) == 1:
        for root in (settings.data.prepared_root, settings.data.raw_root):
            if (root / path).exists():
                path = root / path
                break
    if not path.exists():
        raise DatasetNotFoundError(
            f"no dataset at {path} — make a raw one with `visionops data fetch SOURCE` and a"
            " prepared one with `visionops data preprocess data/raw/<name>`"
        )
    if (path / "manifest.json").is_file() or is_prepared(path):
        if not is_prepared(path):
            kind = None
            with contextlib.suppress(OSError, ValueError, AttributeError):
                kind = read_json(path / "manifest.json").get("kind")
            raise DatasetNotFoundError(
                f"{path} is not a dataset (its manifest is {kind or 'not visionops'}') — pass"
                " data/prepared/<name> (`visionops data preprocess` makes one) or data/raw/<name>"
            )
        dataset = PreparedDataset.open(path)
        rejected = dataset.read_rejected()
        return {
            "kind": "prepared",
            "path": str(path),
            "manifest": dataset.manifest,
            "class_balance": dataset.manifest.get("class_counts", {}),
            "rejected": dict(
                count_reasons(Rejection(r["path"], r["reason"]) for r in rejected).most_common()
            ),
        }
    try:
        listing = detect(path, task=settings.data.task, camera=settings.data.camera)
    except LayoutError as exc:
        raise DatasetNotFoundError(
            f"{path} is neither a prepared dataset nor a raw one visionops can read ({exc}) —"
            " `visionops data fetch` makes raw datasets, `visionops data preprocess` prepared ones"
        ) from None
    source = None
    if (path / SOURCE_FILE).is_file():
        try:
            source = read_json(path / SOURCE_FILE)
        except (OSError, ValueError):
            source = None
    names = listing.class_names or []
    balance: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    split_counts: Counter[str] = Counter()
    for item in listing.items:
        split = (
            SPLIT_NAMES[item.split]
            if listing.splits_from_source and item.split is not None
            else "unsplit"
        )
        split_counts[split] += 1
        if listing.task in ("classification", "anomaly"):
            balance[split][names[int(item.target)]] += 1  # type: ignore[arg-type]
        elif listing.task == "multilabel":
            for label, flag in zip(names, item.target, strict=True):  # type: ignore[arg-type]
                balance[split][label] += flag
    return {
        "kind": "raw",
        "path": str(path),
        "layout": listing.layout,
        "task": listing.task,
        "tasks": list(listing.tasks),
        "images": len(listing.items),
        "class_names": listing.class_names,
        "target_names": listing.target_names,
        "splits_from_source": listing.splits_from_source,
        "splits": dict(split_counts),
        "class_balance": {s: {k: int(v) for k, v in b.items()} for s, b in balance.items()},
        "rejected": dict(count_reasons(listing.rejected).most_common()),
        "source": source,
        "notes": listing.notes,
        "prepared": str(prepared)
        if is_prepared(prepared := settings.data.prepared_root / path.resolve().name)
        else None,
    }
