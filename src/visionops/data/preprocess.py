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

import csv
import hashlib
import io
import json
import os
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import numpy as np
from loguru import logger
from numpy.typing import NDArray

from visionops import __version__
from visionops._io import artifact_lock, atomic_dir, clean_stale_temps, file_sha256
from visionops.artifacts import PreparedManifest, SourceRecord
from visionops.config import Settings
from visionops.data.decoding import DecodeConfig, Decoded, DecodeJob, decode_all
from visionops.data.fetch import raw_folder_for, read_source_info
from visionops.data.layouts import (
    SOURCE_FILE,
    SPLIT_NAMES,
    RawItem,
    RawListing,
    Rejection,
    count_reasons,
    detect,
    list_files,
)
from visionops.data.prepared import PREPARED_FILES, read_rejected
from visionops.data.splits import plan_splits, regression_strata
from visionops.errors import ArtifactError, DataError, DatasetNotFoundError
from visionops.progress import NULL_PROGRESS, ProgressReporter
from visionops.tasks import get_task

__all__ = [
    "PREPROCESS_VERSION",
    "PrepareResult",
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
_LOCK_HINT: Final = (
    "another `visionops data preprocess` is preparing it; wait for it to finish (the second"
    " run then finds it done), or set data.prepared_root to another folder"
)


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
    manifest: PreparedManifest
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


def _source_info(raw: Path) -> tuple[SourceRecord, dict[str, str]]:
    """The raw ``source.json``, or a synthesized record with a computed fingerprint.

    A ``source.json`` is trusted only while the folder still has the file count and size it
    records (a cheap check that catches files added or removed since the fetch).
    """
    files = list_files(raw)
    source_path = raw / SOURCE_FILE
    if source_path.is_file():
        source = read_source_info(raw)
        if source is not None:
            count = len(files)
            total = sum((raw / rel).stat().st_size for rel in files)
            own = source_path.stat().st_size
            if source.file_count in (count, count + 1) and source.bytes in (total, total + own):
                return source, {}
            logger.warning(
                "{} does not match the files on disk ({} files, {} bytes; it records {} and"
                " {}) — fingerprinting the files instead",
                source_path,
                count,
                total,
                source.file_count,
                source.bytes,
            )
        else:
            logger.warning("{} is unreadable — fingerprinting the files instead", source_path)
    fingerprint, hashes, count, total = fingerprint_folder(raw, files)
    record = SourceRecord(
        name=raw.resolve().name,
        source=f"folder:{raw.resolve()}",
        file_count=count,
        bytes=total,
        fingerprint=fingerprint,
        visionops_version=__version__,
    )
    return record, hashes


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


def _existing_manifest(folder: Path) -> PreparedManifest | None:
    """The manifest of a complete prepared dataset in ``folder``, else None."""
    try:
        manifest = PreparedManifest.read(folder)
    except ArtifactError:
        return None
    needed = list(PREPARED_FILES)
    if get_task(manifest.task).has_masks:
        needed.append("masks.npy")
    return manifest if all((folder / f).is_file() for f in needed) else None


# --------------------------------------------------------------------------- writing


def _target_array(
    listing: RawListing, items: Sequence[RawItem]
) -> NDArray[np.int64] | NDArray[np.float32]:
    if get_task(listing.task).target_kind == "class_index":
        return np.array([int(item.target) for item in items], dtype=np.int64)  # type: ignore[arg-type]
    width = len(listing.class_names or listing.target_names or [])
    values = [item.target for item in items]
    return np.array(values, dtype=np.float32).reshape(len(items), width)


def _target_text(listing: RawListing, target: NDArray[Any]) -> str:
    kind = get_task(listing.task).target_kind
    if kind == "class_index":
        return (listing.class_names or [])[int(target)]
    if kind == "multi_hot":
        names = listing.class_names or []
        return ";".join(name for name, flag in zip(names, target, strict=True) if flag >= 0.5)
    return ";".join(format(float(value), ".10g") for value in target)


def _class_counts(
    listing: RawListing, targets: NDArray[Any], splits: NDArray[np.uint8]
) -> dict[str, dict[str, int]]:
    counts: dict[str, dict[str, int]] = {}
    names = listing.class_names or []
    kind = get_task(listing.task).target_kind
    for code, split in enumerate(SPLIT_NAMES):
        chosen = targets[splits == code]
        if kind == "class_index":
            tally = np.bincount(chosen.astype(np.int64), minlength=len(names))
            counts[split] = {name: int(tally[i]) for i, name in enumerate(names)}
        elif kind == "multi_hot":
            positives = (chosen >= 0.5).sum(axis=0) if len(chosen) else np.zeros(len(names))
            counts[split] = {name: int(positives[i]) for i, name in enumerate(names)}
        else:
            counts[split] = {}
    return counts


def _compact(source: Path, destination: Path, keep: NDArray[np.int64]) -> None:
    """Copy the rows ``keep`` of the .npy ``source`` into a new .npy ``destination``."""
    full = np.load(source, mmap_mode="r")
    out = np.lib.format.open_memmap(
        destination, mode="w+", dtype=np.uint8, shape=(len(keep), *full.shape[1:])
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
    # The task's own words first: it knows what its training split must hold.
    problem = get_task(listing.task).training_data_problem(listing.class_names or [], train)
    if problem:
        raise DataError(f"{raw}: {problem}")
    if len(train) == 0:
        raise DataError(
            f"{raw}: no image is left in the train split — add training images (or, for"
            " split folders, put some in train/)"
        )


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
    raw: Path | None,
    settings: Settings,
    *,
    force: bool = False,
    progress: ProgressReporter = NULL_PROGRESS,
) -> PrepareResult:
    """Decode a raw dataset folder into ``<prepared_root>/<raw folder name>``.

    Args:
        raw: The raw dataset folder (or a bare name under ``data.raw_root``); None: the
            folder ``visionops data fetch`` makes for ``data.source``.
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
        >>> result.manifest.counts
        {'train': 448, 'val': 96, 'test': 96, 'rejected': 0, 'duplicates_across_splits': 0}
    """
    started = time.perf_counter()
    data = settings.data
    if raw is None:
        raw = raw_folder_for(settings.data.source, settings)
    raw = resolve_raw(Path(raw), settings)
    name = raw.resolve().name
    final = data.prepared_root / name

    lines: list[str] = []
    sink = logger.add(lines.append, level="DEBUG", format=_LOG_FORMAT, colorize=False)
    try:
        # Read the layout before taking the lock, so that a folder visionops cannot read is
        # refused without creating anything under data.prepared_root.
        listing = detect(raw, task=data.task, camera=data.camera)
        with artifact_lock(final, hint=_LOCK_HINT):
            removed = clean_stale_temps(data.prepared_root, f".{name}.*.tmp")
            if removed:
                logger.info(
                    "removed {} leftover(s) of an interrupted preprocess: {}",
                    len(removed),
                    ", ".join(path.name for path in removed),
                )
            return _prepare_locked(raw, listing, final, settings, force, progress, started, lines)
    finally:
        logger.remove(sink)


def _prepare_locked(
    raw: Path,
    listing: RawListing,
    final: Path,
    settings: Settings,
    force: bool,
    progress: ProgressReporter,
    started: float,
    lines: list[str],
) -> PrepareResult:
    """:func:`prepare_dataset` once it holds the output folder's lock."""
    data = settings.data
    name = final.name
    source, known_hashes = _source_info(raw)
    params = _params(settings)
    fingerprint = _fingerprint(source.fingerprint, params, data.max_image_pixels)
    existing = _existing_manifest(final)
    if not force and existing is not None and existing.fingerprint == fingerprint:
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
            rejected_by_reason=dict(count_reasons(read_rejected(final)).most_common()),
        )
    if (
        final.exists()
        and existing is None
        and not PreparedManifest.exists(final)
        and any(final.iterdir())
    ):
        raise ArtifactError(
            f"{final} exists and is not a prepared dataset; preprocess will not overwrite"
            " it — move it away or set data.prepared_root to another folder"
        )

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
        manifest.write(tmp)
        kept = sum(manifest.counts.get(split, 0) for split in ("train", "val", "test"))
        logger.info(
            "prepared {} of {} candidate images in {:.1f} s ({:.0f} images/s) → {}",
            kept,
            len(listing.items),
            seconds,
            len(listing.items) / max(seconds, 1e-9),
            final,
        )
        (tmp / "preprocess.log").write_text("".join(lines), encoding="utf-8")
    return PrepareResult(
        path=final,
        manifest=manifest,
        skipped=False,
        seconds=seconds,
        images_per_s=len(listing.items) / max(seconds, 1e-9),
        rejected_by_reason=dict(count_reasons(rejected).most_common()),
        notes=listing.notes,
    )


@dataclass
class _Decoded:
    """The temporary arrays every listed image was decoded into, and what decoding found.

    Attributes:
        images: ``(N, size, size, channels)`` uint8 ``.npy``, one row per listed item.
        masks: ``(N, size, size)`` uint8 ``.npy`` (tasks with masks), else None.
        good: The outcomes of the images that decoded, in listing order.
        usable: Their items.
        rejected: The listing's rejections, then the images that did not decode.
    """

    images: Path
    masks: Path | None
    good: list[Decoded]
    usable: list[RawItem]
    rejected: list[Rejection]

    @property
    def hashes(self) -> list[str]:
        """Content SHA-256 of each usable image."""
        return [result.sha256 or "" for result in self.good]


@dataclass
class _Kept:
    """The usable images the splits keep, with their targets and split codes.

    Attributes:
        positions: Positions in :attr:`_Decoded.usable` of the kept images, ascending.
        targets: Their targets (the array ``targets.npy`` holds).
        splits: Their split codes (``splits.npy``).
        dropped: Duplicates dropped because an identical image is in an earlier split.
        from_source: Whether the splits came from the source.
    """

    positions: list[int]
    targets: NDArray[Any]
    splits: NDArray[np.uint8]
    dropped: int
    from_source: bool


def _build(
    tmp: Path,
    raw: Path,
    name: str,
    listing: RawListing,
    settings: Settings,
    source: SourceRecord,
    fingerprint: str,
    known_hashes: dict[str, str],
    progress: ProgressReporter,
) -> tuple[PreparedManifest, list[Rejection]]:
    """Decode, split, check and write everything but the manifest and log into ``tmp``."""
    decoded = _decode(tmp, raw, name, listing, settings, known_hashes, progress)
    if not decoded.good:
        raise _no_usable(raw, decoded.rejected, len(listing.items))
    kept, duplicates = _split(listing, decoded, settings)
    rejected = decoded.rejected + duplicates
    _check_training_data(listing, kept.targets, kept.splits, raw)
    _write_arrays(tmp, decoded, kept, len(listing.items))
    manifest = _manifest(
        tmp / "images.npy", name, listing, settings, source, fingerprint, kept, rejected
    )
    _write_tables(tmp, listing, decoded, kept, rejected)
    return manifest, rejected


def _decode(
    tmp: Path,
    raw: Path,
    name: str,
    listing: RawListing,
    settings: Settings,
    known_hashes: dict[str, str],
    progress: ProgressReporter,
) -> _Decoded:
    """Decode every listed image (and mask) into memory-mapped arrays allocated in ``tmp``."""
    data = settings.data
    items = listing.items
    size, channels = data.image_size, data.channels
    images_path = tmp / _DECODE_FILE
    masks_path = tmp / _MASK_FILE if get_task(listing.task).has_masks else None
    np.lib.format.open_memmap(
        images_path, mode="w+", dtype=np.uint8, shape=(len(items), size, size, channels)
    ).flush()
    if masks_path is not None:
        np.lib.format.open_memmap(
            masks_path, mode="w+", dtype=np.uint8, shape=(len(items), size, size)
        ).flush()
    config = DecodeConfig(
        images_path=str(images_path),
        masks_path=str(masks_path) if masks_path else None,
        size=size,
        channels=channels,
        policy=data.resize,
        max_pixels=data.max_image_pixels,
    )
    jobs = [
        DecodeJob(
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
        results = decode_all(jobs, config, workers, lambda n: bar.advance(n))
    finally:
        bar.close()
    rejected = list(listing.rejected)
    rejected += [
        Rejection(items[result.slot].path, result.reason)
        for result in results
        if result.reason is not None
    ]
    for rejection in rejected:
        logger.debug("skipped {}: {}", rejection.path, rejection.reason)
    good = [result for result in results if result.reason is None]
    return _Decoded(images_path, masks_path, good, [items[r.slot] for r in good], rejected)


def _split(
    listing: RawListing, decoded: _Decoded, settings: Settings
) -> tuple[_Kept, list[Rejection]]:
    """Plan the splits of the usable images; an image found in two splits stays in one.

    Returns:
        What the splits keep, and a rejection for each duplicate dropped from a later split.
    """
    data = settings.data
    usable, hashes = decoded.usable, decoded.hashes
    targets = _target_array(listing, usable)
    strata = (
        regression_strata(targets)
        if get_task(listing.task).target_kind == "values"
        else [item.stratum for item in usable]
    )
    plan = plan_splits(
        hashes,
        strata,
        [item.split for item in usable] if listing.splits_from_source else None,
        val_ratio=data.val_ratio,
        test_ratio=data.test_ratio,
        seed=data.seed,
        carve_val_from=listing.carve_val_from,
    )
    duplicates = [
        Rejection(
            usable[position].path,
            f"duplicate across splits: same content as {usable[kept].path} in"
            f" {SPLIT_NAMES[plan.splits[kept]]}; dropped from"
            f" {SPLIT_NAMES[plan.splits[position]]} so the splits do not leak",
        )
        for position, kept in sorted(plan.dropped.items())
    ]
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
    positions = plan.kept
    return (
        _Kept(
            positions,
            targets[positions],
            plan.splits[positions],
            dropped=len(plan.dropped),
            from_source=plan.from_source,
        ),
        duplicates,
    )


def _write_arrays(tmp: Path, decoded: _Decoded, kept: _Kept, listed: int) -> None:
    """``images.npy`` (and ``masks.npy``) of the kept rows, ``targets.npy``, ``splits.npy``."""
    keep_index = np.array([decoded.good[p].slot for p in kept.positions], dtype=np.int64)
    if len(keep_index) == listed:
        os.replace(decoded.images, tmp / "images.npy")
        if decoded.masks is not None:
            os.replace(decoded.masks, tmp / "masks.npy")
    else:
        _compact(decoded.images, tmp / "images.npy", keep_index)
        if decoded.masks is not None:
            _compact(decoded.masks, tmp / "masks.npy", keep_index)
    np.save(tmp / "targets.npy", kept.targets)
    np.save(tmp / "splits.npy", kept.splits)


def _write_tables(
    tmp: Path, listing: RawListing, decoded: _Decoded, kept: _Kept, rejected: list[Rejection]
) -> None:
    """``items.csv`` (one row per kept image) and ``rejected.csv`` (every skipped file)."""
    hashes = decoded.hashes
    _write_csv(
        tmp / "items.csv",
        ["index", "path", "split", "target", "sha256", "width", "height"],
        [
            (
                i,
                decoded.usable[p].path,
                SPLIT_NAMES[kept.splits[i]],
                _target_text(listing, kept.targets[i]),
                hashes[p],
                *(decoded.good[p].size or ("", "")),
            )
            for i, p in enumerate(kept.positions)
        ],
    )
    _write_csv(tmp / "rejected.csv", ["path", "reason"], [(r.path, r.reason) for r in rejected])
    if rejected:
        top = ", ".join(f"{n} {kind}" for kind, n in count_reasons(rejected).most_common(3))
        logger.warning("skipped {} files ({}) — listed in rejected.csv", len(rejected), top)


def _target_statistics(
    listing: RawListing, kept: _Kept
) -> tuple[list[float] | None, list[float] | None]:
    """Mean and std of each regression target over train (None for other tasks)."""
    if get_task(listing.task).target_kind != "values":
        return None, None
    train_targets = kept.targets[kept.splits == 0].astype(np.float64)
    spread = train_targets.std(axis=0)
    constant = [n for n, s in zip(listing.target_names or [], spread, strict=True) if s == 0]
    if constant:
        # A constant target would divide by zero when training normalises it.
        logger.warning("target {} is constant in train; its std is stored as 1", constant)
    return [float(v) for v in train_targets.mean(axis=0)], [
        float(v) if v > 0 else 1.0 for v in spread
    ]


def _manifest(
    images_path: Path,
    name: str,
    listing: RawListing,
    settings: Settings,
    source: SourceRecord,
    fingerprint: str,
    kept: _Kept,
    rejected: list[Rejection],
) -> PreparedManifest:
    """The manifest of the written arrays: labels, statistics of train, counts, provenance."""
    data = settings.data
    splits = kept.splits
    mean, std = _channel_statistics(images_path, np.flatnonzero(splits == 0))
    target_mean, target_std = _target_statistics(listing, kept)
    counts = {
        split: int(np.count_nonzero(splits == code)) for code, split in enumerate(SPLIT_NAMES)
    }
    return PreparedManifest(
        name=name,
        task=listing.task,
        class_names=listing.class_names,
        target_names=listing.target_names,
        target_units=listing.target_units,
        target_mean=target_mean,
        target_std=target_std,
        image_size=data.image_size,
        channels=data.channels,
        resize=data.resize,
        mean=[round(float(v), 6) for v in mean],
        std=[round(float(v), 6) for v in std],
        counts={
            **counts,
            "rejected": len(rejected),
            "duplicates_across_splits": kept.dropped,
        },
        class_counts=_class_counts(listing, kept.targets, splits),
        splits_from_source=kept.from_source,
        source=source,
        params=_params(settings),
        fingerprint=fingerprint,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        visionops_version=__version__,
    )
