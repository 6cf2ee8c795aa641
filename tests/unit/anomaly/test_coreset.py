"""Greedy k-centre coreset: same picks as the naive definition, seeded, covering."""

from __future__ import annotations

import torch

from visionops.anomaly.coreset import coreset_indices, naive_coreset_indices


def _covering_radius(features: torch.Tensor, chosen: torch.Tensor) -> float:
    return float(torch.cdist(features, features[chosen]).min(dim=1).values.max())


def test_picks_the_same_patches_as_the_naive_loop() -> None:
    features = torch.randn(600, 48, generator=torch.Generator().manual_seed(1))
    fast = coreset_indices(features, 40, seed=3, projection_dim=None, chunk_rows=128)
    naive = naive_coreset_indices(features, 40, seed=3, projection_dim=None)
    assert fast.tolist() == naive.tolist()


def test_same_seed_same_bank_other_seed_other_start() -> None:
    features = torch.randn(500, 300, generator=torch.Generator().manual_seed(2))
    first = coreset_indices(features, 25, seed=0)
    assert first.tolist() == coreset_indices(features, 25, seed=0).tolist()
    assert first[0] != coreset_indices(features, 25, seed=1)[0]
    assert len(set(first.tolist())) == 25


def test_covers_the_features_better_than_a_random_subset() -> None:
    generator = torch.Generator().manual_seed(4)
    # Clustered data with one far-away cluster of 5 points that random sampling misses.
    features = torch.cat([torch.randn(995, 16, generator=generator), 40 + torch.randn(5, 16)])
    chosen = coreset_indices(features, 20, seed=0)
    random_subset = torch.randperm(1000, generator=generator)[:20]
    assert (chosen >= 995).any()
    assert _covering_radius(features, chosen) < _covering_radius(features, random_subset)


def test_count_is_clamped_to_the_number_of_patches() -> None:
    features = torch.randn(7, 4)
    assert sorted(coreset_indices(features, 100, seed=0).tolist()) == list(range(7))


def test_pruned_steps_pick_what_the_definition_picks_on_clustered_patches() -> None:
    """Tight, distant clusters: after one centre per cluster each new centre can only come
    nearer to its own cluster's patches, so most of them are skipped, exactly."""
    generator = torch.Generator().manual_seed(5)
    centres = torch.randn(12, 24, generator=generator) * 10
    features = centres.repeat_interleave(150, dim=0) + torch.randn(1800, 24, generator=generator)
    fast = coreset_indices(features, 60, seed=2, projection_dim=None, chunk_rows=256)
    naive = naive_coreset_indices(features, 60, seed=2, projection_dim=None)
    assert fast.tolist() == naive.tolist()
    assert len({int(i) // 150 for i in fast[:12]}) == 12  # one per cluster first
