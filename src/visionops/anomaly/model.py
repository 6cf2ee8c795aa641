"""Saving and rebuilding a trained anomaly model, and running it over a prepared split.

A checkpoint holds the :class:`~visionops.anomaly.scoring.PatchCoreModel` state dict (the
frozen trunk, its BatchNorm statistics, the projection and the bank) plus an ``anomaly``
record of how to rebuild it; it loads with ``torch.load(weights_only=True)`` like every
visionops checkpoint.

Examples:
    >>> model, run = load_anomaly_model(Path("runs/run-001"))
    >>> outputs = predict_split(model, dataset, dataset.indices("test"), run.normalization)
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from visionops.anomaly.features import PatchFeatureExtractor
from visionops.anomaly.scoring import PatchCoreModel
from visionops.artifacts import Normalization, RunRecord
from visionops.data.prepared import PreparedDataset
from visionops.errors import ArtifactError
from visionops.runs import load_checkpoint, read_run_manifest

__all__ = [
    "AnomalyOutputs",
    "anomaly_record",
    "build_from_record",
    "load_anomaly_model",
    "normalised_batches",
    "predict_split",
]


def normalised_batches(
    images: NDArray[np.uint8],
    mean: Sequence[float],
    std: Sequence[float],
    batch_size: int,
    device: torch.device | str = "cpu",
) -> Iterator[torch.Tensor]:
    """uint8 ``(N, H, W, C)`` images → normalised float ``(B, C, H, W)`` batches."""
    mean_t = torch.tensor(list(mean), dtype=torch.float32, device=device).view(1, -1, 1, 1)
    std_t = torch.tensor(list(std), dtype=torch.float32, device=device).view(1, -1, 1, 1)
    for start in range(0, len(images), batch_size):
        chunk = torch.from_numpy(np.ascontiguousarray(images[start : start + batch_size]))
        pixels = chunk.to(device).permute(0, 3, 1, 2).float() / 255.0
        yield (pixels - mean_t) / std_t


def anomaly_record(
    model: PatchCoreModel, *, layers: Sequence[str], sigma: float, threshold: Mapping[str, Any]
) -> dict[str, Any]:
    """What a checkpoint needs besides the state dict to rebuild ``model``."""
    projection = model.extractor.projection
    return {
        "layers": list(layers),
        "image_size": model.image_size,
        "sigma": sigma,
        "chunk": model.chunk,
        "bank_size": int(model.bank.shape[0]),
        "feature_dim": int(model.bank.shape[1]),
        "projection_dim": int(projection.shape[1]) if projection is not None else None,
        "threshold": dict(threshold),
    }


def build_from_record(
    name: str, channels: int, record: Mapping[str, Any], state: Mapping[str, Any]
) -> PatchCoreModel:
    """Rebuild a model from its backbone name, ``anomaly`` record and state dict.

    Raises:
        KeyError, RuntimeError: The state does not fit (the caller names the file).
    """
    extractor = PatchFeatureExtractor.build(name, channels=channels, layers=record["layers"])
    if record.get("projection_dim") is not None:
        extractor.set_projection(torch.zeros(extractor.full_dim, int(record["projection_dim"])))
    bank = torch.zeros(int(record["bank_size"]), int(record["feature_dim"]))
    model = PatchCoreModel(
        extractor,
        bank,
        image_size=int(record["image_size"]),
        sigma=float(record["sigma"]),
        chunk=int(record["chunk"]),
    )
    model.load_state_dict(dict(state))
    return model.eval()


def load_anomaly_model(run_dir: Path, which: str = "best") -> tuple[PatchCoreModel, RunRecord]:
    """Rebuild an anomaly run's model on the CPU.

    Returns:
        ``(model, run record)``.

    Raises:
        ArtifactError: Not an anomaly run, or a checkpoint that does not fit.
    """
    run = read_run_manifest(run_dir)
    path = run_dir / "checkpoints" / f"{which}.pt"
    checkpoint = load_checkpoint(path)
    record = checkpoint.get("anomaly")
    if run.task != "anomaly" or not isinstance(record, dict):
        raise ArtifactError(
            f"{path} is not an anomaly-detection checkpoint — pass a run trained on an anomaly"
            " dataset"
        )
    spec = run.model
    try:
        model = build_from_record(spec.name, spec.channels, record, checkpoint["model"])
    except (KeyError, RuntimeError) as exc:
        raise ArtifactError(
            f"{path} does not fit a {spec.name} anomaly model"
            f" ({str(exc).splitlines()[0][:120]}) — the checkpoint belongs to another run"
        ) from None
    return model, run


@dataclass
class AnomalyOutputs:
    """A model's outputs on some images.

    Attributes:
        scores: ``(N,)`` image scores.
        heatmaps: ``(N, H, W)`` float32 pixel anomaly maps.
        embeddings: ``(N, D)`` mean patch features.
    """

    scores: NDArray[np.float32]
    heatmaps: NDArray[np.float32]
    embeddings: NDArray[np.float32]


@torch.no_grad()
def predict_split(
    model: PatchCoreModel,
    dataset: PreparedDataset,
    indices: NDArray[np.int64],
    normalization: Normalization,
    *,
    batch_size: int = 32,
    device: torch.device | str = "cpu",
) -> AnomalyOutputs:
    """Score ``dataset.images[indices]``.

    Args:
        model: The anomaly model (moved to ``device``).
        dataset: The prepared dataset.
        indices: Which images.
        normalization: ``{"mean": [...], "std": [...]}`` as in ``run.json``.
        batch_size: Images per forward pass.
        device: Where to run.
    """
    model = model.to(device)
    size = dataset.image_size
    scores: list[NDArray[np.float32]] = []
    heatmaps: list[NDArray[np.float32]] = []
    embeddings: list[NDArray[np.float32]] = []
    images = dataset.images[np.asarray(indices)] if len(indices) else np.zeros((0, size, size, 3))
    for batch in normalised_batches(
        np.asarray(images, dtype=np.uint8),
        normalization.mean,
        normalization.std,
        batch_size,
        device,
    ):
        score, heatmap, embedding = model(batch)
        scores.append(score.float().cpu().numpy())
        heatmaps.append(heatmap.float().cpu().numpy())
        embeddings.append(embedding.float().cpu().numpy())
    dim = int(model.bank.shape[1])
    return AnomalyOutputs(
        scores=np.concatenate(scores) if scores else np.zeros(0, np.float32),
        heatmaps=np.concatenate(heatmaps) if heatmaps else np.zeros((0, size, size), np.float32),
        embeddings=np.concatenate(embeddings) if embeddings else np.zeros((0, dim), np.float32),
    )
