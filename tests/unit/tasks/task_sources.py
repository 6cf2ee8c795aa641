"""Small valid artifacts to build tasks from (``Task.from_manifest`` takes typed artifacts)."""

from __future__ import annotations

from typing import Any

from visionops.artifacts import (
    BundleInput,
    BundleMeta,
    DatasetRef,
    ModelSpec,
    Monitor,
    Normalization,
    RunRecord,
)


def run_record(task: str, **labels: Any) -> RunRecord:
    """A run record of ``task`` with ``labels`` (class_names, target_mean, thresholds ...)."""
    return RunRecord(
        name="run-001",
        status="completed",
        task=task,
        dataset=DatasetRef(path="data/prepared/demo", name="demo", fingerprint="0" * 16),
        model=ModelSpec(name="resnet18", num_outputs=2, channels=3, image_size=64),
        normalization=Normalization(mean=[0.5] * 3, std=[0.25] * 3),
        monitor=Monitor(metric="accuracy", mode="max"),
        config_hash="0" * 64,
        **labels,
    )


def bundle_meta(task: str, main_output: str, **labels: Any) -> BundleMeta:
    """A bundle's metadata of ``task`` with ``labels`` (no target statistics: bundles have none)."""
    return BundleMeta(
        task=task,
        model_version="run-001",
        input=BundleInput(size=64, channels=3, max_image_pixels=64 * 64 * 16),
        outputs={"main": main_output},
        **labels,
    )
