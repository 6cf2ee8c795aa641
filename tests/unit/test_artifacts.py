"""The typed artifact models: one place that reads, validates and writes every manifest."""

from __future__ import annotations

import json
import os
import stat
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from visionops.artifacts import (
    BundleMeta,
    PredictionRecord,
    PreparedManifest,
    RunRecord,
    SourceRecord,
)
from visionops.errors import ArtifactError


def _source() -> SourceRecord:
    return SourceRecord(
        name="shapes", source="demo:shapes", file_count=3, bytes=30, fingerprint="abc"
    )


def _prepared() -> PreparedManifest:
    return PreparedManifest(
        name="shapes",
        task="classification",
        class_names=["circle", "square"],
        image_size=32,
        channels=3,
        mean=[0.5] * 3,
        std=[0.25] * 3,
        source=_source(),
        fingerprint="def",
    )


def test_round_trip_keeps_kind_version_and_unknown_fields(tmp_path: Path) -> None:
    manifest = _prepared()
    written = manifest.write(tmp_path)
    # What the writer puts on disk is the format under test: read as JSON on purpose.
    data = json.loads(written.read_text())
    assert written == tmp_path / "manifest.json"
    assert data["kind"] == "visionops.prepared" and data["schema_version"] == 1
    data["added_by_a_newer_writer"] = {"x": 1}
    written.write_text(json.dumps(data))
    again = PreparedManifest.read(tmp_path)
    assert again.image_size == 32 and again.labels == ["circle", "square"]
    again.write(tmp_path)
    assert json.loads(written.read_text())["added_by_a_newer_writer"] == {"x": 1}


def test_missing_artifact_names_the_command_that_makes_it(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match=r"visionops train"):
        RunRecord.read(tmp_path)
    with pytest.raises(ArtifactError, match=r"visionops export"):
        BundleMeta.read(tmp_path / "visionops.json")


def test_another_kind_is_refused_with_what_it_is(tmp_path: Path) -> None:
    _source().write(tmp_path / "manifest.json")
    with pytest.raises(ArtifactError, match=r"'visionops.raw' manifest, not 'visionops.prepared'"):
        PreparedManifest.read(tmp_path)
    assert not PreparedManifest.exists(tmp_path)
    assert SourceRecord.exists(tmp_path / "manifest.json")


def test_another_schema_version_is_refused(tmp_path: Path) -> None:
    data = _prepared().to_json() | {"schema_version": 2}
    (tmp_path / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(ArtifactError, match=r"schema_version 2; this visionops reads 1"):
        PreparedManifest.read(tmp_path)


@pytest.mark.parametrize("content", ["{not json", "[1, 2]"])
def test_damaged_manifest_is_a_one_line_error(tmp_path: Path, content: str) -> None:
    (tmp_path / "source.json").write_text(content)
    with pytest.raises(ArtifactError) as info:
        SourceRecord.read(tmp_path)
    assert "\n" not in str(info.value)
    assert "visionops data fetch" in str(info.value)


def test_wrong_field_type_names_the_field(tmp_path: Path) -> None:
    data = _prepared().to_json() | {"image_size": "big"}
    (tmp_path / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(ArtifactError, match=r"image_size"):
        PreparedManifest.read(tmp_path)


def test_written_file_mode_follows_the_umask(tmp_path: Path) -> None:
    previous = os.umask(0o022)
    try:
        written = _source().write(tmp_path)
    finally:
        os.umask(previous)
    assert stat.S_IMODE(written.stat().st_mode) == 0o644


def test_run_device_and_tracking_read_as_models_and_write_back_unchanged(
    tmp_path: Path,
) -> None:
    written = {
        "schema_version": 1,
        "kind": "visionops.run",
        "name": "run-001",
        "status": "completed",
        "task": "classification",
        "dataset": {"path": "data/prepared/shapes", "name": "shapes", "fingerprint": "f"},
        "model": {"name": "resnet18", "num_outputs": 2, "channels": 3, "image_size": 32},
        "normalization": {"mean": [0.5] * 3, "std": [0.25] * 3},
        "monitor": {"metric": "accuracy", "mode": "max"},
        "config_hash": "c",
        "device": {"type": "cuda:0", "precision": "bf16 mixed", "world_size": 2},
        "tracking": {"mode": "offline", "project": "visionops", "id": "run-001-ab", "url": None},
    }
    (tmp_path / "run.json").write_text(json.dumps(written))
    record = RunRecord.read(tmp_path)
    assert record.device is not None and record.device.world_size == 2
    assert record.tracking is not None and record.tracking.id == "run-001-ab"
    record.write(tmp_path)
    # The round trip is checked on the file's JSON on purpose: it is the format under test.
    again = json.loads((tmp_path / "run.json").read_text())
    assert again["device"] == written["device"] and again["tracking"] == written["tracking"]


def test_run_tracking_of_an_unknown_mode_names_the_field(tmp_path: Path) -> None:
    record = {
        "name": "run-001",
        "status": "failed",
        "task": "classification",
        "dataset": {"path": "p", "name": "n", "fingerprint": "f"},
        "model": {"name": "resnet18", "num_outputs": 2, "channels": 3, "image_size": 32},
        "normalization": {"mean": [0.5], "std": [0.25]},
        "monitor": {"metric": "accuracy", "mode": "max"},
        "config_hash": "c",
        "tracking": {"mode": "cloud", "project": "visionops"},
    }
    (tmp_path / "run.json").write_text(
        json.dumps(record | {"kind": "visionops.run", "schema_version": 1})
    )
    with pytest.raises(ArtifactError, match=r"tracking\.mode"):
        RunRecord.read(tmp_path)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-12-06T10:00:00+00:00", datetime(2026, 12, 6, 10, tzinfo=UTC)),
        ("2026-12-06T10:00:00", datetime(2026, 12, 6, 10, tzinfo=UTC)),  # no zone: UTC
        (
            "2026-12-06T11:00:00+01:00",
            datetime(2026, 12, 6, 11, tzinfo=timezone(timedelta(hours=1))),
        ),
        ("yesterday", None),
    ],
)
def test_a_log_record_time_is_read_as_an_aware_datetime(
    text: str, expected: datetime | None
) -> None:
    record = PredictionRecord(
        time=text, request_id="r", model_version="m@1", task="classification", prediction={}
    )
    assert record.timestamp() == expected
