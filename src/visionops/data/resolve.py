"""Find, or make, the prepared dataset a command should use.

``visionops train [DATASET]`` accepts a prepared folder, a name under ``data.prepared_root``,
a raw folder, a fetch source or nothing at all; :func:`resolve_prepared` turns any of these
into one prepared dataset folder, fetching and preprocessing on the way as needed, and
refuses a prepared dataset whose stored pixels differ from what the settings ask for.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final

from loguru import logger

from visionops.artifacts import PreparedManifest
from visionops.config import Settings
from visionops.data.fetch import fetch_dataset
from visionops.data.prepared import find_prepared
from visionops.data.preprocess import prepare_dataset
from visionops.errors import ConfigError
from visionops.progress import NULL_PROGRESS, ProgressReporter

__all__ = ["PIXEL_PARAMS", "resolve_prepared"]

PIXEL_PARAMS: Final = ("image_size", "channels", "resize")
"""Settings that decide the stored pixels: a prepared dataset made with other values cannot
serve a run that asks for these, so asking explicitly for another value is an error."""


def _from_source(source: str, settings: Settings, progress: ProgressReporter) -> Path:
    fetched = fetch_dataset(source, settings, progress=progress)
    raw = fetched.path
    if settings.anomaly.category:  # one category of a multi-category MVTec AD download
        from visionops.anomaly.categories import select_category

        raw = select_category(raw, settings.anomaly.category)
    return prepare_dataset(raw, settings, progress=progress).path


def _shown(path: Path) -> str:
    """``path`` relative to the working folder when inside it, for a copy-pasteable command."""
    try:
        relative = os.path.relpath(path)
    except ValueError:  # another drive on Windows
        return str(path)
    return str(path) if relative.startswith("..") else relative


def _raw_folder(manifest: PreparedManifest, settings: Settings) -> Path | None:
    """The raw folder a prepared dataset was made from, when it is still there."""
    source = manifest.source.source
    candidates = [settings.data.raw_root / manifest.name]
    if source.startswith("folder:"):
        candidates.insert(0, Path(source.removeprefix("folder:")))
    return next((folder for folder in candidates if folder.is_dir()), None)


def _check_pixels(
    prepared: Path, settings: Settings, reprepare: bool, progress: ProgressReporter
) -> Path:
    """``prepared`` if it holds the pixels the settings ask for; else re-prepare or refuse."""
    manifest = PreparedManifest.read(prepared)
    asked = settings.data.model_fields_set
    differ = {
        key: getattr(settings.data, key)
        for key in PIXEL_PARAMS
        if key in asked and getattr(settings.data, key) != getattr(manifest, key)
    }
    if not differ:
        return prepared
    raw = _raw_folder(manifest, settings)
    if reprepare:
        logger.info(
            "{} was prepared with {}; preparing it again with {}",
            prepared,
            ", ".join(f"{key}={getattr(manifest, key)}" for key in differ),
            ", ".join(f"{key}={value}" for key, value in differ.items()),
        )
        if raw is not None:
            return prepare_dataset(raw, settings, progress=progress).path
        return _from_source(manifest.source.source, settings, progress)
    holds = ", ".join(f"{key} {getattr(manifest, key)}" for key in differ)
    wanted = ", ".join(f"data.{key} is {value}" for key, value in differ.items())
    overrides = " ".join(f"data.{key}={value}" for key, value in differ.items())
    kept = " and ".join(f"data.{key}" for key in differ)
    command = f"visionops data preprocess {_shown(raw) if raw else 'RAW'} --force {overrides}"
    raise ConfigError(
        f"{prepared} was prepared with {holds} but {wanted} — re-prepare it with"
        f" `{command}`, or drop {kept} to use it as it is"
    )


def resolve_prepared(
    settings: Settings,
    dataset: str | Path | None = None,
    *,
    reprepare: bool = False,
    progress: ProgressReporter = NULL_PROGRESS,
) -> Path:
    """Find (or make) the prepared dataset to train on.

    Args:
        settings: Resolved settings.
        dataset: A prepared dataset folder, a name under ``data.prepared_root``, a raw
            dataset folder (prepared first), or a fetch source such as ``demo:multilabel``
            (fetched and prepared first). None: the ``data.source`` a project file, recipe
            or override set; else the newest prepared dataset; else the embedded demo
            (``data.source``'s default, ``demo:shapes``).
        reprepare: When an existing prepared dataset was made with another
            ``data.image_size`` (``channels``, ``resize``) than the settings explicitly ask
            for, prepare it again from its raw folder (or its source) instead of refusing.
        progress: Receives the fetch and preprocess bars.

    Returns:
        The prepared dataset folder.

    Raises:
        ConfigError: The prepared dataset's pixels differ from what the settings explicitly
            ask for (and ``reprepare`` is False); the message names the command that
            re-prepares it.
        DataError: The source cannot be fetched or prepared.

    Examples:
        >>> resolve_prepared(load_settings(), "demo:shapes")  # doctest: +SKIP
        PosixPath('data/prepared/shapes')
    """
    if dataset is None:
        if "source" in settings.data.model_fields_set:
            return _from_source(settings.data.source, settings, progress)
        found = find_prepared(settings)
        if found is not None:
            return _check_pixels(found, settings, reprepare, progress)
        logger.info(
            "no dataset given and none prepared in {} — using the embedded {}",
            settings.data.prepared_root,
            settings.data.source,
        )
        return _from_source(settings.data.source, settings, progress)
    path = Path(dataset)
    if path.is_dir():
        if PreparedManifest.exists(path):
            return _check_pixels(path, settings, reprepare, progress)
        return prepare_dataset(path, settings, progress=progress).path
    named = settings.data.prepared_root / str(dataset)
    if len(path.parts) == 1 and PreparedManifest.exists(named):
        return _check_pixels(named, settings, reprepare, progress)
    return _from_source(str(dataset), settings, progress)
