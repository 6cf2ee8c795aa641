"""``visionops data fetch``: get a raw dataset from a source into ``data/raw/<name>/``.

Sources:

- ``demo:<name>``: an embedded synthetic dataset (:mod:`visionops.data.synthetic`);
- ``kaggle:<owner>/<dataset>[/versions/N]``: through ``kagglehub.dataset_download``, whose
  cache (``KAGGLEHUB_CACHE``, default ``~/.cache/kagglehub``) also serves offline;
- a local folder, copied;
- a local ``.zip``, ``.tar``, ``.tar.gz``, ``.tgz``, ``.tar.bz2`` or ``.tar.xz`` archive,
  unpacked safely (no absolute paths, ``..``, links or devices; size capped by
  ``data.max_archive_bytes``).

The raw folder is built under a temporary name and moved into place only when complete, with
a ``source.json`` that records the source, a version, the file count, total size and a content
fingerprint (see ``docs/artifacts.md``). Fetching the same source again is a no-op unless
``force=True``.

Examples:
    >>> from visionops.config import load_settings
    >>> result = fetch_dataset("demo:shapes", load_settings())
    >>> result.path
    PosixPath('data/raw/shapes')
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import shutil
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Literal

from loguru import logger

from visionops import __version__
from visionops._io import artifact_lock, atomic_dir, clean_stale_temps, file_sha256
from visionops.artifacts import SourceRecord
from visionops.config import Settings
from visionops.data import synthetic
from visionops.data.layouts import SOURCE_FILE, list_files
from visionops.errors import ArtifactError, SourceError
from visionops.progress import NULL_PROGRESS, ProgressReporter

__all__ = [
    "ARCHIVE_SUFFIXES",
    "SOURCE_FILE",
    "SOURCE_FORMS",
    "FetchResult",
    "SourceSpec",
    "dataset_fingerprint",
    "fetch_dataset",
    "parse_source",
    "raw_folder_for",
    "read_source_info",
]

ARCHIVE_SUFFIXES: tuple[str, ...] = (".tar.gz", ".tar.bz2", ".tar.xz", ".tgz", ".tar", ".zip")
SOURCE_FORMS = (
    "demo:<name> (" + ", ".join(f"demo:{name}" for name in synthetic.DEMOS) + "),"
    " kaggle:<owner>/<dataset> (optionally /versions/<N>), a local folder, or a local"
    " .zip/.tar/.tar.gz/.tgz/.tar.bz2/.tar.xz archive"
)
"""The accepted source forms, for error messages and help text."""

_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_CHUNK = 1 << 20
_LOCK_HINT = (
    "another `visionops data fetch` is writing it; wait for it to finish (fetching the same"
    " source again is then a no-op), or fetch under another --name"
)


@dataclass(frozen=True)
class FetchResult:
    """What :func:`fetch_dataset` did.

    Attributes:
        path: The raw dataset folder (``<raw_root>/<name>``).
        name: The dataset name.
        skipped: True when the same source was already there and nothing was fetched.
        source_info: The folder's ``source.json``.
    """

    path: Path
    name: str
    skipped: bool
    source_info: SourceRecord


@dataclass(frozen=True)
class SourceSpec:
    """A parsed fetch source.

    Attributes:
        kind: ``demo``, ``kaggle``, ``folder`` or ``archive``.
        source: The canonical source string recorded in ``source.json`` (``demo:shapes``,
            ``kaggle:owner/dataset``, or the absolute path of a folder or archive).
        target: The demo name, the Kaggle handle, or the path.
        default_name: The dataset name used when none is given.
    """

    kind: Literal["demo", "kaggle", "folder", "archive"]
    source: str
    target: str
    default_name: str


# --------------------------------------------------------------------------- sources


def _archive_suffix(path: Path) -> str | None:
    lowered = path.name.lower()
    for suffix in ARCHIVE_SUFFIXES:
        if lowered.endswith(suffix) and len(lowered) > len(suffix):
            return suffix
    return None


def _clean_name(raw: str) -> str:
    """Turn a folder or file stem into a valid dataset name."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", raw).strip("-._")[:100]
    return cleaned or "dataset"


def parse_source(source: str) -> SourceSpec:
    """Recognise a fetch source string.

    Args:
        source: ``demo:<name>``, ``kaggle:<owner>/<dataset>[/versions/N]``, a folder path or
            an archive path.

    Returns:
        The parsed source.

    Raises:
        SourceError: The string is none of the accepted forms, names an unknown demo, is a
            malformed Kaggle handle, or a path that does not exist.
    """
    text = source.strip()
    if not text:
        raise SourceError(f"no source given — accepted sources: {SOURCE_FORMS}")
    if text.startswith("demo:"):
        demo = synthetic.demo_name(text)
        return SourceSpec("demo", f"demo:{demo}", demo, demo)
    if text.startswith("kaggle:"):
        handle = text.removeprefix("kaggle:").strip("/")
        parts = handle.split("/")
        valid = all(_NAME_PATTERN.match(part) for part in parts) and (
            len(parts) == 2 or (len(parts) == 4 and parts[2] == "versions" and parts[3].isdigit())
        )
        if not valid:
            raise SourceError(
                f"'{source}' is not a Kaggle dataset handle — write"
                " kaggle:<owner>/<dataset> or kaggle:<owner>/<dataset>/versions/<N>"
            )
        return SourceSpec("kaggle", f"kaggle:{handle}", handle, _clean_name(parts[1]))
    path = Path(text).expanduser()
    if path.is_dir():
        resolved = path.resolve()
        return SourceSpec("folder", str(resolved), str(resolved), _clean_name(resolved.name))
    suffix = _archive_suffix(path)
    if path.is_file():
        if suffix is None:
            raise SourceError(
                f"{text} is a file but not a supported archive — accepted sources: {SOURCE_FORMS}"
            )
        resolved = path.resolve()
        stem = resolved.name[: -len(suffix)]
        return SourceSpec("archive", str(resolved), str(resolved), _clean_name(stem))
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]+:", text):
        raise SourceError(
            f"unsupported source '{text}' — download it yourself and fetch the folder or"
            f" archive; accepted sources: {SOURCE_FORMS}"
        )
    hint = ""
    if text in synthetic.DEMOS:
        hint = f"did you mean 'demo:{text}'? "
    elif re.match(r"^[\w.-]+/[\w.-]+$", text):
        hint = f"for a Kaggle dataset write 'kaggle:{text}'; "
    raise SourceError(f"no such file or folder: {text} — {hint}accepted sources: {SOURCE_FORMS}")


def raw_folder_for(source: str, settings: Settings) -> Path:
    """Where :func:`fetch_dataset` puts ``source`` by default: ``<raw_root>/<default name>``.

    Args:
        source: A source string (see :func:`parse_source`).
        settings: Resolved settings (``data.raw_root``).

    Raises:
        SourceError: The source is malformed (see :func:`parse_source`).

    Examples:
        >>> raw_folder_for("kaggle:msambare/fer2013/versions/3", settings)  # doctest: +SKIP
        PosixPath('data/raw/fer2013')
    """
    return settings.data.raw_root / parse_source(source).default_name


def _check_name(name: str) -> str:
    if not _NAME_PATTERN.match(name) or name in {".", ".."}:
        raise SourceError(
            f"dataset name '{name}' is not valid — use letters, digits, '.', '_' and '-'"
            " (starting with a letter or digit), e.g. --name shapes-v2"
        )
    return name


# --------------------------------------------------------------------------- fingerprint


def dataset_fingerprint(
    folder: Path, progress: ProgressReporter = NULL_PROGRESS
) -> tuple[int, int, str]:
    """Count, size and fingerprint the files of a raw dataset.

    The files are those :func:`visionops.data.layouts.list_files` lists (hidden files and the
    top-level ``source.json`` left out), so ``data preprocess`` computes the same fingerprint
    for the same folder. The fingerprint is the SHA-256 over one record per file, in sorted
    order of relative POSIX path: relative path, NUL, size, NUL, SHA-256 of the content,
    newline.

    Args:
        folder: The dataset folder.
        progress: Receives one bar over the files hashed.

    Returns:
        ``(file_count, total_bytes, fingerprint)``.
    """
    files = list_files(folder)
    digest = hashlib.sha256()
    total = 0
    task = progress.start("fingerprinting", total=len(files))
    for relative in files:
        path = folder / relative
        size = path.stat().st_size
        total += size
        digest.update(f"{relative}\0{size}\0{file_sha256(path)}\n".encode())
        task.advance()
    task.close()
    return len(files), total, digest.hexdigest()


def read_source_info(folder: Path) -> SourceRecord | None:
    """Read a raw dataset's ``source.json``, or None if it has none (or an unreadable one).

    Args:
        folder: A raw dataset folder.

    Returns:
        The record when it is a valid visionops raw-dataset record, else None.
    """
    try:
        return SourceRecord.read(folder / SOURCE_FILE)
    except ArtifactError:
        return None


# --------------------------------------------------------------------------- folder copy


def _copy_folder(source: Path, target: Path, progress: ProgressReporter, label: str) -> None:
    files: list[Path] = []
    for directory, subdirs, names in os.walk(source):
        here = Path(directory)
        for subdir in list(subdirs):
            if (here / subdir).is_symlink():
                logger.warning(f"skipped linked folder {here / subdir} (links are not followed)")
                subdirs.remove(subdir)
        for name in names:
            path = here / name
            if here == source and name == SOURCE_FILE:
                continue  # a previous fetch's record; this fetch writes its own
            if path.is_symlink():
                # A link can point anywhere (/etc/passwd): never copy or fingerprint it.
                logger.warning(f"skipped linked file {path} (links are not followed)")
                continue
            try:
                mode = path.stat().st_mode
            except OSError:
                logger.warning(f"skipped {path}: broken link or unreadable")
                continue
            if not stat.S_ISREG(mode):
                logger.warning(f"skipped {path}: not a regular file")
                continue
            files.append(path)
    task = progress.start(label, total=len(files))
    for path in sorted(files):
        destination = target / path.relative_to(source)
        destination.parent.mkdir(parents=True, exist_ok=True)
        try:
            shutil.copy2(path, destination)
        except OSError as exc:
            raise SourceError(
                f"cannot copy {path}: {exc.strerror or exc} — check the file's permissions"
                " and the free disk space"
            ) from None
        task.advance()
    task.close()


# --------------------------------------------------------------------------- archives


def _human(size: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1024 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TB"  # pragma: no cover


def _unsafe(archive: Path, member: str, reason: str) -> SourceError:
    return SourceError(
        f"archive {archive.name} is unsafe: member '{member}' {reason} — visionops refuses to"
        " unpack it; unpack it yourself, check its contents and fetch the folder"
    )


def _safe_parts(archive: Path, member: str) -> tuple[str, ...]:
    """The path components of an archive member, refusing anything that could escape."""
    if member.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", member):
        raise _unsafe(archive, member, "has an absolute path")
    parts = tuple(part for part in re.split(r"[\\/]+", member) if part not in {"", "."})
    if ".." in parts:
        raise _unsafe(archive, member, "has a '..' path component")
    if any("\x00" in part for part in parts):
        raise _unsafe(archive, member, "has a NUL byte in its name")
    return parts


def _too_large(archive: Path, size: int, cap: int, how: str) -> SourceError:
    return SourceError(
        f"archive {archive.name} {how} {_human(size)}, above the data.max_archive_bytes limit"
        f" of {_human(cap)} — if you trust it, raise the limit, e.g. data.max_archive_bytes={size}"
    )


class _Budget:
    """Counts bytes actually written while unpacking, against the cap."""

    def __init__(self, archive: Path, cap: int) -> None:
        self.archive = archive
        self.cap = cap
        self.written = 0

    def copy(self, source: IO[bytes], destination: Path) -> None:
        with destination.open("wb") as handle:
            while chunk := source.read(_CHUNK):
                self.written += len(chunk)
                if self.written > self.cap:
                    raise _too_large(self.archive, self.written, self.cap, "unpacks to more than")
                handle.write(chunk)


@dataclass(frozen=True)
class _Member:
    """One archive member that passed the safety checks, and how to read it.

    Attributes:
        name: Its name in the archive (for messages).
        parts: Its path below the target folder (empty for the archive's root).
        is_dir: Whether it is a folder.
        size: The size it declares.
        open: Opens its content (files only).
    """

    name: str
    parts: tuple[str, ...]
    is_dir: bool
    size: int
    open: Callable[[], IO[bytes] | None]


def _write_members(
    archive: Path, target: Path, members: list[_Member], cap: int, progress: ProgressReporter
) -> None:
    """Write checked members under ``target``: the declared total, then every byte, is capped."""
    declared = sum(member.size for member in members if not member.is_dir)
    if declared > cap:
        raise _too_large(archive, declared, cap, "declares")
    budget = _Budget(archive, cap)
    task = progress.start(f"unpacking {archive.name}", total=len(members))
    for member in members:
        if member.parts:
            destination = target.joinpath(*member.parts)
            if member.is_dir:
                destination.mkdir(parents=True, exist_ok=True)
            else:
                destination.parent.mkdir(parents=True, exist_ok=True)
                handle = member.open()
                if handle is None:  # pragma: no cover - regular tar members always have data
                    raise _unsafe(archive, member.name, "has no data")
                with handle:
                    budget.copy(handle, destination)
        task.advance()
    task.close()


def _conflicting(archive: Path, exc: OSError) -> SourceError:
    return SourceError(
        f"archive {archive.name} has conflicting members ({exc.filename}) — unpack it"
        " yourself and fetch the folder"
    )


def _unpack_zip(archive: Path, target: Path, cap: int, progress: ProgressReporter) -> None:
    try:
        with zipfile.ZipFile(archive) as bundle:
            members: list[_Member] = []
            for info in bundle.infolist():
                parts = _safe_parts(archive, info.filename)
                kind = stat.S_IFMT(info.external_attr >> 16)
                if kind == stat.S_IFLNK:
                    raise _unsafe(archive, info.filename, "is a symbolic link")
                if kind not in {0, stat.S_IFREG, stat.S_IFDIR}:
                    raise _unsafe(archive, info.filename, "is a device, fifo or socket")
                if info.flag_bits & 0x1:
                    raise SourceError(
                        f"archive {archive.name} is encrypted (member '{info.filename}') —"
                        " decrypt it yourself and fetch the folder"
                    )
                members.append(
                    _Member(
                        info.filename,
                        parts,
                        info.is_dir(),
                        info.file_size,
                        functools.partial(bundle.open, info),
                    )
                )
            _write_members(archive, target, members, cap, progress)
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as exc:
        raise SourceError(
            f"archive {archive.name} is corrupt or not a zip file ({exc}) — download it again"
        ) from None
    except (FileExistsError, NotADirectoryError, IsADirectoryError) as exc:
        raise _conflicting(archive, exc) from None


def _unpack_tar(archive: Path, target: Path, cap: int, progress: ProgressReporter) -> None:
    try:
        with tarfile.open(archive, "r:*") as bundle:
            # Reading every header first means a bad member is refused before any byte
            # is written, and the declared total can be checked up front.
            members: list[_Member] = []
            for member in bundle.getmembers():
                parts = _safe_parts(archive, member.name)
                if member.issym():
                    raise _unsafe(archive, member.name, "is a symbolic link")
                if member.islnk():
                    raise _unsafe(archive, member.name, "is a hard link")
                if member.ischr() or member.isblk() or member.isfifo():
                    raise _unsafe(archive, member.name, "is a device or fifo")
                if not (member.isreg() or member.isdir()):
                    raise _unsafe(archive, member.name, "is not a regular file or folder")
                members.append(
                    _Member(
                        member.name,
                        parts,
                        member.isdir(),
                        member.size if member.isreg() else 0,
                        functools.partial(bundle.extractfile, member),
                    )
                )
            _write_members(archive, target, members, cap, progress)
    except (tarfile.TarError, zlib.error, EOFError, OSError) as exc:
        if isinstance(exc, (FileExistsError, NotADirectoryError, IsADirectoryError)):
            raise _conflicting(archive, exc) from None
        raise SourceError(
            f"archive {archive.name} is corrupt or not a {_archive_suffix(archive)} file"
            f" ({exc}) — download it again"
        ) from None


def _unpack(archive: Path, target: Path, cap: int, progress: ProgressReporter) -> None:
    if _archive_suffix(archive) == ".zip":
        _unpack_zip(archive, target, cap, progress)
    else:
        _unpack_tar(archive, target, cap, progress)


# --------------------------------------------------------------------------- kaggle

_NO_CACHE_FIX = (
    "fill KAGGLEHUB_CACHE with a cached copy (a kagglehub cache folder from a machine that"
    " downloaded it), or download the dataset manually and run"
    " `visionops data fetch /path/to/folder`"
)


def _kaggle_cached(handle_text: str) -> tuple[Path, int] | None:
    """The newest complete copy of a dataset in kagglehub's cache, if any (no network)."""
    from kagglehub.cache import Cache
    from kagglehub.config import get_cache_folder
    from kagglehub.handle import parse_dataset_handle

    handle = parse_dataset_handle(handle_text)
    cache = Cache()
    if handle.is_versioned():
        versions = [int(handle.version or 0)]
    else:
        root = Path(get_cache_folder()) / "datasets" / handle.owner / handle.dataset / "versions"
        found = [int(p.name) for p in root.iterdir() if p.name.isdigit()] if root.is_dir() else []
        versions = sorted(found, reverse=True)
    for version in versions:
        hit = cache.load_from_cache(handle.with_version(version))
        if hit is not None and Path(hit).is_dir():
            return Path(hit), version
    return None


def _version_from_path(path: Path) -> int | None:
    parts = path.parts
    if len(parts) >= 2 and parts[-2] == "versions" and parts[-1].isdigit():
        return int(parts[-1])
    return None


def _is_network_error(exc: BaseException) -> bool:
    import requests

    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, (requests.ConnectionError, requests.Timeout, ConnectionError)):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _kaggle_status(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    return status if isinstance(status, int) else None


def _kaggle_download(handle_text: str) -> tuple[Path, int | None]:
    """Resolve a Kaggle dataset to a local folder: the cache first when pinned, else kagglehub.

    Returns:
        The folder holding the dataset's files and its version number (when known).
    """
    from kagglehub.config import get_cache_folder

    cache_folder = get_cache_folder()
    cached = _kaggle_cached(handle_text)
    pinned = "/versions/" in handle_text
    if pinned and cached is not None:
        logger.info(f"using kaggle:{handle_text} from the kagglehub cache {cache_folder}")
        return cached
    import kagglehub
    from kagglehub.exceptions import UnauthenticatedError

    try:
        path = Path(kagglehub.dataset_download(handle_text))
    except Exception as exc:  # kagglehub raises many types; each is mapped to one message
        status = _kaggle_status(exc)
        unauthorised = isinstance(exc, UnauthenticatedError) or status in {401, 403}
        if cached is not None and (_is_network_error(exc) or unauthorised):
            logger.warning(
                f"cannot reach Kaggle ({type(exc).__name__}); using cached version"
                f" {cached[1]} of kaggle:{handle_text} from {cache_folder}"
            )
            return cached
        if _is_network_error(exc):
            raise SourceError(
                f"cannot download kaggle:{handle_text}: no network connection to Kaggle, and"
                f" the kagglehub cache ({cache_folder}) has no copy — {_NO_CACHE_FIX}"
            ) from None
        if unauthorised:
            raise SourceError(
                f"Kaggle refused kaggle:{handle_text} (not authenticated or no access) — set"
                " KAGGLE_USERNAME and KAGGLE_KEY (or ~/.kaggle/kaggle.json), accept the"
                f" dataset's terms on kaggle.com, or {_NO_CACHE_FIX}"
            ) from None
        if status == 404:
            raise SourceError(
                f"Kaggle has no dataset kaggle:{handle_text} — check the owner/dataset"
                " spelling on kaggle.com (the URL is kaggle.com/datasets/<owner>/<dataset>)"
            ) from None
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise SourceError(
            f"kagglehub could not fetch kaggle:{handle_text} ({reason}) — {_NO_CACHE_FIX}"
        ) from None
    return path, _version_from_path(path)


# --------------------------------------------------------------------------- fetch


def _existing_record(
    dest: Path, spec: SourceSpec, version: str | None, force: bool
) -> SourceRecord | None:
    """Decide what to do with an existing destination: a record to reuse, or None to fetch."""
    if not dest.exists() and not dest.is_symlink():
        return None
    if not dest.is_dir() or dest.is_symlink():
        raise SourceError(
            f"{dest} exists and is not a plain folder (a file or a link) — move it away or"
            " fetch with --name OTHER"
        )
    info = read_source_info(dest)
    if info is None:
        if force:
            logger.warning(f"replacing {dest}, which was not made by visionops (--force)")
            return None
        raise SourceError(
            f"{dest} already exists and was not made by visionops (no {SOURCE_FILE}) — pass"
            " --force to replace it, or --name OTHER to fetch next to it"
        )
    if force:
        logger.info(f"fetching {spec.source} again into {dest} (--force)")
        return None
    if info.source != spec.source:
        raise SourceError(
            f"{dest} already holds {info.source} — pass --name OTHER to keep both,"
            " or --force to replace it"
        )
    if version is not None and info.version != version:
        logger.info(
            f"{dest} holds {spec.source} made with {info.version}; the settings now say"
            f" {version}, so it is made again"
        )
        return None
    return info


def fetch_dataset(
    source: str | None,
    settings: Settings,
    *,
    name: str | None = None,
    force: bool = False,
    progress: ProgressReporter = NULL_PROGRESS,
) -> FetchResult:
    """Fetch a dataset into ``<settings.data.raw_root>/<name>/`` with a ``source.json``.

    Args:
        source: A source string (see :func:`parse_source`); None or empty uses
            ``settings.data.source``.
        settings: Resolved settings (``data.raw_root``, ``data.demo``,
            ``data.max_archive_bytes``).
        name: Dataset folder name; default: derived from the source (``demo:shapes`` →
            ``shapes``, ``kaggle:owner/dataset`` → ``dataset``, a folder or archive → its stem).
        force: Fetch again even if the same source is there, and replace a folder that was
            not made by visionops.
        progress: Receives bars while generating, copying, unpacking and fingerprinting.

    Returns:
        Where the data went and its ``source.json``; ``skipped`` when nothing was done.

    Raises:
        SourceError: Unknown or unreachable source, unsafe or oversized archive, or a
            destination that holds something else.

    Examples:
        >>> fetch_dataset("kaggle:msambare/fer2013", settings).path  # doctest: +SKIP
        PosixPath('data/raw/fer2013')
    """
    spec = parse_source(source or settings.data.source)
    dataset_name = _check_name(name or spec.default_name)
    raw_root = settings.data.raw_root
    dest = raw_root / dataset_name
    demo_settings = settings.data.demo
    version = synthetic.demo_version(demo_settings) if spec.kind == "demo" else None

    if spec.kind in {"folder", "archive"}:
        origin = Path(spec.target)
        resolved_dest = dest.resolve()
        if origin == resolved_dest or resolved_dest in origin.parents:
            raise SourceError(
                f"{origin} is inside the destination {dest} — fetch it under another name"
                " with --name OTHER"
            )
        if spec.kind == "folder" and origin in resolved_dest.parents:
            raise SourceError(
                f"the folder {origin} contains the destination {dest} — move the dataset"
                " into a folder of its own, or set data.raw_root outside it"
            )

    with artifact_lock(dest, hint=_LOCK_HINT):
        removed = clean_stale_temps(raw_root, f".{dataset_name}.*.tmp")
        if removed:
            logger.info(
                f"removed {len(removed)} leftover(s) of an interrupted fetch:"
                f" {', '.join(path.name for path in removed)}"
            )
        existing = _existing_record(dest, spec, version, force)
        if existing is not None:
            logger.debug(f"{dest} already holds {spec.source}: nothing to do")
            return FetchResult(path=dest, name=dataset_name, skipped=True, source_info=existing)

        kaggle_folder: Path | None = None
        if spec.kind == "kaggle":
            kaggle_folder, kaggle_version = _kaggle_download(spec.target)
            version = None if kaggle_version is None else str(kaggle_version)
        elif spec.kind == "archive":
            version = f"sha256={file_sha256(Path(spec.target))}"

        with atomic_dir(dest) as tmp:
            if spec.kind == "demo":
                synthetic.generate_demo(spec.target, tmp, demo_settings, progress)
            elif spec.kind == "kaggle":
                assert kaggle_folder is not None
                _copy_folder(kaggle_folder, tmp, progress, f"copying kaggle:{spec.target}")
            elif spec.kind == "folder":
                _copy_folder(Path(spec.target), tmp, progress, f"copying {Path(spec.target).name}")
            else:
                _unpack(Path(spec.target), tmp, settings.data.max_archive_bytes, progress)
            file_count, total_bytes, fingerprint = dataset_fingerprint(tmp, progress)
            if file_count == 0:
                raise SourceError(
                    f"{spec.source} holds no files — check the source; nothing was written"
                )
            info = SourceRecord(
                name=dataset_name,
                source=spec.source,
                version=version,
                file_count=file_count,
                bytes=total_bytes,
                fingerprint=fingerprint,
                fetched_at=datetime.now(UTC).isoformat(timespec="seconds"),
                visionops_version=__version__,
            )
            info.write(tmp / SOURCE_FILE)
    logger.debug(f"fetched {spec.source} into {dest}: {file_count} files, {_human(total_bytes)}")
    return FetchResult(path=dest, name=dataset_name, skipped=False, source_info=info)
