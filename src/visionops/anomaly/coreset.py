"""Greedy k-centre coreset selection (PatchCore's memory-bank reduction).

Start from a seeded random patch; then repeatedly add the patch farthest from everything
chosen so far. Each step only needs the distance of every patch to the *newest* centre,
folded into a running minimum, so a step costs one pass over the features instead of a
pass per chosen centre (:func:`naive_coreset_indices`, kept as the benchmark's baseline and
the tests' oracle). Distances are measured in a seeded random projection of the features
(Johnson-Lindenstrauss), computed chunk by chunk so the temporary memory stays bounded.

Examples:
    >>> features = torch.randn(1000, 64)
    >>> coreset_indices(features, 10, seed=0).shape
    torch.Size([10])
"""

from __future__ import annotations

import torch

from visionops.anomaly.features import random_projection
from visionops.progress import NULL_PROGRESS, ProgressReporter

__all__ = ["coreset_indices", "naive_coreset_indices", "project"]

DEFAULT_CHUNK_ROWS = 65_536
"""Rows projected or measured at once: bounds the temporaries to a few tens of MB."""


def project(
    features: torch.Tensor,
    projection_dim: int | None,
    seed: int,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> torch.Tensor:
    """``features`` ``(N, D)`` projected to ``projection_dim`` columns, chunk by chunk.

    Returns the features themselves (as float32) when no projection would shorten them.
    """
    rows, dim = features.shape
    if projection_dim is None or projection_dim >= dim:
        return features.float()
    matrix = random_projection(dim, projection_dim, seed).to(features.device)
    projected = torch.empty(rows, projection_dim, dtype=torch.float32, device=features.device)
    for start in range(0, rows, chunk_rows):
        stop = min(start + chunk_rows, rows)
        torch.matmul(features[start:stop].float(), matrix, out=projected[start:stop])
    return projected


def _first_index(rows: int, seed: int) -> int:
    generator = torch.Generator().manual_seed(seed)
    return int(torch.randint(rows, (1,), generator=generator).item())


@torch.no_grad()
def coreset_indices(
    features: torch.Tensor,
    count: int,
    *,
    seed: int,
    projection_dim: int | None = 128,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    progress: ProgressReporter = NULL_PROGRESS,
) -> torch.Tensor:
    """Indices of ``count`` rows of ``features`` chosen by greedy k-centre selection.

    Args:
        features: ``(N, D)`` patch features.
        count: How many to keep (clamped to ``N``).
        seed: Seeds the first centre and the projection: same seed, same indices.
        projection_dim: Measure distances after projecting to this many dimensions
            (None: in the full space).
        chunk_rows: Rows handled at once.
        progress: Receives one bar advanced once per chosen centre.

    Returns:
        ``(count,)`` int64 indices into ``features``, in the order they were chosen.
    """
    rows = int(features.shape[0])
    count = max(1, min(count, rows))
    points = project(features, projection_dim, seed + 1, chunk_rows)
    squared_norms = points.pow(2).sum(dim=1)
    nearest = torch.full((rows,), float("inf"), dtype=torch.float32, device=points.device)
    scratch = torch.empty(min(rows, chunk_rows), dtype=torch.float32, device=points.device)
    chosen = torch.empty(count, dtype=torch.int64)
    index = _first_index(rows, seed)
    bar = progress.start("coreset selection", total=count)
    for step in range(count):
        chosen[step] = index
        centre = points[index]
        for start in range(0, rows, chunk_rows):
            stop = min(start + chunk_rows, rows)
            distance = scratch[: stop - start]
            # |x - c|^2 = |x|^2 - 2 x.c + |c|^2: one fused matrix-vector product per chunk,
            # no (N, D) temporary.
            torch.addmv(
                squared_norms[start:stop], points[start:stop], centre, alpha=-2.0, out=distance
            )
            distance += squared_norms[index]
            torch.minimum(nearest[start:stop], distance, out=nearest[start:stop])
        nearest[index] = -1.0  # never chosen twice, even where rounding leaves it above 0
        index = int(torch.argmax(nearest).item())
        bar.advance()
    bar.close()
    return chosen


@torch.no_grad()
def naive_coreset_indices(
    features: torch.Tensor, count: int, *, seed: int, projection_dim: int | None = 128
) -> torch.Tensor:
    """The same selection, recomputing every patch's distance to every centre at each step.

    Quadratic in ``count``: the benchmark's baseline and the tests' reference, not for use.
    """
    rows = int(features.shape[0])
    count = max(1, min(count, rows))
    points = project(features, projection_dim, seed + 1)
    chosen = [_first_index(rows, seed)]
    while len(chosen) < count:
        distances = torch.cdist(points, points[chosen]).min(dim=1).values
        distances[chosen] = -1.0
        chosen.append(int(torch.argmax(distances).item()))
    return torch.tensor(chosen, dtype=torch.int64)
