"""Quality on real data: every task on real images with real ImageNet weights, against a peer.

Needs the cache of ``scripts/real-data`` (real images and weights from the package registries;
``$VISIONOPS_REAL_DATA``, default ``~/.cache/visionops/real-data``). Each row runs visionops
as a user does (``data preprocess``, ``train``, ``eval`` through the CLI) and its peer on the
same images in the same run:

- **transfer** (seeds 1, 2, 4): Fashion-MNIST at ``--per-class`` images a class (85 % train,
  15 % val), 96 px, each ``--models`` entry from ImageNet weights and from random init, against
  a plain torchvision/timm fine-tuning loop (the textbook one: ``ImageFolder``, the same
  augmentations, AdamW, one warm-up epoch then cosine, gradient clipping) with the same weights
  file, training images, epochs and schedule. Test accuracy on ``--test-per-class`` images a
  class of Fashion-MNIST's own test set; visionops is scored at its best-by-val checkpoint
  (what ``eval`` and ``export`` take) and, beside it, at its last.
- **grey** (seed 5, FER-2013): Fashion-MNIST as 1-channel 48 px images trained at 64 px with a
  ResNet-18 from random init (the fer2013 recipe's network), against the same reference loop.
- **multilabel**, **regression** (seeds 2 and 4): canvases of 1-4 real Fashion-MNIST items;
  labels = which classes are on the canvas, targets = item count and ink share. ImageNet
  MobileNetV2 on both sides; mAP and R² from the same scoring functions.
- **anomaly** (seed 3) and **drift**: ``quality_anomaly.py`` and ``quality_drift.py``.

Every side uses ``--threads`` intra-op threads; wall times are each side's whole training
(visionops: the ``train`` command, start-up included; reference: its loop with data loading).
The table and a JSON of every figure are printed; ``--out FILE`` keeps the JSON.

Run: python benchmarks/quality.py                      (every row, the issue's sizes)
     python benchmarks/quality.py --rows transfer --per-class 100 --models mobilenet_v2
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from preprocess import cpu_model

ROWS = ("transfer", "grey", "multilabel", "regression", "anomaly", "drift")
DEFAULT_CACHE = Path.home() / ".cache" / "visionops" / "real-data"
IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


@dataclass(frozen=True)
class Recipe:
    """What both sides of a row share: the schedule, the augmentations, the batch."""

    epochs: int
    batch: int = 64
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup_epochs: float = 1.0
    grad_clip: float = 5.0
    crop_scale: float = 0.8
    jitter: float = 0.1
    seed: int = 0


# ---------------------------------------------------------------------------- data


def real_data_root(given: Path | None) -> Path:
    root = given or Path(os.environ.get("VISIONOPS_REAL_DATA") or DEFAULT_CACHE)
    if not (root / "fashion-mnist" / ".visionops-real-data").is_file():
        sys.exit(f"error: no real-data cache in {root} — run scripts/real-data first")
    return root


def weights_env(root: Path) -> dict[str, str]:
    """The environment that points torch and timm at the cache, offline."""
    return {
        "TORCH_HOME": str(root / "torch"),
        "HF_HOME": str(root / "huggingface"),
        "HF_HUB_OFFLINE": "1",
        "VISIONOPS_REAL_DATA": str(root),
    }


def fashion_classes(root: Path) -> list[str]:
    return sorted(p.name for p in (root / "fashion-mnist" / "train").iterdir() if p.is_dir())


def fashion_files(root: Path, split: str, cls: str, count: int, seed: int) -> list[Path]:
    files = sorted((root / "fashion-mnist" / split / cls).glob("*.png"))
    rng = np.random.default_rng(seed)
    return [files[i] for i in rng.permutation(len(files))[:count]]


def fashion_subset(
    root: Path,
    out: Path,
    per_class: int,
    test_per_class: int,
    *,
    side: int | None = None,
    seed: int = 0,
) -> Path:
    """``out/{train,val,test}/<class>/``: ``per_class`` training images a class (15 % of
    them as val), ``test_per_class`` from the test set; resized to ``side`` px when given."""
    if out.is_dir():
        return out
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    val = max(1, round(per_class * 0.15))
    for cls in fashion_classes(root):
        picked = fashion_files(root, "train", cls, per_class, seed)
        parts = {
            "train": picked[val:],
            "val": picked[:val],
            "test": fashion_files(root, "test", cls, test_per_class, seed),
        }
        for split, files in parts.items():
            folder = partial / split / cls
            folder.mkdir(parents=True)
            for file in files:
                if side is None:
                    shutil.copyfile(file, folder / file.name)
                else:
                    image = Image.open(file).resize((side, side), Image.Resampling.BILINEAR)
                    image.save(folder / file.name)
    partial.rename(out)
    return out


def canvases(
    root: Path, out: Path, count: int, test: int, *, side: int = 84, seed: int = 0
) -> Path:
    """Canvases of 1-4 real Fashion-MNIST items on a 3x3 grid of 28 px cells.

    Writes ``out/images/*.png`` and split-named CSVs twice: ``multilabel/{train,val,test}.csv``
    (one 0/1 column a class) and ``regression/{train,val,test}.csv`` (``items`` and ``ink``,
    the share of the canvas the items cover).
    """
    if out.is_dir():
        return out
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    (partial / "images").mkdir(parents=True)
    classes = fashion_classes(root)
    rng = np.random.default_rng(seed)
    pools = {
        split: [
            (c, f)
            for c, cls in enumerate(classes)
            for f in fashion_files(root, "train" if split != "test" else "test", cls, 600, seed)
        ]
        for split in ("train", "test")
    }
    n_val = round(count * 0.15)
    plan = [("train", i) for i in range(count - n_val)] + [("val", i) for i in range(n_val)]
    plan += [("test", i) for i in range(test)]
    rows: dict[str, list[tuple[str, list[int], int, float]]] = {"train": [], "val": [], "test": []}
    cell = side // 3
    for split, index in plan:
        pool = pools["test" if split == "test" else "train"]
        items = int(rng.integers(1, 5))
        canvas = np.zeros((side, side), np.uint8)
        present = [0] * len(classes)
        for slot in rng.choice(9, items, replace=False):
            label, file = pool[int(rng.integers(len(pool)))]
            item = np.asarray(Image.open(file).convert("L"))
            y = (slot // 3) * cell + int(rng.integers(0, cell - 28 + 1))
            x = (slot % 3) * cell + int(rng.integers(0, cell - 28 + 1))
            canvas[y : y + 28, x : x + 28] = np.maximum(canvas[y : y + 28, x : x + 28], item)
            present[label] = 1
        name = f"{split}-{index:05d}.png"
        Image.fromarray(canvas).save(partial / "images" / name)
        ink = float((canvas > 32).mean())
        rows[split].append((name, present, items, round(ink, 5)))
    for task in ("multilabel", "regression"):
        (partial / task).mkdir()
        # Hard links: each task folder is a complete dataset (layouts do not follow symlinks).
        (partial / task / "images").mkdir()
        for image in (partial / "images").iterdir():
            os.link(image, partial / task / "images" / image.name)
        for split, entries in rows.items():
            if task == "multilabel":
                lines = ["image," + ",".join(classes)]
                lines += [f"images/{n}," + ",".join(map(str, p)) for n, p, _, _ in entries]
            else:
                lines = ["image,items,ink"] + [f"images/{n},{k},{a}" for n, _, k, a in entries]
            (partial / task / f"{split}.csv").write_text("\n".join(lines) + "\n")
    partial.rename(out)
    return out


# ---------------------------------------------------------------------------- visionops


def visionops(args: Sequence[str], cwd: Path, env: dict[str, str]) -> tuple[dict[str, Any], float]:
    """One ``visionops … --json`` command: its JSON answer and wall seconds."""
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "visionops", *args, "--json"],
        cwd=cwd,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - start
    if done.returncode:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise RuntimeError(f"visionops {' '.join(args)} failed: {' | '.join(tail)}")
    return json.loads(done.stdout), seconds


def visionops_side(
    dataset: Path,
    work: Path,
    name: str,
    *,
    model: str,
    pretrained: bool,
    recipe: Recipe,
    size: int,
    channels: int,
    env: dict[str, str],
    metric: str,
    threads: int,
) -> dict[str, Any]:
    """``data preprocess``, ``train`` and ``eval`` (best and last checkpoints) of one run."""
    work.mkdir(parents=True, exist_ok=True)
    env = {**env, "OMP_NUM_THREADS": str(threads)}
    prepared, _ = visionops(
        ["data", "preprocess", str(dataset), "--size", str(size), "--channels", str(channels)],
        work,
        env,
    )
    settings = [
        f"train.lr={recipe.lr}",
        f"train.weight_decay={recipe.weight_decay}",
        f"train.warmup_epochs={recipe.warmup_epochs}",
        f"train.grad_clip={recipe.grad_clip}",
        f"train.augment.crop_scale={recipe.crop_scale}",
        f"train.augment.color_jitter={recipe.jitter}",
    ]
    _, seconds = visionops(
        [
            "train",
            prepared["path"],
            *settings,
            "--model",
            model,
            "--pretrained" if pretrained else "--no-pretrained",
            "--epochs",
            str(recipe.epochs),
            "--batch-size",
            str(recipe.batch),
            "--seed",
            str(recipe.seed),
            "--device",
            "cpu",
            "--name",
            name,
            "--force",
        ],
        work,
        env,
    )
    scores = {}
    for checkpoint in ("best", "last"):
        answer, _ = visionops(
            [
                "eval",
                f"runs/{name}",
                "--split",
                "test",
                "--checkpoint",
                checkpoint,
                "--device",
                "cpu",
            ],
            work,
            env,
        )
        scores[checkpoint] = float(answer["metrics"][metric])
    return {"metric": scores["best"], "last": scores["last"], "seconds": seconds}


# ---------------------------------------------------------------------------- reference loop


class _Rows:
    """A CSV of ``image,<columns>`` as a torch dataset (the reference's multilabel/regression)."""

    def __init__(self, csv: Path, transform: Callable[[Image.Image], Any]) -> None:
        lines = csv.read_text().splitlines()
        self.root = csv.parent
        self.rows = [line.split(",") for line in lines[1:] if line]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        import torch

        row = self.rows[index]
        image = Image.open(self.root / row[0]).convert("RGB")
        return self.transform(image), torch.tensor([float(v) for v in row[1:]])


def reference_network(model: str, outputs: int, env: dict[str, str], channels: int) -> Any:
    """The network a user builds: torchvision's or timm's own constructor with its weights."""
    import timm
    import torchvision
    from torch import nn

    if model.startswith("timm:"):
        os.environ.update(env)  # timm reads the Hugging Face cache through its own client
        return timm.create_model(model[5:], pretrained=True, num_classes=outputs)
    if model == "mobilenet_v2":
        os.environ.update(env)
        network = torchvision.models.mobilenet_v2(
            weights=torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V1
        )
        network.classifier[1] = nn.Linear(network.last_channel, outputs)
        return network
    if model == "resnet18":  # random init: the grey row
        network = torchvision.models.resnet18(num_classes=outputs)
        if channels == 1:
            network.conv1 = nn.Conv2d(1, 64, 7, 2, 3, bias=False)
        return network
    raise SystemExit(f"error: the reference loop has no network for {model}")


def reference_side(
    model: str,
    *,
    train: Any,
    test: Any,
    outputs: int,
    kind: str,
    recipe: Recipe,
    env: dict[str, str],
    threads: int,
    channels: int = 3,
    score: Callable[[np.ndarray, np.ndarray], float],
) -> dict[str, Any]:
    """The textbook fine-tuning loop; returns the test score and the loop's wall seconds."""
    import torch
    from torch import nn
    from torch.utils.data import DataLoader

    torch.manual_seed(recipe.seed)
    torch.set_num_threads(threads)
    start = time.perf_counter()
    network = reference_network(model, outputs, env, channels)
    optimizer = torch.optim.AdamW(
        network.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay
    )
    loader = DataLoader(
        train,
        batch_size=recipe.batch,
        shuffle=True,
        drop_last=True,
        num_workers=1,
        persistent_workers=True,
    )
    total = recipe.epochs * len(loader)
    warmup = recipe.warmup_epochs * len(loader)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    loss_fn: Any = {
        "classification": nn.CrossEntropyLoss(),
        "multilabel": nn.BCEWithLogitsLoss(),
        "regression": nn.MSELoss(),
    }[kind]
    mean = std = None
    if kind == "regression":  # standardised targets, as every regression recipe does
        targets = torch.stack([train[i][1] for i in range(len(train))])
        mean, std = targets.mean(0), targets.std(0).clamp_min(1e-6)
    for _ in range(recipe.epochs):
        network.train()
        for images, labels in loader:
            out = network(images)
            if kind == "regression":
                labels = (labels - mean) / std
            loss = loss_fn(out, labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(network.parameters(), recipe.grad_clip)
            optimizer.step()
            scheduler.step()
    seconds = time.perf_counter() - start
    network.eval()
    predictions, truth = [], []
    with torch.no_grad():
        for images, labels in DataLoader(test, batch_size=128):
            out = network(images)
            if kind == "classification":
                out = out.softmax(1)
            elif kind == "multilabel":
                out = out.sigmoid()
            else:
                out = out * std + mean
            predictions.append(out.numpy())
            truth.append(labels.numpy())
    return {"metric": score(np.concatenate(predictions), np.concatenate(truth)), "seconds": seconds}


def transforms(size: int, recipe: Recipe, mean_std: tuple, channels: int = 3) -> tuple[Any, Any]:
    from torchvision import transforms as tv

    mean, std = mean_std
    if channels == 1:
        mean, std = (sum(mean) / 3,), (sum(std) / 3,)
    grey = [tv.Grayscale(1)] if channels == 1 else [tv.Lambda(lambda im: im.convert("RGB"))]
    train = tv.Compose(
        [
            *grey,
            tv.Resize((size, size)),
            tv.RandomResizedCrop(size, scale=(recipe.crop_scale, 1.0)),
            tv.RandomHorizontalFlip(),
            tv.ColorJitter(recipe.jitter, recipe.jitter, recipe.jitter),
            tv.ToTensor(),
            tv.Normalize(mean, std),
        ]
    )
    test = tv.Compose([*grey, tv.Resize((size, size)), tv.ToTensor(), tv.Normalize(mean, std)])
    return train, test


def model_mean_std(model: str) -> tuple:
    if model.startswith("timm:"):
        from visionops.models.timm_family import normalization

        return normalization(model)
    return IMAGENET


def accuracy(probabilities: np.ndarray, labels: np.ndarray) -> float:
    return float((probabilities.argmax(1) == labels).mean())


def mean_ap(probabilities: np.ndarray, truth: np.ndarray) -> float:
    from visionops.tasks.multilabel import multilabel_metrics

    return multilabel_metrics(probabilities, truth)["map"]


def r2(values: np.ndarray, truth: np.ndarray) -> float:
    from visionops.tasks.regression import regression_metrics

    return regression_metrics(values, truth)["r2"]


# ---------------------------------------------------------------------------- rows


def transfer_rows(
    root: Path, work: Path, args: argparse.Namespace, env: dict[str, str]
) -> list[dict[str, Any]]:
    from torchvision.datasets import ImageFolder

    rows = []
    recipe = Recipe(epochs=args.epochs, batch=args.batch)
    for per_class in args.per_class:
        data = fashion_subset(root, work / f"fashion-{per_class}", per_class, args.test_per_class)
        for model in args.models:
            slug = model.replace(":", "-")
            row: dict[str, Any] = {
                "row": "transfer",
                "images_per_class": per_class,
                "model": model,
                "size": args.size,
                "epochs": args.epochs,
                "metric": "accuracy",
            }
            for variant, pretrained in (("imagenet", True), ("random", False)):
                if variant not in args.variants:
                    continue
                row[variant] = visionops_side(
                    data,
                    work / "vo",
                    f"{slug}-{per_class}-{variant}",
                    model=model,
                    pretrained=pretrained,
                    recipe=recipe,
                    size=args.size,
                    channels=3,
                    env=env,
                    metric="accuracy",
                    threads=args.threads,
                )
                print(
                    f"  transfer {per_class}/class {model} visionops {variant}: {row[variant]}",
                    file=sys.stderr,
                )
            rows.append(row)
            if "reference" not in args.variants:
                continue
            train_tf, test_tf = transforms(args.size, recipe, model_mean_std(model))
            row["reference"] = reference_side(
                model,
                train=ImageFolder(data / "train", train_tf),
                test=ImageFolder(data / "test", test_tf),
                outputs=10,
                kind="classification",
                recipe=recipe,
                env=env,
                threads=args.threads,
                score=accuracy,
            )
            print(
                f"  transfer {per_class}/class {model} reference: {row['reference']}",
                file=sys.stderr,
            )
    return rows


def grey_rows(
    root: Path, work: Path, args: argparse.Namespace, env: dict[str, str]
) -> list[dict[str, Any]]:
    from torchvision.datasets import ImageFolder

    recipe = Recipe(epochs=args.grey_epochs, batch=args.batch)
    data = fashion_subset(
        root,
        work / f"grey-{args.grey_per_class}",
        args.grey_per_class,
        args.test_per_class,
        side=48,
    )
    row: dict[str, Any] = {
        "row": "grey",
        "images_per_class": args.grey_per_class,
        "model": "resnet18",
        "size": 64,
        "epochs": recipe.epochs,
        "metric": "accuracy",
    }
    row["visionops"] = visionops_side(
        data,
        work / "vo",
        "grey",
        model="resnet18",
        pretrained=False,
        recipe=recipe,
        size=64,
        channels=1,
        env=env,
        metric="accuracy",
        threads=args.threads,
    )
    print(f"  grey visionops: {row['visionops']}", file=sys.stderr)
    train_tf, test_tf = transforms(64, recipe, IMAGENET, channels=1)
    row["reference"] = reference_side(
        "resnet18",
        train=ImageFolder(data / "train", train_tf),
        test=ImageFolder(data / "test", test_tf),
        outputs=10,
        kind="classification",
        recipe=recipe,
        env=env,
        threads=args.threads,
        channels=1,
        score=accuracy,
    )
    print(f"  grey reference: {row['reference']}", file=sys.stderr)
    return [row]


def canvas_rows(
    root: Path, work: Path, args: argparse.Namespace, env: dict[str, str], kind: str
) -> list[dict[str, Any]]:
    recipe = Recipe(epochs=args.canvas_epochs, batch=args.batch)
    data = canvases(root, work / f"canvases-{args.canvases}", args.canvases, args.canvas_test)
    metric, score, outputs = ("map", mean_ap, 10) if kind == "multilabel" else ("r2", r2, 2)
    model = "mobilenet_v2"
    row: dict[str, Any] = {
        "row": kind,
        "canvases": args.canvases,
        "model": model,
        "size": args.canvas_size,
        "epochs": recipe.epochs,
        "metric": metric,
    }
    row["visionops"] = visionops_side(
        data / kind,
        work / "vo",
        kind,
        model=model,
        pretrained=True,
        recipe=recipe,
        size=args.canvas_size,
        channels=3,
        env=env,
        metric=metric,
        threads=args.threads,
    )
    print(f"  {kind} visionops: {row['visionops']}", file=sys.stderr)
    train_tf, test_tf = transforms(args.canvas_size, recipe, IMAGENET)
    row["reference"] = reference_side(
        model,
        train=_Rows(data / kind / "train.csv", train_tf),
        test=_Rows(data / kind / "test.csv", test_tf),
        outputs=outputs,
        kind=kind,
        recipe=recipe,
        env=env,
        threads=args.threads,
        score=score,
    )
    print(f"  {kind} reference: {row['reference']}", file=sys.stderr)
    return [row]


# ---------------------------------------------------------------------------- report


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| row | data | model | visionops | peer | Δ | visionops s | peer s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        if row["row"] == "transfer":
            nan = {"metric": math.nan, "last": math.nan, "seconds": math.nan}
            imagenet, random = row.get("imagenet", nan), row.get("random", nan)
            ref = row.get("reference", nan)
            data = (
                f"Fashion-MNIST {row['images_per_class']}/class, {row['size']} px,"
                f" {row['epochs']} ep"
            )
            lines.append(
                f"| transfer | {data} | {row['model']} ImageNet (last {imagenet['last']:.3f};"
                f" random init {random['metric']:.3f}) | {imagenet['metric']:.3f} |"
                f" {ref['metric']:.3f} |"
                f" {100 * (imagenet['metric'] - ref['metric']):+.1f} pp |"
                f" {imagenet['seconds']:.0f} | {ref['seconds']:.0f} |"
            )
        elif row["row"] in ("grey", "multilabel", "regression"):
            ours, ref = row["visionops"], row["reference"]
            data = (
                f"Fashion-MNIST grey 48→64 px, {row['images_per_class']}/class"
                if row["row"] == "grey"
                else f"{row['canvases']} canvases, {row['size']} px"
            )
            unit = "pp" if row["metric"] in ("accuracy", "map") else ""
            scale = 100 if unit else 1
            lines.append(
                f"| {row['row']} ({row['metric']}) | {data}, {row['epochs']} ep | {row['model']} |"
                f" {ours['metric']:.3f} (last {ours['last']:.3f}) | {ref['metric']:.3f} |"
                f" {scale * (ours['metric'] - ref['metric']):+.{1 if unit else 3}f} {unit} |"
                f" {ours['seconds']:.0f} | {ref['seconds']:.0f} |"
            )
    return "\n".join(lines)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="benchmarks/quality.py", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--real-data", type=Path, default=None)
    parser.add_argument("--rows", default=",".join(ROWS), help=f"comma list of {', '.join(ROWS)}")
    parser.add_argument("--per-class", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--test-per-class", type=int, default=100)
    parser.add_argument(
        "--models", nargs="+", default=["mobilenet_v2", "timm:tf_efficientnet_lite0"]
    )
    parser.add_argument(
        "--variants",
        default="imagenet,random,reference",
        help="transfer row: which of imagenet, random (visionops) and reference run",
    )
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--grey-per-class", type=int, default=300)
    parser.add_argument("--grey-epochs", type=int, default=6)
    parser.add_argument("--canvases", type=int, default=1200)
    parser.add_argument("--canvas-test", type=int, default=500)
    parser.add_argument("--canvas-size", type=int, default=84)
    parser.add_argument("--canvas-epochs", type=int, default=6)
    parser.add_argument("--anomaly-sets", default="", help="texture sets (default: all)")
    parser.add_argument("--anomaly-size", type=int, default=224)
    parser.add_argument("--anomalib-python", default="/work/anomalib-venv/bin/python")
    parser.add_argument("--drift-trials", type=int, default=40)
    parser.add_argument("--drift-n", type=int, default=100)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--keep", type=Path, default=None, help="work here and keep the files")
    parser.add_argument("--out", type=Path, default=None, help="write every figure as JSON")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    root = real_data_root(args.real_data)
    env = weights_env(root)
    rows_wanted = [r.strip() for r in args.rows.split(",") if r.strip()]
    unknown = set(rows_wanted) - set(ROWS)
    if unknown:
        sys.exit(f"error: unknown rows {sorted(unknown)} — pick from {', '.join(ROWS)}")
    work = args.keep or Path(tempfile.mkdtemp(prefix="visionops-quality-"))
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    results: list[dict[str, Any]] = []
    try:
        if "transfer" in rows_wanted:
            results += transfer_rows(root, work, args, env)
        if "grey" in rows_wanted:
            results += grey_rows(root, work, args, env)
        for kind in ("multilabel", "regression"):
            if kind in rows_wanted:
                results += canvas_rows(root, work, args, env, kind)
        extra: list[str] = []
        if "anomaly" in rows_wanted:
            import quality_anomaly

            sets = [s for s in args.anomaly_sets.split(",") if s] or None
            anomaly = quality_anomaly.run(
                root, sets, args.anomaly_size, 0.1, args.anomalib_python, work / "anomaly"
            )
            results += [{"row": "anomaly", **r} for r in anomaly]
            extra.append(quality_anomaly.table(anomaly))
        if "drift" in rows_wanted:
            import quality_drift

            drift = quality_drift.run(root, args.drift_trials, args.drift_n, work / "drift")
            results += [{"row": "drift", **r} for r in drift]
            extra.append(quality_drift.table(drift))
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    command = "python benchmarks/quality.py " + " ".join(argv if argv is not None else sys.argv[1:])
    print(
        f"\n{date.today()} · {cpu_model()}, {os.cpu_count()} cores ·"
        f" {args.threads} threads each side"
        f" · {time.perf_counter() - started:.0f} s\n{command.strip()}\n"
    )
    print(table(results))
    for block in extra:
        print("\n" + block)
    if args.out:
        args.out.write_text(json.dumps(results, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    sys.exit(main())
