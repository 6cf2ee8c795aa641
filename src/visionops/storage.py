"""Local paths and bucket URLs behind one interface: fsspec, with errors that say the fix.

Every place that accepts a folder or a file may also take a URL (``s3://``, ``gs://``, any
fsspec protocol). Credentials and endpoints come from each driver's standard environment
(``AWS_*``, ``AWS_ENDPOINT_URL`` / ``FSSPEC_S3_ENDPOINT_URL``, ``GOOGLE_APPLICATION_CREDENTIALS``)
and fsspec's own configuration; visionops adds no settings of its own.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from visionops.errors import StorageError

if TYPE_CHECKING:
    from fsspec import AbstractFileSystem

__all__ = [
    "CREDENTIAL_HINTS",
    "filesystem",
    "is_url",
    "join",
    "public_source",
    "storage_error",
]

# What brings each protocol's driver, for the one-line error when it is missing.
_DRIVERS: dict[str, str] = {
    "s3": "pip install 'visionops[s3]'",
    "s3a": "pip install 'visionops[s3]'",
    "gs": "pip install 'visionops[dvc]'  (or: pip install gcsfs)",
    "gcs": "pip install 'visionops[dvc]'  (or: pip install gcsfs)",
    "az": "pip install adlfs",
    "abfs": "pip install adlfs",
    "abfss": "pip install adlfs",
}

# Where each protocol's driver looks for credentials, named in connection errors.
CREDENTIAL_HINTS: dict[str, str] = {
    "s3": "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (AWS_ENDPOINT_URL for an S3-compatible server)",
    "gs": "GOOGLE_APPLICATION_CREDENTIALS (or `gcloud auth application-default login`)",
    "gcs": "GOOGLE_APPLICATION_CREDENTIALS (or `gcloud auth application-default login`)",
    "az": "AZURE_STORAGE_CONNECTION_STRING or AZURE_STORAGE_ACCOUNT_NAME/KEY",
}


def is_url(location: str | os.PathLike[str]) -> bool:
    """Whether ``location`` names a remote store (``scheme://...``) rather than a local path.

    ``file://`` URLs count as local paths.
    """
    text = os.fspath(location)
    scheme, sep, _ = text.partition("://")
    return bool(sep) and scheme.isidentifier() and scheme.lower() not in ("file", "local")


def _protocol(url: str) -> str:
    return url.partition("://")[0].lower()


def storage_error(url: str, error: BaseException, action: str = "reach") -> StorageError:
    """The one-line error for a URL that failed, naming the credentials its driver reads.

    Args:
        url: The URL the user gave.
        error: What the driver raised.
        action: What was being done (``reach``, ``write to``, ``list``).
    """
    protocol = _protocol(url)
    hint = CREDENTIAL_HINTS.get("s3" if protocol == "s3a" else protocol)
    reason = str(error).splitlines()[0] if str(error) else type(error).__name__
    fix = f"check the URL and {hint}" if hint else "check the URL and its credentials"
    shown = public_source(url)
    if shown != url:  # a presigned URL's signature must not reach the terminal or a log
        reason = reason.replace(url, shown)
    return StorageError(f"cannot {action} {shown}: {reason[:200]}. Fix: {fix}.")


def filesystem(location: str | os.PathLike[str]) -> tuple[AbstractFileSystem, str]:
    """The fsspec filesystem for a local path or URL, and the path inside it.

    Args:
        location: A local path, ``file://`` URL or any fsspec URL.

    Returns:
        ``(fs, path)`` as :func:`fsspec.core.url_to_fs` gives them.

    Raises:
        StorageError: The protocol is unknown or its driver is not installed (the message
            is the ``pip install`` that brings it).
    """
    import fsspec.core

    text = os.fspath(location)
    if not is_url(text):
        text = str(Path(text).expanduser())
    try:
        fs, path = fsspec.core.url_to_fs(text)
    except ImportError as error:
        protocol = _protocol(text)
        install = _DRIVERS.get(protocol, f"pip install the fsspec driver for {protocol}://")
        raise StorageError(
            f"{protocol}:// URLs need a driver that is not installed ({error}). Fix: {install}"
        ) from None
    except ValueError as error:
        if "Protocol not known" in str(error):
            raise StorageError(
                f"unknown URL scheme in {text}. Fix: use a local path or an fsspec URL"
                " such as s3://bucket/prefix or gs://bucket/prefix."
            ) from None
        raise
    return fs, str(path)


def join(base: str, *parts: str) -> str:
    """``base`` joined with ``parts`` by ``/`` for URLs, by the OS for local paths."""
    if is_url(base):
        return "/".join([base.rstrip("/"), *(part.strip("/") for part in parts)])
    return str(Path(base).joinpath(*parts))


def public_source(source: str) -> str:
    """A location as answers and logs show it: a URL without its query or password.

    A presigned ``https://`` URL carries its signature in the query, and a URL may carry
    ``user:password@``; neither belongs in an answer or a log line.
    """
    if not is_url(source):
        return source
    scheme, _, rest = source.partition("://")
    location, _, _ = rest.partition("?")
    host, at, path = location.partition("/")
    if "@" in host:
        host = host.rsplit("@", 1)[1]
    return f"{scheme}://{host}{'/' if at or path else ''}{path}"
