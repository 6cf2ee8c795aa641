"""Bundles from a bucket (a real S3-compatible server) and from W&B, through the cache."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from bundle_helpers import make_bundle
from s3_helpers import S3Server, s3_server
from visionops.errors import ArtifactError, StorageError, TrackingError
from visionops.inference import remote
from visionops.inference.bundle import load_bundle
from visionops.inference.remote import fetch_bundle, is_remote_bundle
from visionops.tracking.model_artifact import parse_artifact_reference


def upload(server: S3Server, bundle: Path, bucket: str, prefix: str) -> str:
    client = server.client()
    for path in sorted(bundle.iterdir()):
        client.upload_file(str(path), bucket, f"{prefix}/{path.name}")
    return f"s3://{bucket}/{prefix}"


def objects(cache: Path) -> list[str]:
    return sorted(p.name for p in (cache / "objects").iterdir())


def test_a_bucket_bundle_is_downloaded_once_and_served_offline(tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path / "bundle")
    cache = tmp_path / "cache"
    with s3_server() as server:
        server.make_bucket("models")
        url = upload(server, bundle, "models", "runs/tiny/bundle")
        first = fetch_bundle(url, cache)
        second = fetch_bundle(url + "/", cache)  # another spelling, the same bytes
        assert (first.downloaded, second.downloaded) == (True, False)
        assert first.path == second.path == cache / "objects" / first.key
        assert len(first.key) == 64
        assert objects(cache) == [first.key]  # nothing half-downloaded left behind
        for name in ("model.onnx", "visionops.json", "parity.json", "reference.npz"):
            assert (first.path / name).read_bytes() == (bundle / name).read_bytes()
        assert load_bundle(first.path).model_version == load_bundle(bundle).model_version
        server.stop()
        offline = fetch_bundle(url, cache)
        assert (offline.offline, offline.downloaded, offline.path) == (True, False, first.path)
        with pytest.raises(StorageError) as never_fetched:
            fetch_bundle("s3://models/runs/other/bundle", cache)
    message = str(never_fetched.value)
    assert "\n" not in message
    assert "s3://models/runs/other/bundle" in message
    assert "AWS_ACCESS_KEY_ID" in message


def test_a_tampered_download_is_refused_and_not_cached(tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path / "bundle")
    tampered = Path(shutil.copytree(bundle, tmp_path / "tampered"))
    labels = (tampered / "parity.json").read_text().replace("true", "false")
    (tampered / "parity.json").write_text(labels)
    cache = tmp_path / "cache"
    with s3_server() as server:
        server.make_bucket("models")
        url = upload(server, tampered, "models", "tampered/bundle")
        with pytest.raises(ArtifactError) as refused:
            fetch_bundle(url, cache)
        with pytest.raises(ArtifactError, match="no bundle at s3://models/nothing"):
            fetch_bundle("s3://models/nothing", cache)
    message = str(refused.value)
    assert message.startswith(f"the bundle downloaded from {url} fails its integrity checks")
    assert "parity.json was modified after export" in message
    assert objects(cache) == []


def test_a_damaged_cache_copy_is_downloaded_again(tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path / "bundle")
    cache = tmp_path / "cache"
    with s3_server() as server:
        server.make_bucket("models")
        url = upload(server, bundle, "models", "b")
        first = fetch_bundle(url, cache)
        (first.path / "reference.npz").write_bytes(b"changed on disk")
        again = fetch_bundle(url, cache)
    assert again.downloaded
    assert (again.path / "reference.npz").read_bytes() == (bundle / "reference.npz").read_bytes()


# ------------------------------------------------------------------ W&B, without a server


def test_wandb_references_are_parsed(tmp_path: Path) -> None:
    reference = parse_artifact_reference("wandb:team/fruit/run-007-bundle:v3")
    assert (reference.entity, reference.project, reference.name, reference.alias) == (
        "team",
        "fruit",
        "run-007-bundle",
        "v3",
    )
    assert parse_artifact_reference("wandb:team/fruit/run-007-bundle").alias == "latest"
    assert str(reference) == "wandb:team/fruit/run-007-bundle:v3"
    assert is_remote_bundle("wandb:team/fruit/x") and is_remote_bundle("gs://b/x")
    assert not is_remote_bundle("runs/x")
    with pytest.raises(ArtifactError, match="wandb:entity/project/name:alias"):
        fetch_bundle("wandb:only-two/parts", tmp_path / "cache")


def test_wandb_without_a_key_is_one_line_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    with pytest.raises(TrackingError) as failed:
        fetch_bundle("wandb:team/fruit/run-007-bundle:latest", tmp_path / "cache")
    message = str(failed.value)
    assert "\n" not in message
    assert message.startswith("cannot download wandb:team/fruit/run-007-bundle:latest")
    assert "WANDB_API_KEY" in message
    assert objects(tmp_path / "cache") == []


def test_wandb_is_served_from_the_cache_when_it_cannot_be_reached(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    source = "wandb:team/fruit/run-007-bundle:latest"
    cache = tmp_path / "cache"
    # What a download through wandb's client leaves: the artifact's files, stored as such.
    staged = make_bundle(cache / "objects" / ".download-earlier")
    stored = remote._store(cache, source, staged)
    fetched = fetch_bundle(source, cache)
    assert (fetched.offline, fetched.path, fetched.key) == (True, stored.path, stored.key)
    assert load_bundle(fetched.path).task == "classification"
