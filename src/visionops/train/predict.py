"""A trained model over a split of its prepared dataset: the outputs ``eval`` and ``train`` score.

Images are normalised with the run's statistics and go through the task's
:meth:`~visionops.tasks.Task.graph_outputs` (the computation the exported graph holds), so
what is scored is what a bundle serves: post-processed main output and the task's other
outputs (anomaly heatmaps); the embedding is dropped.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from visionops.data.loading import BatchLoader
from visionops.progress import NULL_PROGRESS, ProgressReporter
from visionops.tasks import Outputs, Task

if TYPE_CHECKING:
    import torch
    from torch import nn

    from visionops.data.prepared import PreparedDataset

__all__ = ["predict_split"]


def predict_split(
    task: Task,
    model: nn.Module,
    dataset: PreparedDataset,
    split: str,
    mean: Sequence[float],
    std: Sequence[float],
    *,
    batch_size: int,
    device: torch.device,
    amp_dtype: torch.dtype | None = None,
    channels_last: bool = False,
    progress: ProgressReporter = NULL_PROGRESS,
) -> Outputs:
    """The model's outputs on every image of ``split``, in index order, with targets and masks.

    Args:
        task: The run's task (what the model computes, :meth:`Task.graph_outputs`).
        model: The trained model (normalised float in).
        dataset: The prepared dataset.
        split: ``train``, ``val`` or ``test``.
        mean: The run's per-channel mean on the 0..1 scale.
        std: The run's per-channel standard deviation.
        batch_size: Images per forward pass.
        device: Where the model runs.
        amp_dtype: Mixed-precision dtype, or None for fp32.
        channels_last: Feed channels-last tensors (pays off on CUDA).
        progress: Receives one bar over the split.
    """
    import torch

    mean_t = torch.tensor(list(mean), dtype=torch.float32, device=device).view(1, -1, 1, 1)
    std_t = torch.tensor(list(std), dtype=torch.float32, device=device).view(1, -1, 1, 1)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    model.to(device)
    model.to(memory_format=layout)
    autocast = (
        torch.autocast(device_type=device.type, dtype=amp_dtype)
        if amp_dtype is not None
        else contextlib.nullcontext()
    )
    names = (task.main_output, *task.extra_outputs)
    parts: dict[str, list[NDArray[np.float32]]] = {name: [] for name in names}
    targets: list[NDArray[Any]] = []
    # No shuffle and one shard: batches come in ascending index order.
    loader = BatchLoader(
        dataset, split, batch_size, shuffle=False, pin_memory=device.type == "cuda"
    )
    indices = loader.split_indices
    bar = progress.start(f"eval {split}", total=len(indices))
    try:
        with torch.inference_mode(), autocast:
            for pixels, truth in loader:
                batch = pixels.to(device, non_blocking=True).contiguous(memory_format=layout)
                normalised = (batch.float().div_(255.0) - mean_t) / std_t
                computed = task.graph_outputs(model, normalised)
                # The embedding comes last: zip stops before it.
                for name, value in zip(names, computed, strict=False):
                    parts[name].append(value.float().cpu().numpy().astype(np.float32))
                targets.append(truth.numpy())
                bar.advance(len(truth))
    finally:
        bar.close()
    arrays = {
        name: np.concatenate(values) if values else np.zeros((0,), np.float32)
        for name, values in parts.items()
    }
    return Outputs(
        main=arrays.pop(task.main_output).astype(np.float64),
        targets=np.concatenate(targets) if targets else np.asarray(dataset.targets[indices]),
        extra=arrays,
        masks=np.asarray(dataset.masks[indices]) if dataset.masks is not None else None,
        images=dataset.images,
        indices=indices,
    )
