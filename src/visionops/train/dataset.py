"""Which prepared dataset a run trains on, and whether it fits the requested settings.

Training never prepares data its own way: a source or a raw folder goes through
:func:`obtain_prepared`, the one place that calls the data stage's public functions
(``fetch_dataset`` and ``prepare_dataset``), exactly as ``visionops data fetch`` and
``visionops data preprocess`` would.
"""

from __future__ import annotations

import os
from pathlib import Path

from loguru import logger

from visionops.artifacts import PreparedManifest
from visionops.config import Settings
from visionops.data.prepared import PreparedDataset, find_prepared, is_prepared
from visionops.errors import ConfigError
from visionops.progress import NULL_PROGRESS, ProgressReporter

__all__ = ["effective_settings", "obtain_prepared", "resolve_dataset", "shown"]

# Preprocessing settings a prepared dataset has fixed once and for all.
_FIXED_BY_PREPARATION = ("image_size", "channels", "resize")


def shown(path: Path) -> str:
    """``path`` relative to the working folder when inside it (run.json stays portable)."""
    try:
        relative = os.path.relpath(path)
    except ValueError:  # another drive on Windows
        return str(path)
    return str(path) if relative.startswith("..") else relative


def obtain_prepared(
    source: str | Path, settings: Settings, progress: ProgressReporter, *, fetch: bool
) -> Path:
    """Fetch (when ``fetch``) and prepare ``source`` with the data stage's public functions.

    Args:
        source: A fetch source (``demo:shapes``, an archive, a URL) or a raw folder.
        settings: Resolved settings (``data.*`` drive both steps).
        progress: Receives the fetch and preprocess bars.
        fetch: Whether ``source`` must be fetched first (else it is a raw folder).

    Returns:
        The prepared dataset folder.
    """
    from visionops.data.fetch import fetch_dataset
    from visionops.data.prepare import prepare_dataset

    raw = fetch_dataset(str(source), settings, progress=progress).path if fetch else Path(source)
    return prepare_dataset(raw, settings, progress=progress).path


def resolve_dataset(
    settings: Settings,
    dataset: str | Path | None = None,
    progress: ProgressReporter = NULL_PROGRESS,
    *,
    reprepare: bool = False,
) -> Path:
    """Find (or make) the prepared dataset to train on.

    Args:
        settings: Resolved settings.
        dataset: A prepared dataset folder, a name under ``data.prepared_root``, a raw
            dataset folder (prepared first), or a fetch source such as ``demo:multilabel``
            (fetched and prepared first). None: the ``data.source`` a project file, recipe
            or override set; else the newest prepared dataset; else ``demo:shapes``.
        progress: Receives the fetch and preprocess bars.
        reprepare: Prepare an existing prepared dataset again when it was prepared with
            another ``data.image_size``/``channels``/``resize`` than the settings ask for.

    Returns:
        The prepared dataset folder.

    Raises:
        ConfigError: A prepared dataset differs from explicitly requested preprocessing
            settings (and ``reprepare`` is off).
        DataError: The source cannot be fetched or prepared.
    """
    if dataset is None:
        if "source" in settings.data.model_fields_set:
            return obtain_prepared(settings.data.source, settings, progress, fetch=True)
        found = find_prepared(settings)
        if found is not None:
            return _fitting(found, settings, progress, reprepare)
        logger.info(
            "no dataset given and none prepared in {} — using the embedded {}",
            settings.data.prepared_root,
            settings.data.source,
        )
        return obtain_prepared(settings.data.source, settings, progress, fetch=True)
    path = Path(dataset)
    if path.is_dir():
        if is_prepared(path):
            return _fitting(path, settings, progress, reprepare)
        return obtain_prepared(path, settings, progress, fetch=False)
    named = settings.data.prepared_root / str(dataset)
    if len(path.parts) == 1 and is_prepared(named):
        return _fitting(named, settings, progress, reprepare)
    return obtain_prepared(str(dataset), settings, progress, fetch=True)


def _mismatches(manifest: PreparedManifest, settings: Settings) -> dict[str, tuple[object, object]]:
    """Explicitly requested preprocessing settings the prepared dataset does not have."""
    requested = settings.data.model_fields_set
    return {
        key: (getattr(settings.data, key), getattr(manifest, key))
        for key in _FIXED_BY_PREPARATION
        if key in requested and getattr(settings.data, key) != getattr(manifest, key)
    }


def _fitting(
    prepared: Path, settings: Settings, progress: ProgressReporter, reprepare: bool
) -> Path:
    """``prepared``, or it prepared again, so that it has the requested image settings."""
    manifest = PreparedManifest.read(prepared)
    differences = _mismatches(manifest, settings)
    if not differences:
        return prepared
    wanted = " ".join(f"data.{key}={value}" for key, (value, _) in differences.items())
    has = ", ".join(f"{key} {actual}" for key, (_, actual) in differences.items())
    raw = settings.data.raw_root / manifest.source.name
    if not reprepare:
        remake = f"visionops data preprocess {shown(raw)} {wanted}"
        raise ConfigError(
            f"{shown(prepared)} was prepared with {has}, not {wanted} — prepare it again with"
            f" `{remake}` (or add --reprepare), or drop {wanted} to train on it as it is"
        )
    logger.info("preparing {} again with {} (--reprepare)", manifest.source.name, wanted)
    if raw.is_dir():
        return obtain_prepared(raw, settings, progress, fetch=False)
    return obtain_prepared(manifest.source.source, settings, progress, fetch=True)


def effective_settings(settings: Settings, dataset: PreparedDataset) -> Settings:
    """``settings`` with the preprocessing values the dataset really has.

    ``config.yaml`` records what the run used: the dataset's image size, channels and resize
    policy, never a default or a request that the dataset did not follow.
    """
    actual = {
        "image_size": dataset.image_size,
        "channels": dataset.channels,
        "resize": dataset.resize,
    }
    return settings.model_copy(update={"data": settings.data.model_copy(update=actual)})
