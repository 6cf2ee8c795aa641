"""What ``visionops predict`` reads: image files, folders, bucket prefixes and list files.

A location is a local path or any fsspec URL (``s3://bucket/prefix``, ``gs://...``). A folder
or prefix is listed recursively for image suffixes, sorted; a ``.txt`` / ``.lst`` file names
one image path or URL per line (blank lines and ``#`` comments skipped). Every input is kept as
a string, the key ``--resume`` matches rows on.

Examples:
    >>> list_inputs(["photos/", "s3://archive/2026-11/"])  # doctest: +SKIP
    ['photos/a.jpg', 's3://archive/2026-11/cam1/0001.jpg', ...]
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from visionops.errors import DataError
from visionops.imaging import IMAGE_SUFFIXES
from visionops.storage import filesystem, is_url, storage_error

if TYPE_CHECKING:
    from fsspec import AbstractFileSystem

__all__ = ["LIST_SUFFIXES", "InputReader", "find_images", "list_inputs"]

LIST_SUFFIXES = frozenset({".txt", ".lst"})
_NO_IMAGES = "pass JPEG, PNG, BMP, GIF, TIFF, WebP or PNM files, folders or bucket prefixes"


def _is_image(name: str) -> bool:
    return Path(name).suffix.lower() in IMAGE_SUFFIXES


def find_images(paths: Sequence[Path]) -> list[Path]:
    """Every image file named or inside a named folder (recursive, sorted, by suffix).

    Raises:
        DataError: A path that does not exist, or no image at all.
    """
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found.extend(sorted(p for p in path.rglob("*") if p.is_file() and _is_image(p.name)))
        elif path.is_file():
            found.append(path)
        else:
            raise DataError(f"{path} does not exist — pass image files or folders of images")
    if not found:
        shown = ", ".join(str(p) for p in paths[:3])
        raise DataError(f"no image files in {shown} — {_NO_IMAGES}")
    return found


def _list_file_lines(text: str) -> list[str]:
    lines = (line.strip() for line in text.splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def _list_url(url: str) -> list[str]:
    fs, root = filesystem(url)
    try:
        if fs.isfile(root):
            if Path(root).suffix.lower() in LIST_SUFFIXES:
                return _list_file_lines(fs.cat_file(root).decode("utf-8"))
            return [url]
        found = sorted(p for p in fs.find(root) if _is_image(p))
    except Exception as error:
        # Drivers raise their own types for unreachable endpoints (botocore, aiohttp).
        raise storage_error(url, error, "list") from None
    return [fs.unstrip_protocol(p) for p in found]


def list_inputs(locations: Sequence[str]) -> list[str]:
    """Every image the locations name, in order: files, folders, prefixes and list files.

    Args:
        locations: Local paths or fsspec URLs: an image, a folder or prefix (listed
            recursively for image suffixes, sorted), or a ``.txt`` / ``.lst`` file with one
            image path or URL per line.

    Returns:
        One string per image (a local path or a URL), as rows name it.

    Raises:
        DataError: A local path that does not exist, or no image at all.
        StorageError: A bucket that cannot be reached or listed (naming the URL).
    """
    found: list[str] = []
    for location in locations:
        if is_url(location):
            found.extend(_list_url(location))
            continue
        path = Path(location).expanduser()
        if path.is_dir():
            found.extend(str(p) for p in find_images([path]))
        elif path.is_file() and path.suffix.lower() in LIST_SUFFIXES:
            found.extend(_list_file_lines(path.read_text(encoding="utf-8")))
        elif path.is_file():
            found.append(location)
        else:
            raise DataError(f"{location} does not exist — pass image files, folders or URLs")
    if not found:
        shown = ", ".join(locations[:3])
        raise DataError(f"no image files in {shown} — {_NO_IMAGES}")
    return found


class InputReader:
    """Reads an input's bytes, local or remote, from any thread.

    One filesystem per protocol is kept (fsspec drivers pool their connections), so a
    million small objects do not open a million sessions.
    """

    def __init__(self) -> None:
        self._filesystems: dict[str, AbstractFileSystem] = {}
        self._lock = threading.Lock()

    def read(self, location: str) -> bytes:
        """The bytes of one input.

        Raises:
            OSError: The file or object cannot be read (a row's error, not an abort).
        """
        if not is_url(location):
            return Path(location).read_bytes()
        protocol = location.partition("://")[0]
        with self._lock:
            fs = self._filesystems.get(protocol)
            if fs is None:
                fs, _ = filesystem(location)
                self._filesystems[protocol] = fs
        try:
            return bytes(fs.cat_file(fs._strip_protocol(location)))
        except OSError:
            raise
        except Exception as error:
            # Drivers raise their own types (botocore, aiohttp): one error type for the row.
            raise OSError(f"cannot read {location}: {error}") from None
