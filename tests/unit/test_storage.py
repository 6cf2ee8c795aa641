"""Local paths and bucket URLs: one interface, one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.s3_helpers import s3_server

from visionops.errors import StorageError
from visionops.storage import filesystem, is_url, join, storage_error


def test_urls_are_told_from_local_paths() -> None:
    assert is_url("s3://bucket/logs")
    assert is_url("gs://bucket")
    assert not is_url("/tmp/logs")
    assert not is_url("runs/x")
    assert not is_url("file:///tmp/logs")
    assert not is_url("C:\\logs")


def test_join_uses_slashes_for_urls_and_the_os_for_paths(tmp_path: Path) -> None:
    assert join("s3://b/logs/", "a", "/b.jsonl") == "s3://b/logs/a/b.jsonl"
    assert join(str(tmp_path), "a") == str(tmp_path / "a")


def test_a_missing_driver_names_the_install_command() -> None:
    with pytest.raises(StorageError, match=r"pip install adlfs"):
        filesystem("az://container/logs")


def test_an_unknown_scheme_is_one_line() -> None:
    with pytest.raises(StorageError, match="unknown URL scheme"):
        filesystem("nosuch://x/y")


def test_connection_errors_name_the_credentials_variables() -> None:
    error = storage_error("s3://b/logs", ConnectionError("refused\nmore"), "list")
    assert "\n" not in str(error)
    assert "cannot list s3://b/logs: refused" in str(error)
    assert "AWS_ENDPOINT_URL" in str(error)
    assert error.exit_code == 2


def test_s3_urls_read_and_write_through_a_real_s3_compatible_server() -> None:
    with s3_server() as server:
        server.make_bucket("bucket")
        fs, path = filesystem("s3://bucket/prefix/a.txt")
        fs.pipe(path, b"hello")
        assert server.keys("bucket") == ["prefix/a.txt"]
        fs2, path2 = filesystem("s3://bucket/prefix")
        assert fs2.ls(path2, detail=False) == ["bucket/prefix/a.txt"]
