"""BatchLoader: tensors, coverage, shuffling, DistributedSampler-like sharding, prefetch."""

import math
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from preprocess_trees import class_tree, multilabel_csv, settings_for
from torch.utils.data import DistributedSampler

from visionops.data.loading import BatchLoader, shard_indices
from visionops.data.prepared import PreparedDataset
from visionops.data.preprocess import prepare_dataset


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> PreparedDataset:
    tmp = tmp_path_factory.mktemp("loading")
    raw = class_tree(tmp / "shapes", per_class=15)
    result = prepare_dataset(raw, settings_for(tmp, val_ratio=0.2, test_ratio=0.2))
    return PreparedDataset.open(result.path)


def _order(loader: BatchLoader) -> list[int]:
    """The dataset rows a loader yields, recovered from the unique first pixel bytes."""
    lookup = {loader.dataset.images[i].tobytes(): i for i in range(len(loader.dataset))}
    rows = []
    for images, _ in loader:
        for image in images.permute(0, 2, 3, 1).contiguous().numpy():
            rows.append(lookup[image.tobytes()])
    return rows


def test_batches_are_channels_last_uint8_views_with_matching_targets(
    dataset: PreparedDataset,
) -> None:
    loader = BatchLoader(dataset, "train", 8, shuffle=True, seed=3)
    train = dataset.indices("train")
    assert len(loader) == math.ceil(len(train) / 8)
    seen = 0
    for images, targets in loader:
        assert images.dtype == torch.uint8
        assert images.shape[1:] == (3, 16, 16)
        assert images.is_contiguous(memory_format=torch.channels_last)
        assert targets.dtype == torch.int64
        rows = np.array([_row(dataset, image) for image in images])
        assert list(rows) == sorted(rows)  # sorted within a batch for locality
        np.testing.assert_array_equal(targets.numpy(), dataset.targets[rows])
        seen += len(images)
    assert seen == len(train)


def _row(dataset: PreparedDataset, image: torch.Tensor) -> int:
    nhwc = image.permute(1, 2, 0).numpy()
    matches = np.flatnonzero((dataset.images == nhwc).all(axis=(1, 2, 3)))
    return int(matches[0])


def test_every_image_once_per_epoch_and_drop_last(dataset: PreparedDataset) -> None:
    train = dataset.indices("train")
    loader = BatchLoader(dataset, "train", 7, shuffle=True)
    assert sorted(_order(loader)) == sorted(train.tolist())
    dropping = BatchLoader(dataset, "train", 7, shuffle=True, drop_last=True)
    assert len(dropping) == len(train) // 7
    assert len(_order(dropping)) == (len(train) // 7) * 7
    unshuffled = BatchLoader(dataset, "val", 4, shuffle=False)
    assert _order(unshuffled) == dataset.indices("val").tolist()


def test_shuffle_is_deterministic_per_seed_and_epoch(dataset: PreparedDataset) -> None:
    first = BatchLoader(dataset, "train", 64, shuffle=True, seed=1)
    second = BatchLoader(dataset, "train", 64, shuffle=True, seed=1)
    np.testing.assert_array_equal(first.epoch_indices(), second.epoch_indices())
    epoch0 = first.epoch_indices()
    first.set_epoch(1)
    assert not np.array_equal(first.epoch_indices(), epoch0)
    second.set_epoch(1)
    np.testing.assert_array_equal(first.epoch_indices(), second.epoch_indices())
    other_seed = BatchLoader(dataset, "train", 64, shuffle=True, seed=2)
    assert not np.array_equal(other_seed.epoch_indices(), epoch0)


@pytest.mark.parametrize("world_size", [2, 4, 7])
def test_sharding_matches_distributed_sampler(dataset: PreparedDataset, world_size: int) -> None:
    train = dataset.indices("train")
    shards = []
    for rank in range(world_size):
        loader = BatchLoader(dataset, "train", 5, shuffle=False, rank=rank, world_size=world_size)
        sampler = DistributedSampler(
            range(len(train)), num_replicas=world_size, rank=rank, shuffle=False
        )
        assert loader.num_samples == sampler.num_samples
        np.testing.assert_array_equal(loader.epoch_indices(), train[list(sampler)])
        assert len(loader) == math.ceil(sampler.num_samples / 5)
        shards.append(loader.epoch_indices())
    together = np.concatenate(shards)
    assert set(together.tolist()) == set(train.tolist())
    assert len(together) == math.ceil(len(train) / world_size) * world_size


def test_shuffled_shards_are_disjoint_before_padding(dataset: PreparedDataset) -> None:
    train = dataset.indices("train")
    shards = [
        BatchLoader(dataset, "train", 4, shuffle=True, seed=5, rank=r, world_size=3)
        for r in range(3)
    ]
    for loader in shards:
        loader.set_epoch(2)
    together = np.concatenate([loader.epoch_indices() for loader in shards])
    assert sorted(together.tolist()) == sorted(train.tolist())  # 27 divides evenly: no padding


def test_shard_indices_rejects_a_bad_rank() -> None:
    with pytest.raises(ValueError, match=r"rank 3 is outside 0..1"):
        shard_indices(np.arange(4), shuffle=False, seed=0, epoch=0, rank=3, world_size=2)


def test_prefetch_and_direct_reading_agree(dataset: PreparedDataset) -> None:
    fetched = list(BatchLoader(dataset, "test", 5, shuffle=True, seed=9))
    direct = list(BatchLoader(dataset, "test", 5, shuffle=True, seed=9, prefetch=False))
    assert len(fetched) == len(direct)
    for (a, ta), (b, tb) in zip(fetched, direct, strict=True):
        assert torch.equal(a, b)
        assert torch.equal(ta, tb)


def test_stopping_early_releases_the_prefetch_thread(dataset: PreparedDataset) -> None:
    before = threading.active_count()
    loader = BatchLoader(dataset, "train", 2, shuffle=True)
    for _ in loader:
        break
    assert threading.active_count() == before


def test_multilabel_targets_are_float32(tmp_path: Path) -> None:
    result = prepare_dataset(multilabel_csv(tmp_path / "posters"), settings_for(tmp_path))
    dataset = PreparedDataset.open(result.path)
    images, targets = next(iter(BatchLoader(dataset, "train", 4, shuffle=False)))
    assert targets.dtype == torch.float32
    assert targets.shape == (4, 3)
    assert images.shape == (4, 3, 16, 16)
