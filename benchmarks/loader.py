"""Training-batch throughput: ``BatchLoader`` on a prepared dataset versus torchvision.

Both produce shuffled uint8 batches of the same generated JPEGs (the train split, which the
source's train/ folder defines) at the same size:

- baseline: ``torchvision.datasets.ImageFolder`` decoding each JPEG with PIL every epoch,
  ``Resize`` + ``CenterCrop`` + ``PILToTensor``, in a ``torch.utils.data.DataLoader`` with
  ``num_workers`` = cores (persistent workers);
- visionops: the images decoded once by ``prepare_dataset`` (not timed), then
  ``visionops.data.loading.BatchLoader``: a sorted fancy-index gather from the memory-mapped
  ``images.npy`` per batch, prefetched on a thread.

One untimed warm-up epoch each (worker start-up, page cache), then ``--epochs`` timed epochs.

Run: python benchmarks/loader.py --count 2000 --size 64 --batch 64
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import torch

from preprocess import cpu_model, generate_images


def timed_epochs(
    loader: Iterable[tuple[torch.Tensor, torch.Tensor]],
    epochs: int,
    set_epoch: Callable[[int], None] | None = None,
    min_seconds: float = 1.0,
) -> float:
    """Batches per second over at least ``epochs`` full passes (and ``min_seconds``), after
    one untimed pass."""
    for _ in loader:  # warm-up: worker start-up, page cache
        pass
    batches = epoch = 0
    started = time.perf_counter()
    while epoch < epochs or time.perf_counter() - started < min_seconds:
        epoch += 1
        if set_epoch is not None:
            set_epoch(epoch)
        for images, _targets in loader:
            batches += 1
            assert images.dtype == torch.uint8
    return batches / (time.perf_counter() - started)


def baseline(raw: Path, size: int, batch: int, workers: int, epochs: int) -> float:
    from torch.utils.data import DataLoader
    from torchvision import datasets, transforms

    transform = transforms.Compose(
        [transforms.Resize(size), transforms.CenterCrop(size), transforms.PILToTensor()]
    )
    # The train folder: exactly the images of the prepared dataset's train split.
    folder = datasets.ImageFolder(str(raw / "train"), transform=transform)
    loader = DataLoader(
        folder, batch_size=batch, shuffle=True, num_workers=workers, persistent_workers=workers > 0
    )
    return timed_epochs(loader, epochs)


def visionops_loader(raw: Path, workdir: Path, size: int, batch: int, epochs: int) -> float:
    from visionops.config import Settings
    from visionops.data.loading import BatchLoader
    from visionops.data.prepared import PreparedDataset
    from visionops.data.preprocess import prepare_dataset

    settings = Settings.model_validate(
        {"data": {"prepared_root": str(workdir / "prepared"), "image_size": size}}
    )
    dataset = PreparedDataset.open(prepare_dataset(raw, settings).path)
    loader = BatchLoader(dataset, "train", batch, shuffle=True, seed=0)
    return timed_epochs(loader, epochs, loader.set_epoch)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=2000, help="images to generate")
    parser.add_argument("--width", type=int, default=640, help="generated image width")
    parser.add_argument("--height", type=int, default=480, help="generated image height")
    parser.add_argument("--size", type=int, default=64, help="training image side")
    parser.add_argument("--batch", type=int, default=64, help="batch size")
    parser.add_argument("--epochs", type=int, default=2, help="timed epochs")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers; 0 = cores")
    args = parser.parse_args()
    workers = args.workers or os.cpu_count() or 1
    torch.set_num_threads(1)  # neither side computes; keep intra-op threads out of the way

    workdir = Path(tempfile.mkdtemp(prefix="visionops-bench-"))
    try:
        print(f"generating {args.count} {args.width}x{args.height} JPEGs in {workdir} ...")
        raw = generate_images(workdir / "raw" / "bench", args.count, args.width, args.height)
        ours = visionops_loader(raw, workdir, args.size, args.batch, args.epochs)
        theirs = baseline(raw, args.size, args.batch, workers, args.epochs)
        print(
            f"\n{args.count} JPEGs {args.width}x{args.height} → {args.size} px, batch {args.batch}"
        )
        print(f"machine: {os.cpu_count()} cores, {cpu_model()}, python {platform.python_version()}")
        print(f"{'loader':<58}{'batches/s':>12}")
        label = f"ImageFolder + PIL + transforms, DataLoader({workers} workers)"
        print(f"{label:<58}{theirs:>12.1f}")
        print(f"{'visionops BatchLoader (prepared, memory-mapped)':<58}{ours:>12.1f}")
        print(f"ratio: {ours / theirs:.1f}x")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
