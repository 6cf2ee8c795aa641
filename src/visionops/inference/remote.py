"""Bundles from where teams keep them: a bucket URL or a W&B artifact, cached by content.

``visionops serve s3://models/fruit/bundle`` (any fsspec URL: ``gs://``, ``https://``, ...) or
``visionops serve wandb:entity/project/name:alias`` downloads the bundle once into a
content-addressed cache and serves it from there::

    <cache>/objects/<sha256 of visionops.json>/   the verified bundle (read-only use)
    <cache>/refs/<sha256 of the source>.json      which object a source gave last

The sealed manifest records the SHA-256 of every other file, so its own hash addresses the
whole bundle: two sources of the same bytes share one object, and a changed bundle at the
same URL is a new object. A download lands in a temporary folder, is checked by
:func:`~visionops.inference.bundle.load_bundle` (every file against the manifest, the manifest
against the copy sealed in ``model.onnx``), and only then renamed into place: a tampered or
half-downloaded bundle is never cached. When the source cannot be reached, the object its
last download gave is served (a warning says so), so a replica restarts without the network.

Credentials are each driver's own (``AWS_*``, ``GOOGLE_APPLICATION_CREDENTIALS``,
``WANDB_API_KEY``); a failed download is one line naming the URL and the variable.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from loguru import logger
from pydantic import BaseModel, ValidationError

from visionops._io import atomic_write_text
from visionops.artifacts import BundleMeta
from visionops.errors import ArtifactError, StorageError, TrackingError
from visionops.inference.bundle import BUNDLE_MANIFEST, load_bundle
from visionops.storage import filesystem, is_url, public_source, storage_error
from visionops.tracking.model_artifact import (
    WANDB_PREFIX,
    download_bundle_artifact,
    parse_artifact_reference,
)

__all__ = ["CACHE_ENV", "FetchedBundle", "bundle_cache_dir", "fetch_bundle", "is_remote_bundle"]

CACHE_ENV = "VISIONOPS_BUNDLE_CACHE"
"""Where downloaded bundles are kept (default ``$XDG_CACHE_HOME/visionops/bundles``)."""


def is_remote_bundle(source: str) -> bool:
    """Whether a bundle argument names a URL or a W&B artifact rather than a local folder."""
    return source.startswith(WANDB_PREFIX) or is_url(source)


def bundle_cache_dir() -> Path:
    """The bundle cache: ``$VISIONOPS_BUNDLE_CACHE``, else ``$XDG_CACHE_HOME/visionops/bundles``."""
    chosen = os.environ.get(CACHE_ENV)
    if chosen:
        return Path(chosen).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "visionops" / "bundles"


@dataclass(frozen=True)
class FetchedBundle:
    """A remote bundle in the cache.

    Attributes:
        path: Its folder in the cache (verified when it was stored).
        source: The URL or ``wandb:`` reference it came from.
        key: Its content address (SHA-256 of its sealed manifest).
        downloaded: Its files were downloaded now (False: the cache already had them).
        offline: The source could not be reached; this is its last download.
    """

    path: Path
    source: str
    key: str
    downloaded: bool
    offline: bool = False


class _Ref(BaseModel):
    """``refs/<hash>.json``: which object a source gave last, and when."""

    source: str
    key: str
    fetched_at: str


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _ref_path(cache: Path, source: str) -> Path:
    return cache / "refs" / f"{_sha256(source.encode())}.json"


def _object_path(cache: Path, key: str) -> Path:
    return cache / "objects" / key


def _remember(cache: Path, source: str, key: str) -> None:
    ref = _Ref(source=source, key=key, fetched_at=datetime.now(UTC).isoformat(timespec="seconds"))
    path = _ref_path(cache, source)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, ref.model_dump_json(indent=2))


def _last_download(cache: Path, source: str) -> tuple[Path, _Ref] | None:
    path = _ref_path(cache, source)
    try:
        ref = _Ref.model_validate_json(path.read_bytes())
    except (OSError, ValidationError):
        return None
    folder = _object_path(cache, ref.key)
    return (folder, ref) if (folder / BUNDLE_MANIFEST).is_file() else None


def _intact(folder: Path) -> bool:
    try:
        load_bundle(folder, verify=True, allow_unverified=True)
    except ArtifactError as exc:
        logger.warning("the cached bundle {} is damaged: {}", folder, exc)
        return False
    return True


def _store(cache: Path, source: str, staged: Path) -> FetchedBundle:
    """Check a downloaded bundle, then move it into the cache under its content address.

    Raises:
        ArtifactError: It fails the bundle's integrity checks (tampered or damaged).
    """
    manifest = staged / BUNDLE_MANIFEST
    if not manifest.is_file():
        raise ArtifactError(
            f"{source} holds no {BUNDLE_MANIFEST}: it is not a visionops bundle — point at the"
            " folder `visionops export` writes (runs/<run>/bundle), uploaded whole"
        )
    key = _sha256(manifest.read_bytes())
    try:
        load_bundle(staged, verify=True, allow_unverified=True)
    except ArtifactError as exc:
        reason = str(exc).replace(str(staged), source.rstrip("/")).split(" — ")[0].strip()
        raise ArtifactError(
            f"the bundle downloaded from {source} fails its integrity checks ({reason}): it"
            " was changed after export — refusing to serve it; re-export it and upload the"
            " whole bundle folder again"
        ) from None
    target = _object_path(cache, key)
    if (target / BUNDLE_MANIFEST).is_file():
        shutil.rmtree(staged, ignore_errors=True)  # the same bytes arrived another way
    else:
        shutil.rmtree(target, ignore_errors=True)
        os.replace(staged, target)
    _remember(cache, source, key)
    return FetchedBundle(target, source, key, downloaded=True)


def _safe_name(name: str, source: str) -> str:
    if not name or name in {".", ".."} or "/" in name or "\\" in name:
        raise ArtifactError(
            f"the manifest at {source} names the file '{name}' outside the bundle folder —"
            " refusing to download it; re-export the bundle and upload it again"
        )
    return name


def _download_url(source: str, staging: Path, cache: Path) -> str | None:
    """Download a bundle folder from an fsspec URL into ``staging``.

    Returns:
        The content address when the cache already holds these bytes (nothing downloaded),
        else None.

    Raises:
        StorageError: Unreachable or no credentials.
        ArtifactError: No bundle there, or a manifest that is not one.
    """
    fs, root = filesystem(source)
    root = root.rstrip("/")
    try:
        manifest = fs.cat_file(f"{root}/{BUNDLE_MANIFEST}")
    except FileNotFoundError:
        raise ArtifactError(
            f"no bundle at {source}: it has no {BUNDLE_MANIFEST} — point at the bundle folder"
            " `visionops export` writes (e.g. s3://bucket/runs/run-001/bundle), uploaded whole"
        ) from None
    key = _sha256(manifest)
    cached = _object_path(cache, key)
    if (cached / BUNDLE_MANIFEST).is_file():
        if _intact(cached):
            return key
        shutil.rmtree(cached, ignore_errors=True)  # damaged on disk: downloaded again below
    try:
        meta = BundleMeta.model_validate_json(manifest)
    except ValidationError:
        raise ArtifactError(
            f"{source}/{BUNDLE_MANIFEST} is not a visionops bundle manifest — point at the"
            " folder `visionops export` writes"
        ) from None
    (staging / BUNDLE_MANIFEST).write_bytes(manifest)
    for name in meta.files:
        remote = f"{root}/{_safe_name(name, source)}"
        try:
            fs.get_file(remote, str(staging / name))
        except FileNotFoundError:
            raise ArtifactError(
                f"the bundle at {source} lacks {name}, which its manifest lists — upload the"
                " whole bundle folder again"
            ) from None
    return None


def _download(source: str, staging: Path, cache: Path) -> str | None:
    """Download ``source`` into ``staging`` (see :func:`_download_url`); errors in one line."""
    if source.startswith(WANDB_PREFIX):
        download_bundle_artifact(parse_artifact_reference(source), staging)
        return None
    try:
        return _download_url(source, staging, cache)
    except (ArtifactError, StorageError):
        raise
    except Exception as exc:  # the driver's own: connection, credentials, permissions
        raise storage_error(source, exc, "download") from None


def _offline(cache: Path, source: str, unreachable: StorageError | TrackingError) -> FetchedBundle:
    """The last download of an unreachable source, or its error when there is none."""
    last = _last_download(cache, source)
    if last is None or not _intact(last[0]):
        raise unreachable
    folder, ref = last
    logger.warning(
        "cannot download {} now ({}); serving its copy downloaded at {} from the cache {}",
        public_source(source),
        str(unreachable)[:200],
        ref.fetched_at,
        folder,
    )
    return FetchedBundle(folder, source, ref.key, downloaded=False, offline=True)


def fetch_bundle(source: str, cache: Path | None = None) -> FetchedBundle:
    """The bundle a URL or ``wandb:`` reference names, downloaded once and checked.

    Args:
        source: An fsspec URL of a bundle folder (``s3://bucket/runs/run-001/bundle``,
            ``gs://...``, ``https://...``) or ``wandb:entity/project/name[:alias]``.
        cache: The cache folder (None: :func:`bundle_cache_dir`).

    Returns:
        Where the verified bundle is, and whether it was downloaded now, found in the cache,
        or served from the cache because the source could not be reached.

    Raises:
        StorageError: The URL cannot be reached (one line naming the credentials variables)
            and nothing from it is cached.
        TrackingError: The W&B artifact cannot be downloaded (naming ``WANDB_API_KEY``) and
            nothing from it is cached.
        ArtifactError: No bundle there, or one that fails its integrity checks (tampered).
    """
    cache = cache or bundle_cache_dir()
    objects = cache / "objects"
    objects.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".download-{os.getpid()}-", dir=objects))
    try:
        try:
            cached_key = _download(source, staging, cache)
        except (StorageError, TrackingError) as unreachable:
            return _offline(cache, source, unreachable)
        if cached_key is not None:
            _remember(cache, source, cached_key)
            return FetchedBundle(_object_path(cache, cached_key), source, cached_key, False)
        return _store(cache, source, staging)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
