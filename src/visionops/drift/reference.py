"""The drift reference: what the model sees on held-out images, computed through the bundle.

A network is more confident on the images it was trained on than on new ones (on the demo
run: mean top probability 0.886 on train vs 0.855 on test after 10 epochs), so a reference of
training images makes the output tests fire on perfectly normal traffic. The reference is
therefore drawn from the validation split (or test, when asked), and ``reference.npz``
records which split it came from.

``export`` calls :func:`choose_reference_indices` when it writes a bundle;
``visionops drift reference`` (:func:`rebuild_reference`) redraws it for an existing bundle
with ONNX Runtime only (no torch).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from visionops.config import Settings
from visionops.errors import DatasetNotFoundError, DriftError, ImageError, VisionOpsError
from visionops.image_quality import SOURCE_STATISTICS, colour_statistics, source_statistics
from visionops.imaging import image_statistics, load_image_and_source
from visionops.inference.bundle import find_bundle, load_bundle, write_bundle_manifest
from visionops.progress import NULL_PROGRESS, ProgressReporter

__all__ = [
    "HELD_OUT",
    "ReferenceResult",
    "SourceStatistics",
    "choose_reference_indices",
    "rebuild_reference",
    "reference_arrays",
    "reference_source_statistics",
]

HELD_OUT: tuple[str, ...] = ("val", "test")
_BATCH = 32


def choose_reference_indices(
    splits: NDArray[np.integer[Any]],
    *,
    split: Literal["val", "test"] = "val",
    samples: int,
    seed: int = 0,
    allow_train: bool = False,
) -> tuple[str, NDArray[np.int64]]:
    """Pick up to ``samples`` images of a held-out split for the reference.

    Args:
        splits: The prepared dataset's ``splits.npy`` (0 train, 1 val, 2 test).
        split: The split asked for; the other held-out split is used when it is empty.
        samples: Most images to take (a seeded random sample when the split is larger).
        seed: Sampling seed.
        allow_train: Fall back to training images when no held-out split exists (``export``
            does, recording ``train``; ``drift report`` then refuses that reference).

    Returns:
        ``(split used, sorted indices)``.

    Raises:
        DriftError: No held-out images and ``allow_train`` is false.
    """
    codes = {"train": 0, "val": 1, "test": 2}
    order = [split, *(s for s in HELD_OUT if s != split)]
    if allow_train:
        order.append("train")
    for name in order:
        indices = np.flatnonzero(np.asarray(splits) == codes[name]).astype(np.int64)
        if len(indices):
            rng = np.random.default_rng(seed)
            chosen = np.sort(rng.permutation(indices)[:samples]).astype(np.int64)
            return name, chosen
    raise DriftError(
        "the prepared dataset has no held-out images (no val or test split) — preprocess it"
        " again with data.val_ratio > 0, or pass a DATASET with held-out images"
    )


@dataclass
class SourceStatistics:
    """:func:`~visionops.image_quality.source_statistics` of the reference images' files.

    Attributes:
        values: ``(n, len(SOURCE_STATISTICS))`` float32, NaN where a file was not read.
        read: Files read (the others are gone or changed since preprocessing).
        note: Why some or all are missing, for the user; None when every file was read.
    """

    values: NDArray[np.float32]
    read: int
    note: str | None = None


def _raw_folders(dataset: Any, raw_root: Path) -> list[Path]:
    """Where the raw files of a prepared dataset may be: its recorded folder, then by name."""
    source = dataset.manifest.source.source
    folders = []
    if source.startswith("folder:"):
        folders.append(Path(source.removeprefix("folder:")))
    folders.append(raw_root / dataset.name)
    return [folder for folder in folders if folder.is_dir()]


def reference_source_statistics(
    dataset: Any, indices: NDArray[np.int64], raw_root: Path
) -> SourceStatistics:
    """Noise, detail, blockiness and JPEG quality of the reference images, from their files.

    The prepared arrays hold the model-sized images only, while ``serve`` measures these on
    each upload before the resize, so the reference reads the same raw files ``data
    preprocess`` read, decoded the same way. A file is used only while its content hash is
    the one ``items.csv`` recorded.

    Args:
        dataset: The :class:`~visionops.data.prepared.PreparedDataset`.
        indices: The reference's rows in it.
        raw_root: ``data.raw_root`` (a fetched dataset's raw folder is ``<raw_root>/<name>``).

    Returns:
        The values (NaN for files not found) and a note when some are missing.
    """
    values = np.full((len(indices), len(SOURCE_STATISTICS)), np.nan, dtype=np.float32)
    folders = _raw_folders(dataset, raw_root)
    try:
        items = dataset.read_items()
    except (KeyError, ValueError, OSError):
        items = []
    read = 0
    if folders and len(items) == len(dataset):
        size, channels, policy = dataset.image_size, dataset.channels, dataset.resize
        for row, index in enumerate(indices):
            item = items[int(index)]
            data = _raw_bytes(folders, item.path, item.sha256)
            if data is None:
                continue
            try:
                image, _ = load_image_and_source(data, size=size, channels=channels, policy=policy)
            except ImageError:
                continue
            stats = source_statistics(image, data, item.width)
            values[row] = [np.nan if stats[n] is None else stats[n] for n in SOURCE_STATISTICS]
            read += 1
    note = None
    if read < len(indices):
        where = " or ".join(str(f) for f in folders) or str(raw_root / dataset.name)
        note = (
            f"{len(indices) - read} of {len(indices)} reference images were not found unchanged"
            f" in {where}, so their noise, fine detail, blockiness and JPEG quality are not"
            " in the reference — rebuild it with `visionops drift reference` where the raw"
            " dataset is"
        )
    return SourceStatistics(values, read, note)


def _raw_bytes(folders: list[Path], relative: str, sha256: str) -> bytes | None:
    for folder in folders:
        path = folder / relative
        try:
            data = path.read_bytes()
        except OSError:
            continue
        if hashlib.sha256(data).hexdigest() == sha256:
            return data
    return None


def reference_arrays(
    outputs: NDArray[np.float32],
    embeddings: NDArray[np.float32],
    images_nhwc: NDArray[np.uint8],
    indices: NDArray[np.int64],
    split: str,
    original_sizes: NDArray[np.float64] | None = None,
    source: SourceStatistics | None = None,
) -> dict[str, NDArray[Any]]:
    """The arrays of ``reference.npz`` from the graph's outputs on the chosen images.

    Args:
        outputs: ``(n, K)`` main output of the graph.
        embeddings: ``(n, D)`` embeddings.
        images_nhwc: The ``(n, H, W, C)`` uint8 images the graph saw.
        indices: Their rows in the prepared dataset.
        split: The split they came from.
        original_sizes: ``(n, 2)`` width and height before resizing, when the prepared
            dataset records them (serve logs the same for every upload).
        source: The images' noise, detail, blockiness and JPEG quality from their files
            (:func:`reference_source_statistics`); None leaves them out.

    Returns:
        ``embeddings``, ``predictions``, ``stats`` + ``stat_names`` (from
        :func:`visionops.imaging.image_statistics` and
        :func:`visionops.image_quality.colour_statistics`, what ``serve`` logs, plus ``width``
        and ``height`` when known and the source statistics when given; NaN where a value is
        missing), ``indices`` and ``split`` (a 0-d string).
    """
    rows: list[dict[str, float | None]] = []
    for image in images_nhwc:
        pixels = np.asarray(image)
        rows.append({**image_statistics(pixels), **colour_statistics(pixels)})
    names = list(rows[0]) if rows else []
    stats = np.array(
        [[np.nan if row[name] is None else row[name] for name in names] for row in rows],
        dtype=np.float32,
    )
    stats = stats.reshape(len(rows), len(names))
    if original_sizes is not None and len(rows):
        names += ["width", "height"]
        stats = np.concatenate([stats, np.asarray(original_sizes, np.float32)], axis=1)
    if source is not None and source.read and len(rows):
        names += list(SOURCE_STATISTICS)
        stats = np.concatenate([stats, source.values], axis=1)
    return {
        "embeddings": np.asarray(embeddings, np.float32),
        "stats": stats,
        "stat_names": np.array(names, dtype=np.str_),
        "predictions": np.asarray(outputs, np.float32),
        "indices": np.asarray(indices, dtype=np.int64),
        "split": np.array(split, dtype=np.str_),
    }


@dataclass
class ReferenceResult:
    """What :func:`rebuild_reference` did.

    Attributes:
        bundle_dir: The bundle whose reference was replaced.
        split: The split the images came from.
        samples: Images in the new reference.
        dataset: The prepared dataset they came from.
        notes: Things the user should know.
    """

    bundle_dir: Path
    split: str
    samples: int
    dataset: Path
    notes: list[str] = field(default_factory=list)


def _run_dataset(bundle_dir: Path) -> Path:
    """The prepared dataset recorded in the run that holds the bundle."""
    from visionops.runs import find_run_dataset, read_run_manifest

    run_dir = bundle_dir.resolve().parent
    run = read_run_manifest(run_dir)
    try:
        return find_run_dataset(run_dir, run)
    except DatasetNotFoundError:
        raise DriftError(
            f"the prepared dataset {run.dataset.path or '?'} of run {run_dir.name} is gone —"
            " pass the DATASET to draw the reference from"
        ) from None


def _write_npz(path: Path, arrays: dict[str, NDArray[Any]]) -> None:
    handle, tmp_name = tempfile.mkstemp(prefix=".reference-", suffix=".npz", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            np.savez_compressed(stream, allow_pickle=False, **arrays)
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def _model_outputs(
    model_path: Path, bundle: Any, images: NDArray[np.uint8]
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    from visionops.inference.session import ModelSession

    session = ModelSession(bundle, precision="fp32")
    if model_path != session.model_path:
        session = ModelSession(bundle, precision="int8")
    mains, embeddings = [], []
    for start in range(0, len(images), _BATCH):
        result = session.run(np.asarray(images[start : start + _BATCH]))
        if result.embedding is None:
            raise DriftError(
                f"{model_path} has no embedding output — re-export it with `visionops export"
                " --force`"
            )
        mains.append(result.main.reshape(result.main.shape[0], -1))
        embeddings.append(result.embedding)
    return np.concatenate(mains), np.concatenate(embeddings)


def rebuild_reference(
    settings: Settings,
    target: Path | None,
    *,
    dataset: Path | None = None,
    split: Literal["val", "test"] | None = None,
    progress: ProgressReporter = NULL_PROGRESS,
) -> ReferenceResult:
    """Redraw a bundle's ``reference.npz`` from held-out images, through the bundle's graph.

    Args:
        settings: Resolved settings (``drift.reference_split``, ``export.reference_samples``,
            ``drift.seed``, ``runs_root``).
        target: A bundle, a run folder or name; None for ``runs/latest``.
        dataset: The prepared dataset to draw from (default: the run's own).
        split: ``val`` or ``test`` (default ``drift.reference_split``).
        progress: Progress reporter.

    Returns:
        What was written.

    Raises:
        DriftError: No bundle, no dataset, images of another size, or no held-out split.
            The bundle is left unchanged then.
    """
    from visionops.data.prepared import PreparedDataset

    try:
        bundle = load_bundle(find_bundle(target, settings.runs_root))
        dataset_dir = dataset or _run_dataset(bundle.path)
        prepared = PreparedDataset.open(dataset_dir)
    except DriftError:
        raise
    except VisionOpsError as exc:
        raise DriftError(str(exc)) from None
    spec = bundle.meta.input
    if (prepared.image_size, prepared.channels) != (spec.size, spec.channels):
        raise DriftError(
            f"{prepared.path} holds {prepared.image_size}px {prepared.channels}-channel images;"
            f" the bundle takes {spec.size}px with {spec.channels} channels — pass the"
            " dataset the model was trained on"
        )
    notes: list[str] = []
    if prepared.fingerprint != bundle.meta.training_data_fingerprint:
        notes.append(
            f"{prepared.path} is not the dataset the model was trained on (fingerprint differs)"
            " — the reference describes it, not the training data's held-out split"
        )
    asked = split or settings.drift.reference_split
    used, indices = choose_reference_indices(
        np.asarray(prepared.splits),
        split=asked,
        samples=settings.export.reference_samples,
        seed=settings.drift.seed,
    )
    if used != asked:
        notes.append(f"the dataset has no {asked} images; the reference uses the {used} split")
    images = np.asarray(prepared.images[indices])
    bar = progress.start("reference", total=2)
    try:
        outputs, embeddings = _model_outputs(bundle.model_path, bundle, images)
        source = reference_source_statistics(prepared, indices, settings.data.raw_root)
        if source.note:
            notes.append(source.note)
        arrays = reference_arrays(
            outputs, embeddings, images, indices, used, prepared.original_sizes(indices), source
        )
        bar.advance(1)
        if bundle.int8_model_path is not None:
            int8_outputs, int8_embeddings = _model_outputs(bundle.int8_model_path, bundle, images)
            arrays["predictions_int8"] = int8_outputs
            arrays["embeddings_int8"] = int8_embeddings
        bar.advance(1)
    finally:
        bar.close()
    _write_npz(bundle.path / "reference.npz", arrays)
    meta = bundle.meta.model_copy(
        update={"reference_samples": len(indices), "reference_split": used}
    )
    write_bundle_manifest(bundle.path, meta)
    return ReferenceResult(bundle.path, used, len(indices), prepared.path, notes)
