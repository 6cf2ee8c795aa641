"""Reading the current sample from a prediction log, and the reference's split rule."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from visionops.artifacts import BundleMeta, LoggedImage, PredictionRecord
from visionops.drift.samples import log_sample, parse_since, reference_sample
from visionops.errors import DriftError
from visionops.inference.bundle import Bundle
from visionops.inference.predlog import LogEntry, PredictionLog

LABELS = ["cat", "dog"]


def _bundle(path: Path) -> Bundle:
    meta = BundleMeta.model_validate({
        "kind": "visionops.bundle", "task": "classification", "model_version": "run-001@abcd",
        "class_names": LABELS, "input": {"size": 32, "channels": 3, "max_image_pixels": 10**6},
        "outputs": {"main": "probabilities", "embedding": "embedding"},
    })  # fmt: skip
    return Bundle(path=path, meta=meta, parity=None)


def _record(version: str, minute: int, label: str = "cat") -> PredictionRecord:
    p = 0.9 if label == "cat" else 0.2
    return PredictionRecord(
        time=(datetime(2026, 12, 1, tzinfo=UTC) + timedelta(minutes=minute)).isoformat(),
        request_id=f"r{minute}", model_version=version, task="classification",
        prediction={"label": label, "probability": max(p, 1 - p), "top_k": [
            {"label": "cat", "probability": p}, {"label": "dog", "probability": 1 - p}]},
        output=[p, 1 - p],
        image=LoggedImage(width=40, height=30, mean=0.4 + minute / 1000, std=0.2),
    )  # fmt: skip


def _write_log(directory: Path, records: list[PredictionRecord], dim: int = 4) -> None:
    log = PredictionLog(directory)
    rng = np.random.default_rng(0)
    log.write(
        [LogEntry(record=r, embedding=rng.normal(size=dim).astype(np.float32)) for r in records]
    )
    log.close()


def test_log_sample_uses_only_this_bundles_records(tmp_path: Path) -> None:
    records = [_record("run-001@abcd", i, "cat" if i % 3 else "dog") for i in range(40)]
    records += [_record("run-000@old", 100 + i) for i in range(5)]
    _write_log(tmp_path / "log", records)
    segment = next((tmp_path / "log").glob("*.jsonl"))
    with segment.open("a") as handle:
        handle.write('{"not": "a record"}\n{"time": "2026-12-01T00:')  # a crash's partial line
    sample = log_sample(_bundle(tmp_path / "bundle"), tmp_path / "log")
    assert sample.count == 40
    assert sample.embeddings is not None and sample.embeddings.shape == (40, 4)
    assert sample.outputs is not None and sample.outputs[0].tolist() == pytest.approx([0.2, 0.8])
    assert sample.classes is not None and sample.classes.tolist()[:3] == [1, 0, 0]
    assert sample.features["width"][0] == 40 and "sharpness" not in sample.features
    assert any("5 records of run-000@old" in note for note in sample.notes)
    assert any("2 corrupted log lines" in note for note in sample.notes)

    last = log_sample(_bundle(tmp_path / "bundle"), tmp_path / "log", last=10)
    assert last.count == 10 and last.features["mean"][0] == pytest.approx(0.43)
    since = datetime(2026, 12, 1, 0, 35, tzinfo=UTC)
    recent = log_sample(_bundle(tmp_path / "bundle"), tmp_path / "log", since=since)
    assert recent.count == 5


def test_log_from_another_bundle_is_refused(tmp_path: Path) -> None:
    _write_log(tmp_path / "log", [_record("other@1234", i) for i in range(3)])
    with pytest.raises(DriftError, match=r"another bundle \(model versions other@1234"):
        log_sample(_bundle(tmp_path / "bundle"), tmp_path / "log")


def test_missing_and_empty_logs_are_refused(tmp_path: Path) -> None:
    with pytest.raises(DriftError, match="no prediction log"):
        log_sample(_bundle(tmp_path / "bundle"), tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "predictions-x-p1-0001.jsonl").write_text("")
    with pytest.raises(DriftError, match="holds no records"):
        log_sample(_bundle(tmp_path / "bundle"), tmp_path / "empty")


def test_parse_since() -> None:
    now = datetime(2026, 12, 1, 12, tzinfo=UTC)
    assert parse_since("24h", now) == datetime(2026, 11, 30, 12, tzinfo=UTC)
    assert parse_since("90m", now) == datetime(2026, 12, 1, 10, 30, tzinfo=UTC)
    assert parse_since("2026-11-22") == datetime(2026, 11, 22, tzinfo=UTC)
    with pytest.raises(DriftError, match="neither a time"):
        parse_since("yesterday")


def _reference(path: Path, split: str | None) -> None:
    path.mkdir(parents=True, exist_ok=True)
    arrays = {
        "embeddings": np.zeros((40, 4), np.float32),
        "predictions": np.full((40, 2), 0.5, np.float32),
        "stats": np.zeros((40, 2), np.float32),
        "stat_names": np.array(["mean", "min"]),
    }
    if split is not None:
        arrays["split"] = np.array(split)
    np.savez(path / "reference.npz", **arrays)


def test_reference_must_come_from_held_out_images(tmp_path: Path) -> None:
    _reference(tmp_path / "val", "val")
    sample = reference_sample(_bundle(tmp_path / "val"))
    assert sample.split == "val" and sample.count == 40
    assert list(sample.features) == ["mean"]  # min is not a tested statistic
    for split in ("train", None):  # None: a bundle exported before the split was recorded
        folder = tmp_path / str(split)
        _reference(folder, split)
        with pytest.raises(DriftError, match=r"drift reference .* --split val"):
            reference_sample(_bundle(folder))
