"""Greedy k-centre coreset selection (PatchCore's memory-bank reduction).

Start from a seeded random patch; then repeatedly add the patch farthest from everything
chosen so far. Each step only needs the distance of a patch to the *newest* centre, folded
into a running minimum, and only for patches the new centre can possibly be nearer to
(triangle inequality), instead of every patch's distance to every chosen centre
(:func:`naive_coreset_indices`, kept as the benchmark's baseline and the tests' oracle).
Distances are measured in a seeded random projection of the features
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

    Each patch remembers which centre is nearest to it, and each centre the largest distance
    of its patches (an upper bound, never lowered). A new centre ``c`` can only come closer
    to a patch ``x`` of centre ``a`` if ``|c - a| < 2·|x - a|`` (triangle inequality), so
    only the patches of centres within twice their radius of ``c`` are measured. Early
    steps measure every patch; later ones, whose centres are close to few others, a small
    share of them. The picks are those of the plain definition (the tests check it).

    Args:
        features: ``(N, D)`` patch features.
        count: How many to keep (clamped to ``N``).
        seed: Seeds the first centre and the projection: same seed, same indices.
        projection_dim: Measure distances after projecting to this many dimensions
            (None: in the full space).
        chunk_rows: Rows measured at once.
        progress: Receives one bar advanced once per chosen centre.

    Returns:
        ``(count,)`` int64 indices into ``features``, in the order they were chosen.
    """
    rows = int(features.shape[0])
    count = max(1, min(count, rows))
    points = project(features, projection_dim, seed + 1, chunk_rows)
    device = points.device
    squared_norms = points.pow(2).sum(dim=1)
    nearest = torch.full((rows,), float("inf"), dtype=torch.float32, device=device)
    owner = torch.zeros(rows, dtype=torch.int64, device=device)
    radius = torch.zeros(count, dtype=torch.float32, device=device)
    centres = torch.empty(count, points.shape[1], dtype=torch.float32, device=device)
    chosen = torch.empty(count, dtype=torch.int64)
    index = _first_index(rows, seed)
    bar = progress.start("coreset selection", total=count)
    for step in range(count):
        chosen[step] = index
        centre = points[index]
        centres[step] = centre
        candidates: torch.Tensor | None = None
        if step:
            gaps = (centres[:step] - centre).pow(2).sum(dim=1).sqrt()
            reachable = (gaps < 2.0 * radius[:step])[owner]
            # Gathering scattered rows costs more than streaming them all past a certain share.
            if int(reachable.sum()) < rows // 4:
                candidates = torch.nonzero(reachable).squeeze(1)
        largest = torch.zeros((), dtype=torch.float32, device=device)
        total = rows if candidates is None else len(candidates)
        for start in range(0, total, chunk_rows):
            stop = min(start + chunk_rows, total)
            if candidates is None:
                subset: torch.Tensor | slice = slice(start, stop)
                block = points[start:stop]
            else:
                subset = candidates[start:stop]
                block = points[subset]
            # |x - c|^2 = |x|^2 - 2 x.c + |c|^2: one fused matrix-vector product per chunk.
            distance = torch.addmv(squared_norms[subset], block, centre, alpha=-2.0)
            distance += squared_norms[index]
            closer = distance < nearest[subset]
            if not bool(closer.any()):
                continue
            moved = (
                torch.nonzero(closer).squeeze(1) + start
                if candidates is None
                else candidates[start:stop][closer]
            )
            nearest[moved] = distance[closer]
            owner[moved] = step
            largest = torch.maximum(largest, distance[closer].max())
        radius[step] = largest.clamp(min=0.0).sqrt()
        nearest[index] = -1.0  # never chosen twice, even where rounding leaves it above 0
        owner[index] = step
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
