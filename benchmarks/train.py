"""Training speed: ``visionops train`` versus a plain PyTorch reference loop.

Two measurements, same model, image size, batch size, optimiser and intra-op threads:

1. Epoch wall time on the same generated JPEGs (the train split):
   - reference: ``torchvision.datasets.ImageFolder`` decoding every JPEG with PIL every epoch,
     ``RandomResizedCrop`` + ``RandomHorizontalFlip`` + ``ColorJitter`` + ``ToTensor`` +
     ``Normalize`` (the augmentations visionops applies by default), a ``DataLoader`` with
     ``num_workers`` = cores, and the textbook loop (forward, loss, backward, AdamW step,
     scheduler step, ``loss.item()`` for the running loss); one untimed warm-up epoch;
   - visionops: the images prepared once (not timed), then the real ``train()``; an epoch is
     timed from the start of its progress bar to the start of the next one, so it includes
     everything the engine does per epoch: augmentation, BatchNorm re-calibration,
     validation, checkpoints, history and logs (the reference does no validation). The first
     (warm-up) epoch of each side is not counted.
2. Step throughput on identical pre-loaded uint8 batches (no data loading, no augmentation):
   the engine's training loop versus a bare loop (convert and normalise, forward, loss,
   backward, optimiser step), interleaved rounds, median. Overhead = bare / engine - 1.

3. The whole epoch versus bare compute, on the shapes demo (issue 23): the epoch of
   ``visionops train`` (start of its bar to the next: augmentation, BatchNorm re-calibration
   where the statistics lag, validation every epoch, checkpoints, records) versus a bare loop
   over the same prepared images (the same batches, augmentation and fused AdamW with the same
   schedule; no validation, no checkpoint), for the first model; median of the timed epochs
   (first one not counted); then both models' accuracy on the demo's test split (goal: epoch
   <= 1.1x bare, same accuracy). The default 520 images per class make 45 batches of 64 per
   epoch, where ResNet's BatchNorm statistics no longer need re-computing; with
   ``--demo-per-class 100`` (9 batches) they do, and the ratio shows that cost.

Run: python benchmarks/train.py --count 1000 --size 64 --batch 64 --epochs 2

``--ddp`` measures data-parallel training instead: the same ``visionops train`` command (same
global batch, seed and data) as 2 processes x 1 thread (``--nproc-per-node 2``, gloo) versus
1 process x 2 threads; the ratio of their median training-phase epoch times (goal <= 1.3x);
and the time of one all-reduce of the model's whole gradient between 2 gloo processes (the
communication DDP adds per step, overlapped with backward in buckets).

Run: python benchmarks/train.py --ddp --count 1000 --size 64 --batch 64 --epochs 3
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import shutil
import statistics
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

import torch
from torch.nn import functional

from preprocess import cpu_model, generate_images


def reference_epochs(
    raw: Path, size: int, batch: int, workers: int, epochs: int, model_name: str, lr: float
) -> list[float]:
    """Seconds per epoch of the textbook loop (after one warm-up epoch)."""
    from torch.utils.data import DataLoader
    from torchvision import datasets, transforms

    from visionops.models import build_model

    transform = transforms.Compose(
        [
            transforms.RandomResizedCrop(size, scale=(0.8, 1.0)),
            transforms.RandomHorizontalFlip(),
            transforms.ColorJitter(0.1, 0.1, 0.1),
            transforms.ToTensor(),
            transforms.Normalize((0.5, 0.5, 0.5), (0.25, 0.25, 0.25)),
        ]
    )
    folder = datasets.ImageFolder(str(raw / "train"), transform=transform)
    loader = DataLoader(
        folder,
        batch_size=batch,
        shuffle=True,
        drop_last=True,
        num_workers=workers,
        persistent_workers=workers > 0,
    )
    torch.manual_seed(0)
    model = build_model(model_name, num_outputs=len(folder.classes))
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    total = (epochs + 1) * len(loader)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, lr, total_steps=total)
    times = []
    for _ in range(epochs + 1):
        started = time.perf_counter()
        model.train()
        running = 0.0
        for images, targets in loader:
            optimizer.zero_grad()
            outputs, _ = model(images)
            loss = functional.cross_entropy(outputs, targets)
            loss.backward()
            optimizer.step()
            scheduler.step()
            running += loss.item()
        times.append(time.perf_counter() - started)
    return times[1:]


class _EpochClock:
    """A progress reporter that only notes when each epoch's bar starts."""

    def __init__(self) -> None:
        self.starts: list[float] = []

    def start(self, description: str, total: float | None = None) -> Any:
        from visionops.progress import NULL_PROGRESS

        if description.startswith("epoch "):
            self.starts.append(time.perf_counter())
        return NULL_PROGRESS.start(description, total)


def visionops_epochs(
    prepared: Path, workdir: Path, batch: int, epochs: int, model: str, name: str = "bench"
) -> tuple[list[float], list[float], float]:
    """Whole-epoch wall times (start to next start), training-phase times of ``train()``, and
    the trained model's test accuracy.

    Runs ``epochs + 2`` epochs: the first (warm-up) and the last (followed by the final
    scoring instead of another epoch) are not counted.
    """
    import json

    from visionops.config import load_settings
    from visionops.train import train

    settings = load_settings(
        overrides=[
            f"runs_root={workdir / 'runs'}",
            f"model.name={model}",
            f"train.epochs={epochs + 2}",
            f"train.batch_size={batch}",
            "device=cpu",
        ],
        cwd=workdir,
    )
    clock = _EpochClock()
    result = train(settings, prepared, name=f"{name}-{model}", progress=clock)
    history = [
        json.loads(line) for line in (result.run_dir / "history.jsonl").read_text().splitlines()
    ]
    whole = [later - earlier for earlier, later in itertools.pairwise(clock.starts)][1:]
    accuracy = float(result.metrics.get("test", {}).get("accuracy", float("nan")))
    return whole, [row["seconds"] for row in history][1 : epochs + 1], accuracy


def bare_epochs(
    prepared: Path, batch: int, epochs: int, model_name: str
) -> tuple[list[float], float]:
    """Epoch seconds of a bare loop over ``train()``'s own batches, and its test accuracy.

    The same loader, augmentation, normalisation, model, fused AdamW and per-step schedule as
    the engine (borrowed from it), ``epochs + 2`` epochs like :func:`visionops_epochs`; only
    the loop is bare: no validation, BatchNorm re-calibration, checkpoint or record. The
    first epoch is not counted.
    """
    from visionops.config import load_settings
    from visionops.data.loading import BatchLoader
    from visionops.data.prepared import PreparedDataset
    from visionops.device import resolve_device
    from visionops.distributed import DistContext
    from visionops.tasks import get_task
    from visionops.train import Engine

    dataset = PreparedDataset.open(prepared)
    settings = load_settings(
        overrides=[
            f"model.name={model_name}",
            f"train.epochs={epochs + 2}",
            f"train.batch_size={batch}",
            "device=cpu",
        ]
    )
    task = get_task(dataset.task).from_manifest(dataset.manifest)
    torch.manual_seed(settings.train.seed)
    engine = Engine(settings, dataset, task, resolve_device("cpu"), DistContext())
    model, optimizer, scheduler = engine.model, engine.optimizer, engine.scheduler
    times = []
    for epoch in range(1, epochs + 3):
        started = time.perf_counter()
        engine.train_loader.set_epoch(epoch)
        model.train()
        for images, targets in engine.train_loader:
            augmented = engine.augment(images) if engine.augment is not None else images
            outputs, _ = model(engine.normalise(augmented))
            loss = functional.cross_entropy(outputs, targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
        times.append(time.perf_counter() - started)
    model.eval()
    correct = total = 0
    with torch.inference_mode():
        for images, targets in BatchLoader(dataset, "test", batch, shuffle=False, prefetch=False):
            outputs, _ = model(engine.normalise(images))
            correct += int((outputs.argmax(1) == targets).sum())
            total += len(targets)
    return times[1:-1], correct / max(total, 1)


def demo_prepared(workdir: Path, per_class: int, size: int) -> Path:
    """The shapes demo (``per_class`` images per class), prepared at ``size`` px."""
    from visionops.config import load_settings
    from visionops.data.fetch import fetch_dataset
    from visionops.data.preprocess import prepare_dataset

    settings = load_settings(
        overrides=[
            f"data.raw_root={workdir / 'demo-raw'}",
            f"data.prepared_root={workdir / 'demo-prepared'}",
            f"data.demo.images_per_class={per_class}",
            f"data.demo.image_size={max(64, size)}",
            f"data.image_size={size}",
        ],
        cwd=workdir,
    )
    return prepare_dataset(fetch_dataset("demo:shapes", settings).path, settings).path


class _Preloaded:
    """The batch-loader protocol over batches already in memory (isolates the step cost)."""

    def __init__(self, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        self.batches = batches

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        del epoch, start_batch

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Any:
        return iter(self.batches)


def step_overhead(
    prepared: Path,
    batch: int,
    model_name: str,
    steps: int,
    rounds: int,
    overrides: tuple[str, ...] = (),
) -> dict[str, float]:
    """Images/s of the engine's loop and of a bare loop on the same in-memory batches."""
    from visionops.config import load_settings
    from visionops.data.loading import BatchLoader
    from visionops.data.prepared import PreparedDataset
    from visionops.device import resolve_device
    from visionops.distributed import DistContext
    from visionops.models import build_model
    from visionops.progress import NULL_PROGRESS
    from visionops.tasks import get_task
    from visionops.train import Engine

    dataset = PreparedDataset.open(prepared)
    loader = BatchLoader(dataset, "train", batch, shuffle=True, drop_last=True, prefetch=False)
    batches: list[tuple[torch.Tensor, torch.Tensor]] = []
    while len(batches) < steps:
        for images, targets in loader:
            batches.append((images.clone(memory_format=torch.channels_last), targets.clone()))
    batches = batches[:steps]
    settings = load_settings(
        overrides=[
            f"model.name={model_name}",
            f"train.batch_size={batch}",
            "train.augment.enabled=false",
            "train.epochs=1000",
            "device=cpu",
            *overrides,
        ]
    )
    task = get_task(dataset.task).from_manifest(dataset.manifest)
    torch.manual_seed(0)
    engine = Engine(settings, dataset, task, resolve_device("cpu"), DistContext())
    engine.train_loader = _Preloaded(batches)  # type: ignore[assignment]

    torch.manual_seed(0)
    bare = build_model(model_name, num_outputs=task.num_outputs).to(
        memory_format=torch.channels_last
    )
    optimizer = torch.optim.AdamW(bare.parameters(), lr=settings.train.lr, weight_decay=0.05)
    mean = torch.tensor(dataset.mean).view(1, -1, 1, 1)
    std = torch.tensor(dataset.std).view(1, -1, 1, 1)

    def bare_epoch() -> float:
        bare.train()
        started = time.perf_counter()
        for images, targets in batches:
            inputs = (images.float() / 255 - mean) / std
            outputs, _ = bare(inputs)
            loss = functional.cross_entropy(outputs, targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        return len(batches) * batch / (time.perf_counter() - started)

    def engine_epoch(epoch: int) -> float:
        started = time.perf_counter()
        engine.train_epoch(epoch, 1000, NULL_PROGRESS)
        return len(batches) * batch / (time.perf_counter() - started)

    bare_epoch()  # warm-up (oneDNN primitives, allocator)
    engine_epoch(1)
    ours, theirs = [], []
    for index in range(rounds):
        if index % 2:
            theirs.append(bare_epoch())
            ours.append(engine_epoch(index + 2))
        else:
            ours.append(engine_epoch(index + 2))
            theirs.append(bare_epoch())
    engine_rate, bare_rate = statistics.median(ours), statistics.median(theirs)
    return {"engine": engine_rate, "bare": bare_rate, "overhead": bare_rate / engine_rate - 1}


def _allreduce_worker(rank: int, numel: int, repeats: int, port: int, out: Any) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    tensor = torch.ones(numel)
    dist.all_reduce(tensor)  # warm-up: connections, buffers
    times = []
    for _ in range(repeats):
        dist.barrier()
        started = time.perf_counter()
        dist.all_reduce(tensor)
        times.append(time.perf_counter() - started)
    if rank == 0:
        out.put(statistics.median(times))
    dist.destroy_process_group()


def allreduce_seconds(model: str, classes: int, repeats: int = 20) -> tuple[float, int]:
    """Median seconds of one all-reduce of ``model``'s gradient size between 2 gloo ranks."""
    import socket

    import torch.multiprocessing as mp

    from visionops.models import build_model

    network = build_model(model, num_outputs=classes)
    numel = sum(p.numel() for p in network.parameters())
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    context = mp.get_context("spawn")
    queue = context.SimpleQueue()
    processes = [
        context.Process(target=_allreduce_worker, args=(rank, numel, repeats, port, queue))
        for rank in range(2)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join()
    return float(queue.get()), numel


def ddp_epochs(
    prepared: Path, workdir: Path, batch: int, epochs: int, model: str, processes: int
) -> list[float]:
    """Training-phase epoch seconds of ``visionops train`` as ``processes`` x 1 thread, or
    1 process x 2 threads; the same global batch ``batch``; the first epoch not counted."""
    import json
    import subprocess
    import sys

    name = f"ddp{processes}-{model}"
    command = [
        sys.executable, "-m", "visionops", "train", str(prepared), "-q",
        "--epochs", str(epochs + 1), "--batch-size", str(batch // processes),
        "--model", model, "--device", "cpu", "--name", name,
    ]  # fmt: skip
    if processes > 1:
        command += ["--nproc-per-node", str(processes)]
    threads = "1" if processes > 1 else "2"
    env = {**os.environ, "OMP_NUM_THREADS": threads, "NO_COLOR": "1"}
    subprocess.run(command, cwd=workdir, env=env, check=True, capture_output=True)
    rows = (workdir / "runs" / name / "history.jsonl").read_text().splitlines()
    return [float(json.loads(row)["seconds"]) for row in rows][1:]


def ddp_main(args: argparse.Namespace, workdir: Path, prepared: Path, n_train: int) -> None:
    """``--ddp``: 2 processes x 1 thread versus 1 process x 2 threads, and all-reduce time."""
    from visionops.data.prepared import PreparedDataset

    model = args.models.split(",")[0].strip()
    classes = PreparedDataset.open(prepared).num_outputs
    print(f"{model}: 1 process x 2 threads ...")
    single = ddp_epochs(prepared, workdir, args.batch, args.epochs, model, 1)
    print(f"{model}: 2 processes x 1 thread ...")
    double = ddp_epochs(prepared, workdir, args.batch, args.epochs, model, 2)
    print(f"{model}: all-reduce of the gradient between 2 gloo processes ...")
    reduce_s, numel = allreduce_seconds(model, classes)
    steps = -(-n_train // args.batch)
    ratio = statistics.median(double) / statistics.median(single)
    print(
        f"\n{date.today()} · {os.cpu_count()} cores, {cpu_model()}, python"
        f" {platform.python_version()}, torch {torch.__version__};"
        f" {n_train} train images at {args.size} px, global batch {args.batch}"
        f" ({steps} steps/epoch), median of {args.epochs} epochs after one warm-up"
    )
    print(f"{'model':<20}{'1x2 s/epoch':>12}{'2x1 s/epoch':>12}{'ratio':>8}{'all-reduce':>16}")
    print(
        f"{model:<20}{statistics.median(single):>12.3f}{statistics.median(double):>12.3f}"
        f"{ratio:>7.2f}x{1000 * reduce_s:>10.1f} ms/step  ({numel / 1e6:.1f} M floats)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1000, help="JPEGs to generate")
    parser.add_argument("--width", type=int, default=640, help="generated image width")
    parser.add_argument("--height", type=int, default=480, help="generated image height")
    parser.add_argument("--size", type=int, default=64, help="training image side")
    parser.add_argument("--batch", type=int, default=64, help="batch size")
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs per side")
    parser.add_argument(
        "--models", default="resnet18,mobilenet_v3_small", help="comma-separated backbones"
    )
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers; 0 = cores")
    parser.add_argument("--steps", type=int, default=12, help="batches per step-test round")
    parser.add_argument("--rounds", type=int, default=7, help="interleaved step-test rounds")
    parser.add_argument(
        "--demo-per-class", type=int, default=520, help="shapes demo images per class (part 3)"
    )
    parser.add_argument(
        "--ddp", action="store_true", help="2 processes x 1 thread vs 1 process x 2 threads"
    )
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    workers = args.workers or cores
    threads = torch.get_num_threads()
    models = [name.strip() for name in args.models.split(",") if name.strip()]

    workdir = Path(tempfile.mkdtemp(prefix="visionops-bench-train-"))
    try:
        from visionops.config import load_settings
        from visionops.data.prepared import PreparedDataset
        from visionops.data.preprocess import prepare_dataset

        print(f"generating {args.count} {args.width}x{args.height} JPEGs in {workdir} ...")
        raw = generate_images(workdir / "raw" / "bench", args.count, args.width, args.height)
        settings = load_settings(
            overrides=[
                f"data.prepared_root={workdir / 'prepared'}",
                f"data.image_size={args.size}",
            ],
            cwd=workdir,
        )
        prepared = prepare_dataset(raw, settings).path
        n_train = len(list((raw / "train").rglob("*.jpg")))
        if args.ddp:
            ddp_main(args, workdir, prepared, n_train)
            return

        rows = []
        for model in models:
            print(f"{model}: step throughput on pre-loaded batches ...")
            steps = step_overhead(prepared, args.batch, model, args.steps, args.rounds)
            print(f"{model}: visionops train epochs ...")
            whole, phase, _ = visionops_epochs(prepared, workdir, args.batch, args.epochs, model)
            print(f"{model}: reference loop epochs ...")
            reference = reference_epochs(
                raw, args.size, args.batch, workers, args.epochs, model, 2e-3
            )
            rows.append((model, reference, whole, phase, steps))

        print(
            f"\n{date.today()} · {cores} cores, {cpu_model()}, python"
            f" {platform.python_version()}, torch {torch.__version__}, {threads} threads;"
            f" {n_train} train JPEGs {args.width}x{args.height} → {args.size} px,"
            f" batch {args.batch}, median of {args.epochs} epochs"
        )
        print(f"reference: ImageFolder + PIL transforms + DataLoader({workers} workers)\n")
        header = (
            f"{'model':<20}{'reference s':>12}{'visionops s':>12}{'(train part)':>13}"
            f"{'speed-up':>10}{'bare img/s':>12}{'engine img/s':>14}{'overhead':>10}"
        )
        print(header)
        for model, reference, whole, phase, steps in rows:
            theirs, ours = statistics.median(reference), statistics.median(whole)
            print(
                f"{model:<20}{theirs:>12.2f}{ours:>12.2f}{statistics.median(phase):>13.2f}"
                f"{theirs / ours:>9.2f}x{steps['bare']:>12.1f}{steps['engine']:>14.1f}"
                f"{100 * steps['overhead']:>+9.1f}%"
            )

        model = models[0]
        demo = demo_prepared(workdir, args.demo_per_class, args.size)
        demo_train = len(PreparedDataset.open(demo).indices("train"))
        print(
            f"\n{model}: whole epochs on the shapes demo ({demo_train} train images,"
            f" {demo_train // args.batch} batches) ..."
        )
        ours, _, our_accuracy = visionops_epochs(
            demo, workdir, args.batch, args.epochs, model, name="demo"
        )
        print(f"{model}: bare loop epochs on the same images ...")
        bare, bare_accuracy = bare_epochs(demo, args.batch, args.epochs, model)
        ratio = statistics.median(ours) / statistics.median(bare)
        print(
            f"{'model':<20}{'bare s/epoch':>13}{'visionops s/epoch':>18}{'ratio':>8}"
            f"{'bare test acc':>15}{'visionops test acc':>20}"
        )
        print(
            f"{model:<20}{statistics.median(bare):>13.3f}{statistics.median(ours):>18.3f}"
            f"{ratio:>7.3f}x{bare_accuracy:>15.4f}{our_accuracy:>20.4f}"
        )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
