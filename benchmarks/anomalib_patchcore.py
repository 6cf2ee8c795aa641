"""anomalib's PatchCore on an MVTec-layout folder, offline: the baseline of ``anomaly.py``.

Run by the anomalib interpreter, never by visionops' (it imports no visionops code):
``benchmarks/anomaly.py --vs-anomalib`` starts it once per seed. anomalib is driven the way its
own documentation shows a user doing it: ``MVTecAD`` datamodule, ``Patchcore`` Lightning
module, ``Engine().fit()`` then ``Engine().test()``. Only choices a user makes explicitly are
changed: backbone, layers, coreset ratio, the pre-processor's image size (resize to N x N +
ImageNet normalisation, no centre crop), CPU, a seed, no visualizer (it only writes
pictures), and the starting weights: random init by default (nothing is read), or with
``--pre-trained`` timm's pretrained weights read from the local Hugging Face cache
(``HF_HOME``; never downloaded: the hub is offline and the network blocked, so weights
missing from the cache stop the run with one line). ``benchmarks/quality_anomaly.py`` uses
``--backbone mobilenetv2_100 --layers blocks.2 blocks.4 --pre-trained``: timm's
``feature_info`` module names of the stride-8 and stride-16 stages, which
``TimmFeatureExtractor`` looks up by name.

It prints one JSON line (anomalib's own image/pixel AUROC and AUPRO after its
PostProcessor, fit and test seconds, versions) and, with ``--save FILE.npz``, writes the
raw test outputs captured before the PostProcessor: ``paths`` (image paths relative to the
category folder), ``scores`` and ``maps`` (N, H, W). ``anomaly.py`` scores those with the
same metric code as visionops' outputs, so both sides are measured by one implementation.

No network: hub offline variables are set before anything is imported, and every socket
connection to a non-loopback address raises (``network_attempts`` counts them).

Environment (a benchmark-only dependency, never in the package; see benchmarks/README.md)::

    python3.11 -m venv /work/anomalib-venv
    echo /work/main/.venv/lib/python3.11/site-packages \\
        > /work/anomalib-venv/lib/python3.11/site-packages/_visionops_torch.pth
    printf 'torch==2.15.0\\ntorchvision==0.29.2\\n' > constraints.txt
    /work/anomalib-venv/bin/pip install -c constraints.txt anomalib==2.7.0

Usage::

    /work/anomalib-venv/bin/python benchmarks/anomalib_patchcore.py ROOT --category carpet \\
        --image-size 224 --backbone resnet18 --layers layer2 layer3 --coreset-ratio 0.1 \\
        --seed 0 --save out.npz
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import sys
import tempfile
import time
import warnings
from pathlib import Path

# --- offline before any import that could reach a hub ------------------------------------
for _key, _value in {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "DO_NOT_TRACK": "1",
    "WANDB_MODE": "disabled",
    "NO_ALBUMENTATIONS_UPDATE": "1",
}.items():
    os.environ[_key] = _value

NETWORK_ATTEMPTS: list[str] = []
_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex


def _is_local(address: object) -> bool:
    if isinstance(address, (str, bytes)):  # AF_UNIX path
        return True
    host = str(address[0]) if isinstance(address, tuple) and address else ""
    return host.startswith("127.") or host in {"localhost", "::1", ""}


def _guarded_connect(self: socket.socket, address: object) -> None:
    if not _is_local(address):
        NETWORK_ATTEMPTS.append(repr(address))
        raise OSError(f"anomalib_patchcore.py: network access blocked ({address!r})")
    _real_connect(self, address)


def _guarded_connect_ex(self: socket.socket, address: object) -> int:
    if not _is_local(address):
        NETWORK_ATTEMPTS.append(repr(address))
        return 111  # ECONNREFUSED
    return _real_connect_ex(self, address)


socket.socket.connect = _guarded_connect  # type: ignore[method-assign]
socket.socket.connect_ex = _guarded_connect_ex  # type: ignore[method-assign]
_real_getaddrinfo = socket.getaddrinfo


def _guarded_getaddrinfo(host, *args, **kwargs):  # type: ignore[no-untyped-def]
    if host not in (None, "localhost", "127.0.0.1", "::1"):
        NETWORK_ATTEMPTS.append(f"dns:{host}")
        raise socket.gaierror(f"anomalib_patchcore.py: name resolution blocked ({host})")
    return _real_getaddrinfo(host, *args, **kwargs)


socket.getaddrinfo = _guarded_getaddrinfo  # type: ignore[assignment]

warnings.filterwarnings("ignore")

# glibc's dynamic mmap threshold lets the ~32 MB temporaries of anomalib's k-centre loop
# (rows x ~255 projected dims x 4 B) land on the heap and fragment it: RSS grew by ~30 MB per
# coreset step (21 GB, then the OOM killer, at 31k patches). A fixed threshold keeps every
# large block mmapped and returned; glibc reads it only at start-up, hence the re-exec.
if os.environ.get("MALLOC_MMAP_THRESHOLD_") is None:
    os.environ["MALLOC_MMAP_THRESHOLD_"] = "1048576"
    os.execv(sys.executable, [sys.executable, *sys.argv])

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def count_images(root: Path, category: str) -> dict[str, int]:
    base = root / category
    counts = {"train_good": len(_images(base / "train" / "good"))}
    for kind in sorted(p for p in (base / "test").iterdir() if p.is_dir()):
        counts[f"test_{kind.name}"] = len(_images(kind))
    return counts


def make_model(patchcore, args, evaluator, size, crop):  # type: ignore[no-untyped-def]
    """anomalib's ``Patchcore`` with the run's explicit choices (weights: see the docstring)."""
    return patchcore(
        backbone=args.backbone,
        layers=list(args.layers),
        pre_trained=bool(args.pre_trained),  # from the local cache only: the hub is offline
        coreset_sampling_ratio=args.coreset_ratio,
        num_neighbors=args.num_neighbors,
        pre_processor=patchcore.configure_pre_processor(image_size=size, center_crop_size=crop),
        evaluator=evaluator,
        visualizer=False,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", type=Path, help="MVTec-layout root (holds CATEGORY/)")
    parser.add_argument("--category", default="carpet")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--center-crop", type=int, default=None, help="crop after resize")
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--layers", nargs="+", default=["layer2", "layer3"])
    parser.add_argument("--coreset-ratio", type=float, default=0.1)
    parser.add_argument("--num-neighbors", type=int, default=9)
    parser.add_argument(
        "--pre-trained",
        action="store_true",
        help="timm's pretrained weights from the local Hugging Face cache (default: random init)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--save", type=Path, default=None, help="raw outputs to this .npz")
    args = parser.parse_args(argv)

    if not (args.root / args.category / "train" / "good").is_dir():
        print(f"{args.root}/{args.category}/train/good is missing", file=sys.stderr)
        return 2

    import logging

    import numpy as np
    import torch
    import torchvision

    logging.disable(logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)

    import anomalib
    import lightning
    import timm
    import torchmetrics
    from anomalib.data import MVTecAD
    from anomalib.engine import Engine
    from anomalib.metrics import AUPRO, AUROC, Evaluator
    from anomalib.metrics.aupro import _AUPRO
    from anomalib.models import Patchcore
    from lightning.pytorch import Callback, seed_everything
    from sklearn.metrics import roc_auc_score

    root = args.root
    seed_everything(args.seed, workers=True, verbose=False)

    datamodule = MVTecAD(
        root=root,
        category=args.category,
        train_batch_size=args.batch_size,
        eval_batch_size=args.batch_size,
        num_workers=args.workers,
        seed=args.seed,
    )
    size = (args.image_size, args.image_size)
    crop = (args.center_crop, args.center_crop) if args.center_crop else None
    evaluator = Evaluator(
        test_metrics=[
            AUROC(fields=["pred_score", "gt_label"], prefix="image_"),
            AUROC(fields=["anomaly_map", "gt_mask"], prefix="pixel_", strict=False),
            AUPRO(fields=["anomaly_map", "gt_mask"], prefix="pixel_", strict=False),
        ]
    )
    try:
        model = make_model(Patchcore, args, evaluator, size, crop)
    except Exception as exc:  # timm: no such layer, weights missing from the cache
        print(
            f"anomalib could not build Patchcore({args.backbone}, {args.layers},"
            f" pre_trained={args.pre_trained}): {str(exc).splitlines()[0][:300]} — with"
            " --pre-trained the weights must already be in HF_HOME's hub cache",
            file=sys.stderr,
        )
        return 2
    layers_found = list(model.model.feature_extractor.layers)
    if layers_found != list(args.layers):
        # TimmFeatureExtractor drops a layer name it cannot find, with only a warning.
        print(
            f"{args.backbone} has no layer(s) {sorted(set(args.layers) - set(layers_found))}"
            " in timm's feature_info — pass its module names (e.g. blocks.2 blocks.4)",
            file=sys.stderr,
        )
        return 2

    marks: dict[str, float] = {}
    raw: dict[str, list[torch.Tensor]] = {"score": [], "label": [], "map": [], "mask": []}
    paths: list[str] = []

    class Probe(Callback):
        """Timestamps, and the raw test outputs (trainer callbacks run before the model's)."""

        def on_train_epoch_start(self, trainer, pl_module):  # type: ignore[no-untyped-def]
            marks["train_start"] = time.perf_counter()

        def on_validation_epoch_start(self, trainer, pl_module):  # type: ignore[no-untyped-def]
            marks.setdefault("val_start", time.perf_counter())

        def on_validation_epoch_end(self, trainer, pl_module):  # type: ignore[no-untyped-def]
            marks["val_end"] = time.perf_counter()

        def on_test_batch_end(self, trainer, pl_module, outputs, batch, *rest):  # type: ignore[no-untyped-def]
            # the PostProcessor (a model callback, run after this one) sets pred_label
            marks["raw_before_postprocessor"] = float(batch.pred_label is None)
            raw["score"].append(batch.pred_score.detach().float().cpu().reshape(-1))
            paths.extend(str(Path(p).resolve()) for p in batch.image_path)
            raw["label"].append(batch.gt_label.detach().cpu().reshape(-1))
            n = len(batch.pred_score)
            amap = batch.anomaly_map.detach().float().cpu()
            raw["map"].append(amap.reshape(n, *amap.shape[-2:]))
            if batch.gt_mask is not None:
                mask = batch.gt_mask.detach().cpu()
                raw["mask"].append(mask.reshape(n, *mask.shape[-2:]))

    coreset_seconds = {}
    original_fit = model.fit

    def timed_fit() -> None:
        start = time.perf_counter()
        original_fit()
        coreset_seconds["value"] = time.perf_counter() - start
        marks["coreset_end"] = time.perf_counter()

    model.fit = timed_fit  # type: ignore[method-assign]

    workdir = Path(tempfile.mkdtemp(prefix="patchcore-run-"))
    engine = Engine(
        accelerator="cpu",
        devices=1,
        logger=False,
        default_root_dir=workdir,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[Probe()],
    )

    start = time.perf_counter()
    engine.fit(model=model, datamodule=datamodule)
    fit_seconds = time.perf_counter() - start
    start = time.perf_counter()
    results = engine.test(model=model, datamodule=datamodule, verbose=False)
    test_seconds = time.perf_counter() - start
    metrics = results[0] if results else {}
    shutil.rmtree(workdir, ignore_errors=True)

    out: dict[str, object] = {
        "tool": "anomalib.Patchcore",
        "category": args.category,
        "images": count_images(root, args.category),
        "image_size": args.image_size,
        "center_crop": args.center_crop,
        "backbone": args.backbone,
        "layers": list(args.layers),
        "pre_trained": bool(args.pre_trained),
        "coreset_ratio": args.coreset_ratio,
        "num_neighbors": args.num_neighbors,
        "seed": args.seed,
        "memory_bank": list(model.model.memory_bank.shape),
        "image_auroc": metrics.get("image_AUROC"),
        "pixel_auroc": metrics.get("pixel_AUROC"),
        "aupro": metrics.get("pixel_AUPRO"),
        "fit_seconds": round(fit_seconds, 3),
        # features of the train images + coreset, without the validation pass that
        # Engine.fit also runs (thresholds and min-max for the PostProcessor)
        "bank_seconds": round(
            marks.get("coreset_end", float("nan")) - marks.get("train_start", float("nan")), 3
        ),
        "coreset_seconds": round(coreset_seconds.get("value", float("nan")), 3),
        "val_seconds_in_fit": round(
            marks.get("val_end", float("nan")) - marks.get("val_start", float("nan")), 3
        ),
        "test_seconds": round(test_seconds, 3),
        "threads": torch.get_num_threads(),
        "network_attempts": len(NETWORK_ATTEMPTS),
    }
    if raw["score"]:
        scores = torch.cat(raw["score"]).numpy()
        labels = torch.cat(raw["label"]).numpy().astype(int)
        out["raw_image_auroc"] = float(roc_auc_score(labels, scores))
        out["raw_captured_before_postprocessor"] = bool(marks.get("raw_before_postprocessor"))
        out["raw_score_range"] = [float(scores.min()), float(scores.max())]
        if raw["mask"]:
            maps = torch.cat(raw["map"])
            masks = (torch.cat(raw["mask"]) > 0).int()
            out["raw_pixel_auroc"] = float(
                roc_auc_score(masks.numpy().reshape(-1), maps.numpy().reshape(-1))
            )
            metric = _AUPRO()  # anomalib's own AUPRO (fpr_limit 0.3), on the raw maps
            metric.update(maps, masks)
            out["raw_aupro"] = float(metric.compute())
    out["versions"] = {
        "anomalib": anomalib.__version__,
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "lightning": lightning.__version__,
        "torchmetrics": torchmetrics.__version__,
        "timm": timm.__version__,
        "python": sys.version.split()[0],
    }
    if args.save is not None and raw["score"]:
        base = (root / args.category).resolve()
        np.savez(
            args.save,
            paths=np.array([str(Path(p).relative_to(base)) for p in paths]),
            scores=torch.cat(raw["score"]).numpy(),
            maps=torch.cat(raw["map"]).numpy().astype(np.float32),
        )
    if NETWORK_ATTEMPTS:
        out["network_attempted"] = NETWORK_ATTEMPTS[:5]
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
