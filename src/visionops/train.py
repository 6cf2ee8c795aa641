"""The training engine: a prepared dataset in, a run folder (``runs/<name>/``) out.

Plain PyTorch: AdamW with a per-step linear warm-up and cosine decay, mixed precision on CUDA,
channels-last, gradient clipping and accumulation, an optional exponential moving average
of the weights, early stopping on the task's validation metric, and checkpoints written
atomically every epoch so ``--resume`` continues exactly where a run stopped. Images arrive
as uint8 batches from :class:`~visionops.data.loading.BatchLoader`; augmentation,
conversion and normalisation happen on the training device.

The run folder follows ``docs/artifacts.md`` ("Training run").

Examples:
    >>> result = train(load_settings(overrides=["train.epochs=2"]), Path("data/prepared/shapes"))
    >>> result.status, result.monitor
    ('completed', 'accuracy')
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import math
import os
import random
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchvision
from loguru import logger
from torch import nn

from visionops import __version__
from visionops._io import atomic_write_json, atomic_write_text
from visionops.augment import BatchAugment, build_augment
from visionops.config import Settings, settings_to_yaml
from visionops.data.loading import BatchLoader
from visionops.data.prepared import PreparedDataset, find_prepared, is_prepared
from visionops.device import DeviceChoice, resolve_device
from visionops.distributed import (
    DistContext,
    broadcast_flag,
    cleanup_distributed,
    init_distributed,
)
from visionops.errors import ArtifactError, ConfigError, TrainingError
from visionops.logs import log_to_file
from visionops.models import VisionModel, build_model, pretrained_normalization
from visionops.progress import NULL_PROGRESS, ProgressReporter
from visionops.runs import (
    CHECKPOINT_FORMAT,
    RUN_KIND,
    SCHEMA_VERSION,
    load_checkpoint,
    next_run_name,
    read_run_manifest,
    resolve_run,
    update_latest,
)
from visionops.tasks import TrainingTask, get_task
from visionops.tracking import SWEEP_METRIC, NullTracker, WandbTracker, start_tracking

__all__ = ["ModelEma", "TrainResult", "resolve_dataset", "train"]

_RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_PROGRESS_EVERY_S = 0.5
_PREDICTION_SAMPLES = 16
# Training images whose BatchNorm statistics are recomputed before each evaluation.
_BN_CALIBRATION_IMAGES = 256


@dataclass
class TrainResult:
    """What :func:`train` did.

    Attributes:
        run_dir: The run folder.
        name: The run name.
        status: ``completed`` or ``interrupted`` (failures raise instead).
        task: The task trained.
        monitor: Validation metric that picked the best checkpoint.
        mode: ``max`` or ``min``.
        best_metric: Its best value (None if no epoch finished).
        best_epoch: Epoch of the best checkpoint.
        epochs_completed: Epochs finished in total (including before a resume).
        epochs: Epochs asked for.
        stopped_early: Whether early stopping ended the run.
        metrics: The content of ``metrics.json`` (``val`` and, if present, ``test``).
        device: Device used (``cpu``, ``cuda:0`` ...).
        precision: ``fp32``, ``bf16 mixed`` or ``fp16 mixed``.
        seconds: Wall time of this invocation.
        images_per_s: Mean training throughput of this invocation (all processes).
        resumed_from: Epochs already done when this invocation started (0 for a new run).
        rank: This process's rank (only rank 0 wrote the run; others return a stub).
        resume_command: The command that continues an interrupted run.
    """

    run_dir: Path
    name: str
    status: str
    task: str
    monitor: str
    mode: str
    best_metric: float | None
    best_epoch: int | None
    epochs_completed: int
    epochs: int
    stopped_early: bool = False
    metrics: dict[str, Any] = field(default_factory=dict)
    device: str = "cpu"
    precision: str = "fp32"
    seconds: float = 0.0
    images_per_s: float = 0.0
    resumed_from: int = 0
    rank: int = 0
    resume_command: str | None = None


# --------------------------------------------------------------------------- dataset


def _shown(path: Path) -> str:
    """``path`` relative to the working folder when inside it (run.json stays portable)."""
    try:
        relative = os.path.relpath(path)
    except ValueError:  # another drive on Windows
        return str(path)
    return str(path) if relative.startswith("..") else relative


def _from_source(source: str, settings: Settings, progress: ProgressReporter) -> Path:
    from visionops.data.fetch import fetch_dataset
    from visionops.data.prepare import prepare_dataset

    fetched = fetch_dataset(source, settings, progress=progress)
    raw = fetched.path
    if settings.anomaly.category:  # one category of a multi-category MVTec AD download
        from visionops.anomaly.categories import select_category

        raw = select_category(raw, settings.anomaly.category)
    return prepare_dataset(raw, settings, progress=progress).path


def resolve_dataset(
    settings: Settings,
    dataset: str | Path | None = None,
    progress: ProgressReporter = NULL_PROGRESS,
) -> Path:
    """Find (or make) the prepared dataset to train on.

    Args:
        settings: Resolved settings.
        dataset: A prepared dataset folder, a name under ``data.prepared_root``, a raw
            dataset folder (prepared first), or a fetch source such as ``demo:multilabel``
            (fetched and prepared first). None: the ``data.source`` a project file, recipe
            or override set; else the newest prepared dataset; else ``demo:shapes``.
        progress: Receives the fetch and preprocess bars.

    Returns:
        The prepared dataset folder.

    Raises:
        DataError: The source cannot be fetched or prepared.
    """
    if dataset is None:
        if "source" in settings.data.model_fields_set:
            return _from_source(settings.data.source, settings, progress)
        found = find_prepared(settings)
        if found is not None:
            return found
        logger.info(
            "no dataset given and none prepared in {} — using the embedded {}",
            settings.data.prepared_root,
            settings.data.source,
        )
        return _from_source(settings.data.source, settings, progress)
    path = Path(dataset)
    if path.is_dir():
        if is_prepared(path):
            return path
        from visionops.data.prepare import prepare_dataset

        return prepare_dataset(path, settings, progress=progress).path
    named = settings.data.prepared_root / str(dataset)
    if len(path.parts) == 1 and is_prepared(named):
        return named
    return _from_source(str(dataset), settings, progress)


# --------------------------------------------------------------------------- pieces


class ModelEma:
    """Exponential moving average of a model's weights (and float buffers).

    The decay warms up as ``min(decay, (1 + n) / (10 + n))`` after ``n`` updates, so short
    runs are not dominated by the random initial weights.

    Args:
        model: The live model (unwrapped from DDP).
        decay: Final decay (``train.ema_decay``).
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.module = copy.deepcopy(model).eval()
        for parameter in self.module.parameters():
            parameter.requires_grad_(False)
        self.decay = decay
        self.updates = 0
        ema_state, live_state = self.module.state_dict(), model.state_dict()
        keys = list(ema_state)
        self._float_ema = [ema_state[k] for k in keys if ema_state[k].is_floating_point()]
        self._float_live = [live_state[k] for k in keys if live_state[k].is_floating_point()]
        self._other = [
            (ema_state[k], live_state[k]) for k in keys if not ema_state[k].is_floating_point()
        ]

    @torch.no_grad()
    def update(self) -> None:
        """Move the average one step towards the live weights."""
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        torch._foreach_lerp_(self._float_ema, self._float_live, 1 - decay)
        for ema_tensor, live_tensor in self._other:
            ema_tensor.copy_(live_tensor)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The averaged weights, with the same keys as the model's state dict."""
        return self.module.state_dict()

    def load_state_dict(self, state: Mapping[str, torch.Tensor], updates: int) -> None:
        """Restore averaged weights and the update count (from a checkpoint)."""
        self.module.load_state_dict(state)
        self.updates = updates


def warmup_cosine(total_steps: int, warmup_steps: int) -> Callable[[int], float]:
    """LR factor for step ``s``: linear warm-up to 1, then cosine decay to 0 (per step)."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: no weight decay on biases and normalisation weights (1-D tensors)."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for parameter in model.parameters():
        if parameter.requires_grad:
            (decay if parameter.ndim > 1 else no_decay).append(parameter)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def _normalisation(settings: Settings, dataset: PreparedDataset) -> tuple[list[float], list[float]]:
    if settings.model.pretrained:
        mean, std = pretrained_normalization(settings.model.name)
        if dataset.channels == 1:
            # The first convolution sums the RGB weights: feed it a grey level normalised
            # like the average channel.
            return [float(np.mean(mean))], [float(np.mean(std))]
        return list(mean), list(std)
    return dataset.mean, dataset.std


class _Normaliser:
    """uint8 ``(B, C, H, W)`` → normalised float, in one multiply-add on the device."""

    def __init__(
        self, mean: list[float], std: list[float], device: torch.device, channels_last: bool
    ) -> None:
        mean_t = torch.tensor(mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        std_t = torch.tensor(std, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        self.scale = 1.0 / (255.0 * std_t)
        self.shift = mean_t / std_t
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        pixels = images.to(dtype=torch.float32, memory_format=self.memory_format)
        return pixels.mul_(self.scale).sub_(self.shift)


def _rng_state() -> dict[str, Any]:
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []
    return {"torch": torch.get_rng_state(), "cuda": list(cuda)}


def _set_rng_state(state: Mapping[str, Any]) -> None:
    if isinstance(state.get("torch"), torch.Tensor):
        torch.set_rng_state(state["torch"].cpu())
    cuda = state.get("cuda") or []
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in cuda])


def _seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        # cuBLAS needs this before its first call to be deterministic.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    else:
        torch.backends.cudnn.benchmark = True


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


# --------------------------------------------------------------------------- the engine


@dataclass
class _Epoch:
    loss: float
    images: int
    seconds: float


class _Engine:
    """The state of one training invocation (model, optimiser, loaders, run folder)."""

    def __init__(
        self,
        settings: Settings,
        dataset: PreparedDataset,
        task: TrainingTask,
        choice: DeviceChoice,
        context: DistContext,
    ) -> None:
        self.settings = settings
        self.dataset = dataset
        self.task = task
        self.choice = choice
        self.device = choice.device
        self.context = context
        cfg = settings.train
        self.amp_dtype = choice.amp_dtype

        model = build_model(
            settings.model.name,
            num_outputs=task.num_outputs,
            channels=dataset.channels,
            pretrained=settings.model.pretrained,
            dropout=settings.model.dropout,
        )
        if settings.model.freeze_backbone:
            for parameter in model.backbone.parameters():
                parameter.requires_grad_(False)
        model = model.to(self.device)
        if cfg.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model: VisionModel = model
        self.network: nn.Module = model
        if context.enabled:
            self.network = nn.parallel.DistributedDataParallel(
                model, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )
        mean, std = _normalisation(settings, dataset)
        self.normalization = {"mean": mean, "std": std}
        self.normalise = _Normaliser(mean, std, self.device, cfg.channels_last)
        self.augment: BatchAugment | None = build_augment(cfg.augment)

        n_train = len(dataset.indices("train"))
        per_rank = math.ceil(n_train / context.world_size)
        if per_rank < cfg.batch_size:
            smaller = max(1, 2 ** int(math.log2(max(per_rank // 2, 1))))
            raise TrainingError(
                f"only {n_train} training images"
                + (f" ({per_rank} per process)" if context.enabled else "")
                + f" — fewer than one batch of train.batch_size={cfg.batch_size}; lower it,"
                f" e.g. --batch-size {smaller}"
            )
        pin = self.device.type == "cuda"
        self.train_loader = BatchLoader(
            dataset,
            "train",
            cfg.batch_size,
            shuffle=True,
            seed=cfg.seed,
            drop_last=True,
            rank=context.rank,
            world_size=context.world_size,
            pin_memory=pin,
        )
        self.val_split = "val" if len(dataset.indices("val")) else "train"
        if self.val_split == "train":
            logger.warning(
                "{} has no validation split: the best checkpoint is picked on training data"
                " — preprocess with data.val_ratio above 0 for an honest choice",
                dataset.path,
            )
        self.eval_batch = max(cfg.batch_size, 128)
        self.steps_per_epoch = math.ceil(len(self.train_loader) / cfg.accumulate)
        # The fused kernel is several times faster than the per-tensor loop, on CPUs too
        # (AdamW is ~15 % of a ResNet-18 step at 64 px on a CPU without it).
        self.optimizer = torch.optim.AdamW(
            _param_groups(model, cfg.weight_decay),
            lr=cfg.lr,
            fused=True if self.device.type in ("cpu", "cuda") else None,
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self.schedule())
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=choice.grad_scaler)
        self.ema = ModelEma(model, cfg.ema_decay) if cfg.ema else None
        self.trainable = [p for p in model.parameters() if p.requires_grad]

    # ------------------------------------------------------------------ state

    def eval_model(self) -> nn.Module:
        """The weights that are evaluated and saved as best: EMA when enabled."""
        return self.ema.module if self.ema is not None else self.model

    def state(self, epoch: int, best_metric: float | None, run: dict[str, Any]) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "schema_version": SCHEMA_VERSION,
            "epoch": epoch,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None,
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "rng": _rng_state(),
            "best_metric": best_metric if best_metric is not None else float("nan"),
            "run": run,
        }

    def load_state(self, checkpoint: Mapping[str, Any], path: Path) -> None:
        try:
            self.model.load_state_dict(checkpoint["model"])
            self.optimizer.load_state_dict(checkpoint["optimizer"])
            self.scheduler.load_state_dict(checkpoint["scheduler"])
            if checkpoint.get("scaler") and self.scaler.is_enabled():
                self.scaler.load_state_dict(checkpoint["scaler"])
            if self.ema is not None:
                self.ema.load_state_dict(
                    checkpoint.get("ema") or checkpoint["model"], self.scheduler.last_epoch
                )
        except (KeyError, RuntimeError, ValueError) as exc:
            first = str(exc).strip().splitlines()[0][:120] if str(exc).strip() else ""
            raise ArtifactError(
                f"{path} does not fit this model and optimiser ({type(exc).__name__}: {first})"
                " — resume with the run's own settings, or start a new run"
            ) from None
        # A changed --epochs stretches the cosine schedule and a changed --lr rescales it,
        # from here on; unchanged settings continue exactly.
        schedule = self.schedule()
        lr = self.settings.train.lr
        self.scheduler.lr_lambdas = [schedule] * len(self.optimizer.param_groups)
        self.scheduler.base_lrs = [lr] * len(self.optimizer.param_groups)
        for group in self.optimizer.param_groups:
            group["initial_lr"] = lr
            group["lr"] = lr * schedule(self.scheduler.last_epoch)

    def schedule(self) -> Callable[[int], float]:
        """The LR factor per optimiser step for ``train.epochs`` epochs."""
        total = self.settings.train.epochs * self.steps_per_epoch
        warmup = min(round(self.settings.train.warmup_epochs * self.steps_per_epoch), total - 1)
        return warmup_cosine(total, max(warmup, 0))

    # ------------------------------------------------------------------ loops

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def train_epoch(self, epoch: int, total_epochs: int, progress: ProgressReporter) -> _Epoch:
        cfg = self.settings.train
        loader = self.train_loader
        loader.set_epoch(epoch)
        self.network.train()
        if self.settings.model.freeze_backbone:
            self.model.backbone.eval()  # frozen BatchNorm keeps its statistics
        steps = len(loader)
        bar = progress.start(f"epoch {epoch}/{total_epochs}", total=steps)
        loss_sum = torch.zeros((), device=self.device)
        seen = 0
        started = last_report = time.perf_counter()
        try:
            for step, (images, targets) in enumerate(loader):
                images = images.to(self.device, non_blocking=True)
                targets = targets.to(self.device, non_blocking=True)
                if self.augment is not None:
                    images = self.augment(images)
                inputs = self.normalise(images)
                encoded = self.task.encode_targets(targets)
                boundary = (step + 1) % cfg.accumulate == 0 or step + 1 == steps
                sync = (
                    self.network.no_sync()  # type: ignore[operator]
                    if self.context.enabled and not boundary
                    else contextlib.nullcontext()
                )
                with sync:
                    with self.autocast():
                        outputs, _ = self.network(inputs)
                        loss = self.task.loss(outputs, encoded)
                    scaled: torch.Tensor = self.scaler.scale(loss / cfg.accumulate)
                    torch.autograd.backward(scaled)
                if boundary:
                    if cfg.grad_clip is not None:
                        self.scaler.unscale_(self.optimizer)
                        nn.utils.clip_grad_norm_(self.trainable, cfg.grad_clip)
                    self.scaler.step(self.optimizer)
                    self.scaler.update()
                    self.optimizer.zero_grad(set_to_none=True)
                    self.scheduler.step()
                    if self.ema is not None:
                        self.ema.update()
                loss_sum += loss.detach() * len(images)
                seen += len(images)
                now = time.perf_counter()
                if now - last_report >= _PROGRESS_EVERY_S or step + 1 == steps:
                    # The only host sync of the loop, twice a second at most.
                    mean_loss = float(loss_sum) / seen
                    self.check_finite(mean_loss, epoch, step + 1)
                    bar.advance(1, loss=mean_loss, img_s=seen / (now - started))
                    last_report = now
                else:
                    bar.advance(1)
        finally:
            bar.close()
        seconds = time.perf_counter() - started
        return _Epoch(loss=float(loss_sum) / max(seen, 1), images=seen, seconds=seconds)

    def check_finite(self, loss: float, epoch: int, step: int, which: str = "training") -> None:
        """Raise a :class:`TrainingError` if ``loss`` is NaN or infinite."""
        if not math.isfinite(loss):
            raise TrainingError(
                f"the {which} loss became {loss} at epoch {epoch}, step {step} — lower"
                f" train.lr (now {self.settings.train.lr:g}) or keep train.grad_clip set;"
                " the last good checkpoint is kept"
            )

    @torch.no_grad()
    def recalibrate_batchnorm(self, model: nn.Module) -> None:
        """Recompute BatchNorm running statistics of ``model`` on training images.

        Running averages lag far behind fast-changing weights in short runs (and
        MobileNet/MNASNet use momenta of 0.01 and less), which makes evaluation-mode
        predictions meaningless for many epochs. As pycls' "precise BN" and
        ``torch.optim.swa_utils.update_bn`` do, the statistics are reset and averaged over
        a fixed sample of un-augmented training batches; dropout stays off, so the random
        stream (and an exact ``--resume``) is unaffected.
        """
        norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        if not norms or self.settings.model.freeze_backbone:
            return
        loader = BatchLoader(
            self.dataset,
            "train",
            self.settings.train.batch_size,
            shuffle=True,
            seed=self.settings.train.seed,
            drop_last=True,
            prefetch=False,
        )
        momenta = [norm.momentum for norm in norms]
        model.eval()
        for norm in norms:
            norm.reset_running_stats()
            norm.momentum = None  # cumulative average over the calibration batches
            norm.train()
        seen = 0
        try:
            for images, _ in loader:
                with self.autocast():
                    model(self.normalise(images.to(self.device, non_blocking=True)))
                seen += len(images)
                if seen >= _BN_CALIBRATION_IMAGES:
                    break
        finally:
            for norm, momentum in zip(norms, momenta, strict=True):
                norm.momentum = momentum
            model.eval()

    @torch.inference_mode()
    def predict(
        self, split: str, model: nn.Module | None = None
    ) -> tuple[torch.Tensor, np.ndarray[Any, Any], float]:
        """Raw outputs ``(N, K)`` (CPU, fp32), targets as stored, and mean loss of a split."""
        network = model if model is not None else self.eval_model()
        network.eval()
        loader = BatchLoader(self.dataset, split, self.eval_batch, shuffle=False)
        outputs: list[torch.Tensor] = []
        targets: list[torch.Tensor] = []
        loss_sum = torch.zeros((), device=self.device)
        for images, batch_targets in loader:
            images = images.to(self.device, non_blocking=True)
            device_targets = batch_targets.to(self.device, non_blocking=True)
            with self.autocast():
                raw, _ = network(self.normalise(images))
            raw = raw.float()
            loss_sum += self.task.loss(raw, self.task.encode_targets(device_targets)) * len(raw)
            outputs.append(raw)
            targets.append(batch_targets)
        count = sum(len(o) for o in outputs)
        if not count:
            return torch.zeros(0, self.task.num_outputs), np.zeros(0), float("nan")
        return (
            torch.cat(outputs).cpu(),
            torch.cat(targets).numpy(),
            float(loss_sum) / count,
        )

    def evaluate(self, split: str, model: nn.Module | None = None) -> dict[str, float]:
        """Loss and task metrics of a split."""
        outputs, targets, loss = self.predict(split, model)
        predictions = self.task.postprocess(outputs).numpy()
        return {"loss": loss, **self.task.metrics(predictions, targets)}


# --------------------------------------------------------------------------- run folder


class _RunFolder:
    """Writes one run folder (rank 0 only); creates it, and removes it if no epoch finished."""

    def __init__(self, run_dir: Path, manifest: dict[str, Any], replaced: Path | None) -> None:
        self.path = run_dir
        self.manifest = manifest
        self.replaced = replaced
        self.history: list[dict[str, Any]] = []
        self.checkpoints = run_dir / "checkpoints"
        self.trusted = False
        self.previous_status: str | None = None  # of a resumed run

    def write_manifest(self) -> None:
        atomic_write_json(self.path / "run.json", self.manifest)

    def write_history(self) -> None:
        text = "".join(json.dumps(row) + "\n" for row in self.history)
        atomic_write_text(self.path / "history.jsonl", text)

    def first_epoch_done(self, runs_root: Path) -> None:
        if self.trusted:
            return
        self.trusted = True
        update_latest(runs_root, self.path)
        if self.replaced is not None:
            shutil.rmtree(self.replaced, ignore_errors=True)
            self.replaced = None

    def abandon(self, runs_root: Path) -> None:
        """Remove a run that never finished an epoch (restoring what ``--exist-ok`` replaced)."""
        shutil.rmtree(self.path, ignore_errors=True)
        if self.replaced is not None:
            os.replace(self.replaced, self.path)


def _create_run_dir(runs_root: Path, name: str | None, exist_ok: bool) -> tuple[Path, Path | None]:
    if name is not None and (not _RUN_NAME.match(name) or name == "latest"):
        raise ConfigError(
            f"--name {name!r} is not a usable run name — use letters, digits, '.', '_' and"
            " '-' (and not 'latest')"
        )
    runs_root.mkdir(parents=True, exist_ok=True)
    run_name = name or next_run_name(runs_root)
    run_dir = runs_root / run_name
    replaced: Path | None = None
    if run_dir.exists() or run_dir.is_symlink():
        if not exist_ok:
            raise ConfigError(
                f"{run_dir} already exists — pass --exist-ok to replace it, choose another"
                " --name, or continue it with --resume"
            )
        # Kept aside until the new run finishes an epoch, then deleted.
        replaced = runs_root / f".{run_name}.replaced-{os.getpid()}"
        os.replace(run_dir, replaced)
    run_dir.mkdir(parents=True)
    (run_dir / "checkpoints").mkdir()
    return run_dir, replaced


def _versions() -> dict[str, str]:
    return {
        "visionops": __version__,
        "torch": str(torch.__version__).split("+")[0],
        "torchvision": str(torchvision.__version__).split("+")[0],
    }


def _run_manifest(
    name: str,
    settings: Settings,
    dataset: PreparedDataset,
    task: TrainingTask,
    model: VisionModel,
    normalization: dict[str, list[float]],
    config_hash: str,
    choice: DeviceChoice,
    context: DistContext,
) -> dict[str, Any]:
    manifest = dataset.manifest
    return {
        "schema_version": SCHEMA_VERSION,
        "kind": RUN_KIND,
        "name": name,
        "status": "running",
        "task": task.name,
        "dataset": {
            "path": _shown(dataset.path),
            "name": dataset.name,
            "fingerprint": dataset.fingerprint,
        },
        "model": {
            "name": settings.model.name,
            "num_outputs": task.num_outputs,
            "channels": dataset.channels,
            "image_size": dataset.image_size,
            "feature_dim": model.feature_dim,
            "dropout": settings.model.dropout,
            "pretrained": settings.model.pretrained,
            "freeze_backbone": settings.model.freeze_backbone,
        },
        "normalization": normalization,
        "resize": dataset.resize,
        "class_names": manifest.get("class_names"),
        "target_names": manifest.get("target_names"),
        "target_units": manifest.get("target_units"),
        "target_mean": manifest.get("target_mean"),
        "target_std": manifest.get("target_std"),
        **task.run_fields(),
        "monitor": {"metric": task.monitor, "mode": task.mode},
        "best_epoch": None,
        "best_metric": None,
        "epochs_completed": 0,
        "epochs": settings.train.epochs,
        "config_hash": config_hash,
        "created_at": _now(),
        "finished_at": None,
        "device": {
            "type": str(choice.device),
            "precision": choice.precision,
            "world_size": context.world_size,
        },
        "tracking": None,
        "versions": _versions(),
    }


def _check_resume(
    run_manifest: Mapping[str, Any],
    checkpoint: Mapping[str, Any],
    settings: Settings,
    dataset: PreparedDataset,
    task: TrainingTask,
    run_dir: Path,
) -> None:
    """Refuse to resume with a different dataset, task or network."""
    recorded = run_manifest.get("dataset") or {}
    if recorded.get("fingerprint") != dataset.fingerprint:
        raise ConfigError(
            f"{dataset.path} is not the dataset {run_dir} was trained on (fingerprint"
            " differs) — resume on the run's own dataset, or start a new run"
        )
    spec = run_manifest.get("model") or {}
    wanted = {
        "name": settings.model.name,
        "num_outputs": task.num_outputs,
        "channels": dataset.channels,
    }
    for key, value in wanted.items():
        if spec.get(key) != value:
            raise ConfigError(
                f"{run_dir} was trained with model.{key}={spec.get(key)!r}, not {value!r}"
                " — drop that override to resume, or start a new run"
            )
    done = int(checkpoint.get("epoch", 0))
    if settings.train.epochs <= done:
        raise TrainingError(
            f"{run_dir} has already trained {done} of {settings.train.epochs} epochs — pass"
            f" --epochs {done + max(done // 2, 1)} (more than {done}) to train it further"
        )


def _sample_captions(
    task: TrainingTask, predictions: np.ndarray[Any, Any], targets: np.ndarray[Any, Any]
) -> list[str]:
    captions = []
    names = getattr(task, "class_names", None) or getattr(task, "target_names", [])
    for prediction, target in zip(predictions, targets, strict=True):
        if task.name == "classification":
            guess = int(prediction.argmax())
            captions.append(
                f"pred {names[guess]} ({prediction[guess]:.2f}) · true {names[int(target)]}"
            )
        elif task.name == "multilabel":
            cut = getattr(task, "thresholds", [0.5] * len(names))
            guessed = [n for n, p, c in zip(names, prediction, cut, strict=True) if p >= c]
            truth = [n for n, t in zip(names, target, strict=True) if t > 0.5]
            captions.append(f"pred {', '.join(guessed) or '-'} · true {', '.join(truth) or '-'}")
        else:
            pairs = zip(names, prediction, target, strict=True)
            captions.append(" · ".join(f"{n} {p:.3g}/{t:.3g}" for n, p, t in pairs))
    return captions


# --------------------------------------------------------------------------- train


def train(
    settings: Settings,
    dataset: str | Path | None = None,
    *,
    name: str | None = None,
    exist_ok: bool = False,
    resume: str | Path | None = None,
    progress: ProgressReporter = NULL_PROGRESS,
) -> TrainResult:
    """Train a model and write a run folder.

    Args:
        settings: Resolved settings. To resume, pass the run's ``config.yaml`` resolved with
            any changes (``--epochs`` may grow); the network and dataset must not change.
        dataset: See :func:`resolve_dataset`; with ``resume``, default is the run's dataset.
        name: Run folder name under ``settings.runs_root`` (default: ``run-NNN``).
        exist_ok: Replace an existing run folder of that name.
        resume: A run folder or name whose ``checkpoints/last.pt`` to continue.
        progress: Receives one bar per epoch (``loss``, ``img_s`` fields).

    Returns:
        The run's outcome; ``status`` is ``interrupted`` after Ctrl-C (``last.pt`` holds
        the last finished epoch and ``resume_command`` continues it).

    Raises:
        ConfigError: Unknown model, task mismatch, run name taken, incompatible resume.
        DeviceError: The requested device does not exist.
        ArtifactError: Corrupt or foreign checkpoint or run folder to resume.
        DataError: The dataset cannot be found, fetched or prepared.
        TrainingError: Too few images for a batch, or the loss diverged (NaN/inf).
        TrackingError: W&B was asked for and cannot start.
    """
    started = time.perf_counter()
    choice = resolve_device(settings.device, amp=settings.train.amp)
    context = init_distributed(choice.device)
    if context.enabled and choice.device.type == "cuda":
        choice = DeviceChoice(
            device=torch.device("cuda", context.local_rank),
            reason=f"rank {context.rank} of {context.world_size}",
            amp_dtype=choice.amp_dtype,
            grad_scaler=choice.grad_scaler,
        )
    try:
        return _train(settings, dataset, name, exist_ok, resume, progress, choice, context, started)
    finally:
        cleanup_distributed()


def _train(
    settings: Settings,
    dataset_arg: str | Path | None,
    name: str | None,
    exist_ok: bool,
    resume: str | Path | None,
    progress: ProgressReporter,
    choice: DeviceChoice,
    context: DistContext,
    started: float,
) -> TrainResult:
    runs_root = settings.runs_root
    resume_dir: Path | None = None
    run_manifest: dict[str, Any] | None = None
    checkpoint: dict[str, Any] | None = None
    if resume is not None:
        resume_dir = resolve_run(resume, runs_root)
        run_manifest = read_run_manifest(resume_dir)
        if run_manifest.get("task") != "anomaly":  # one pass: no checkpoint to continue from
            checkpoint = load_checkpoint(resume_dir / "checkpoints" / "last.pt")
        if dataset_arg is None:
            dataset_arg = (run_manifest.get("dataset") or {}).get("path")

    # Fetching and preparing happen once, on rank 0, while the other ranks wait.
    if context.enabled and not context.is_main:
        torch.distributed.barrier()
    dataset_path = resolve_dataset(
        settings, dataset_arg, progress if context.is_main else NULL_PROGRESS
    )
    if context.enabled and context.is_main:
        torch.distributed.barrier()
    dataset = PreparedDataset.open(dataset_path)
    if settings.data.task is not None and settings.data.task != dataset.task:
        raise ConfigError(
            f"{dataset.path} is a {dataset.task} dataset but data.task is"
            f" {settings.data.task} — drop --task/data.task, or prepare a"
            f" {settings.data.task} dataset (`visionops data preprocess RAW"
            f" data.task={settings.data.task}`)"
        )
    if dataset.task == "anomaly":
        from visionops.anomaly.fit import fit_anomaly

        return fit_anomaly(
            settings,
            dataset,
            name=name,
            exist_ok=exist_ok,
            resume_dir=resume_dir,
            device=choice.device,
            device_reason=choice.reason,
            progress=progress,
        )
    task = get_task(dataset.task).from_manifest(
        dataset.manifest, label_smoothing=settings.train.label_smoothing
    )
    if checkpoint is not None and run_manifest is not None and resume_dir is not None:
        _check_resume(run_manifest, checkpoint, settings, dataset, task, resume_dir)

    _seed_everything(settings.train.seed, settings.train.deterministic)
    engine = _Engine(settings, dataset, task, choice, context)
    logger.info(
        "training {} on {} ({} {}, {} train / {} val images) — {}: {}, {}{}",
        settings.model.name,
        dataset.name,
        task.name,
        f"{dataset.image_size}px",
        len(dataset.indices("train")),
        len(dataset.indices("val")),
        choice.device,
        choice.reason,
        choice.precision,
        f", {context.world_size} processes" if context.enabled else "",
    )
    first_epoch = 1
    if checkpoint is not None and resume_dir is not None:
        engine.load_state(checkpoint, resume_dir / "checkpoints" / "last.pt")
        first_epoch = int(checkpoint["epoch"]) + 1
    # After building (which draws initial weights): the stream every rank's epochs use.
    if checkpoint is not None:
        _set_rng_state(checkpoint.get("rng") or {})
    elif context.rank:
        torch.manual_seed(settings.train.seed + context.rank)

    config_text = settings_to_yaml(settings)
    config_hash = hashlib.sha256(config_text.encode("utf-8")).hexdigest()
    if not context.is_main:
        return _follow(engine, first_epoch, context, settings, task, choice, started)

    # ---- rank 0: the run folder
    if resume_dir is not None and run_manifest is not None and checkpoint is not None:
        run_dir = resume_dir
        manifest = dict(run_manifest)
        previous_status = str(manifest.get("status"))
        manifest.update(
            status="running",
            epochs=settings.train.epochs,
            config_hash=config_hash,
            finished_at=None,
            versions=_versions(),
        )
        folder = _RunFolder(run_dir, manifest, None)
        folder.trusted = True
        folder.previous_status = previous_status
        history_path = run_dir / "history.jsonl"
        if history_path.is_file():
            rows = [
                json.loads(line)
                for line in history_path.read_text("utf-8").splitlines()
                if line.strip()
            ]
            folder.history = [row for row in rows if int(row.get("epoch", 0)) < first_epoch]
        logger.info("resuming {} after epoch {}", run_dir, first_epoch - 1)
    else:
        run_dir, replaced = _create_run_dir(runs_root, name, exist_ok)
        manifest = _run_manifest(
            run_dir.name,
            settings,
            dataset,
            task,
            engine.model,
            engine.normalization,
            config_hash,
            choice,
            context,
        )
        folder = _RunFolder(run_dir, manifest, replaced)
    try:
        with log_to_file(run_dir / "train.log"):
            atomic_write_text(run_dir / "config.yaml", config_text)
            folder.write_manifest()
            return _lead(
                engine,
                folder,
                first_epoch,
                settings,
                task,
                choice,
                context,
                started,
                resumed=checkpoint is not None,
                progress=progress,
            )
    except BaseException:
        if not folder.trusted:
            folder.abandon(runs_root)
        raise


def _follow(
    engine: _Engine,
    first_epoch: int,
    context: DistContext,
    settings: Settings,
    task: TrainingTask,
    choice: DeviceChoice,
    started: float,
) -> TrainResult:
    """Ranks other than 0: train in step with rank 0, write nothing."""
    epochs = settings.train.epochs
    epoch = first_epoch - 1
    for epoch in range(first_epoch, epochs + 1):
        engine.train_epoch(epoch, epochs, NULL_PROGRESS)
        if broadcast_flag(False, context, engine.device):
            break
    return TrainResult(
        run_dir=Path(),
        name="",
        status="completed",
        task=task.name,
        monitor=task.monitor,
        mode=task.mode,
        best_metric=None,
        best_epoch=None,
        epochs_completed=epoch,
        epochs=epochs,
        device=str(choice.device),
        precision=choice.precision,
        seconds=time.perf_counter() - started,
        rank=context.rank,
    )


def _lead(
    engine: _Engine,
    folder: _RunFolder,
    first_epoch: int,
    settings: Settings,
    task: TrainingTask,
    choice: DeviceChoice,
    context: DistContext,
    started: float,
    resumed: bool,
    progress: ProgressReporter,
) -> TrainResult:
    """Rank 0: train, validate, checkpoint, log; then score the best checkpoint."""
    cfg = settings.train
    manifest = folder.manifest
    best = _finite(manifest.get("best_metric"))
    best_epoch: int | None = manifest.get("best_epoch")
    epochs_done = first_epoch - 1
    images_trained = 0
    train_seconds = 0.0
    stopped_early = False
    metrics: dict[str, Any] = {}
    status = "failed"
    trained = False
    tracker: NullTracker | WandbTracker = NullTracker()
    try:
        tracker = _start_tracker(settings, folder, task)
        for epoch in range(first_epoch, cfg.epochs + 1):
            trained = True
            result = engine.train_epoch(epoch, cfg.epochs, progress)
            engine.check_finite(result.loss, epoch, len(engine.train_loader))
            images_trained += result.images * context.world_size
            train_seconds += result.seconds
            phase_started = time.perf_counter()
            engine.recalibrate_batchnorm(engine.eval_model())
            calibrated = time.perf_counter()
            val = engine.evaluate(engine.val_split)
            validated = time.perf_counter()
            engine.check_finite(val["loss"], epoch, len(engine.train_loader), "validation")
            value = val.get(task.monitor, float("nan"))
            improved = task.better(value, best)
            if improved:
                best, best_epoch = value, epoch
            epochs_done = epoch
            row = {
                "epoch": epoch,
                "train_loss": result.loss,
                "val_loss": val["loss"],
                **{f"val_{key}": v for key, v in val.items() if key != "loss"},
                "lr": engine.optimizer.param_groups[0]["lr"],
                "seconds": round(result.seconds, 3),
                "images_per_s": round(result.images * context.world_size / result.seconds, 1),
            }
            folder.history.append(row)
            folder.write_history()
            manifest.update(best_epoch=best_epoch, best_metric=best, epochs_completed=epoch)
            _save_checkpoints(engine, folder, epoch, best, improved)
            folder.write_manifest()
            folder.first_epoch_done(settings.runs_root)
            logger.debug(
                "epoch {} time: train {:.2f} s, BatchNorm calibration {:.2f} s, validation"
                " {:.2f} s, checkpoint and records {:.2f} s",
                epoch,
                result.seconds,
                calibrated - phase_started,
                validated - calibrated,
                time.perf_counter() - validated,
            )
            logger.info(
                "epoch {}/{}  train loss {:.4f}  val loss {:.4f}  {} {:.4f}{}  {:.1f} s"
                "  {:.0f} img/s",
                epoch,
                cfg.epochs,
                result.loss,
                val["loss"],
                task.monitor,
                value,
                "  (best)" if improved else "",
                result.seconds,
                row["images_per_s"],
            )
            tracker.log_epoch(
                epoch,
                {
                    "train/loss": result.loss,
                    **{f"val/{key}": v for key, v in val.items()},
                    "lr": row["lr"],
                    "images_per_s": row["images_per_s"],
                    SWEEP_METRIC: best if best is not None else float("nan"),
                },
            )
            stop = (
                cfg.patience is not None
                and best_epoch is not None
                and epoch - best_epoch >= cfg.patience
                and epoch < cfg.epochs
            )
            if broadcast_flag(stop, context, engine.device):
                stopped_early = True
                logger.info(
                    "early stopping: {} has not improved for {} epochs (best {:.4f} at epoch {})",
                    task.monitor,
                    cfg.patience,
                    best,
                    best_epoch,
                )
                break
        metrics = _final_metrics(engine, folder, task, tracker, best_epoch)
        status = "completed"
    except KeyboardInterrupt:
        status = "interrupted"
        if not folder.trusted:
            raise
        logger.warning(
            "interrupted — {} holds epoch {}", folder.checkpoints / "last.pt", epochs_done
        )
    finally:
        if folder.trusted:
            if status == "failed" and not trained and folder.previous_status:
                # A resume that failed before training anything leaves the run as it was.
                status = folder.previous_status
            manifest.update(status=status, finished_at=_now())
            folder.write_manifest()
            _plot(folder, task, best_epoch)
        tracker.finish(status)
    return TrainResult(
        run_dir=folder.path,
        name=folder.path.name,
        status=status,
        task=task.name,
        monitor=task.monitor,
        mode=task.mode,
        best_metric=best,
        best_epoch=best_epoch,
        epochs_completed=epochs_done,
        epochs=cfg.epochs,
        stopped_early=stopped_early,
        metrics=metrics,
        device=str(choice.device),
        precision=choice.precision,
        seconds=time.perf_counter() - started,
        images_per_s=images_trained / train_seconds if train_seconds else 0.0,
        resumed_from=first_epoch - 1 if resumed else 0,
        resume_command=(
            f"visionops train --resume {_shown(folder.path)}" if status == "interrupted" else None
        ),
    )


def _start_tracker(
    settings: Settings, folder: _RunFolder, task: TrainingTask
) -> NullTracker | WandbTracker:
    """W&B for this run (continuing the W&B run of an earlier attempt on resume)."""
    manifest = folder.manifest
    tracking = manifest.get("tracking") or {}
    tracker = start_tracking(
        settings.tracking,
        run_dir=folder.path,
        run_name=folder.path.name,
        config=settings.model_dump(mode="json"),
        run_id=tracking.get("id"),
        tags=[task.name, settings.model.name],
    )
    if isinstance(tracker, WandbTracker):
        manifest["tracking"] = {
            "mode": settings.tracking.mode,
            "project": settings.tracking.project,
            "id": tracker.run_id,
            "url": tracker.url,
        }
    return tracker


def _save_atomic(state: Mapping[str, Any], path: Path) -> None:
    """``torch.save`` to a temporary file next to ``path``, flushed, then renamed over it."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(dict(state), handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _save_checkpoints(
    engine: _Engine, folder: _RunFolder, epoch: int, best: float | None, improved: bool
) -> None:
    """``last.pt`` every epoch; ``best.pt`` when the monitored metric improved.

    ``best.pt`` becomes a hard link to the new ``last.pt`` (no second copy of the optimiser
    state); the next epoch's ``last.pt`` replaces its own name only, so ``best.pt`` keeps
    the old file. Where hard links are not allowed, the file is copied.
    """
    last, best_path = folder.checkpoints / "last.pt", folder.checkpoints / "best.pt"
    _save_atomic(engine.state(epoch, best, folder.manifest), last)
    if improved or not best_path.is_file():
        tmp = best_path.with_name(f".best.pt.{os.getpid()}.tmp")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        try:
            os.link(last, tmp)
        except OSError:
            shutil.copyfile(last, tmp)
        os.replace(tmp, best_path)


def _final_metrics(
    engine: _Engine,
    folder: _RunFolder,
    task: TrainingTask,
    tracker: NullTracker | WandbTracker,
    best_epoch: int | None,
) -> dict[str, Any]:
    """Score the best checkpoint on val (tuning multilabel thresholds) and test."""
    best_path = folder.checkpoints / "best.pt"
    checkpoint = load_checkpoint(best_path, map_location=str(engine.device))
    scoring = copy.deepcopy(engine.model)
    scoring.load_state_dict(checkpoint.get("ema") or checkpoint["model"])
    results: dict[str, Any] = {}
    val_predictions: np.ndarray[Any, Any] | None = None
    val_targets: np.ndarray[Any, Any] | None = None
    for split in (engine.val_split, "test"):
        if split == "test" and not len(engine.dataset.indices("test")):
            continue
        outputs, targets, loss = engine.predict(split, scoring)
        predictions = task.postprocess(outputs).numpy()
        if split == engine.val_split:
            task.fit_postprocessing(predictions, targets)
            val_predictions, val_targets = predictions, targets
        results["val" if split == engine.val_split else "test"] = {
            "loss": loss,
            **task.metrics(predictions, targets),
        }
    folder.manifest.update(task.run_fields())
    payload = {
        "run": folder.path.name,
        "task": task.name,
        "checkpoint": "best",
        "best_epoch": best_epoch,
        "monitor": {"metric": task.monitor, "mode": task.mode},
        **({"val_split": engine.val_split} if engine.val_split != "val" else {}),
        **results,
        **task.run_fields(),
    }
    atomic_write_json(folder.path / "metrics.json", payload)
    if tracker.enabled and val_predictions is not None and val_targets is not None:
        tracker.log_summary(
            {
                f"{split}/{key}": value
                for split in ("val", "test")
                for key, value in results.get(split, {}).items()
            }
        )
        indices = engine.dataset.indices(engine.val_split)[:_PREDICTION_SAMPLES]
        tracker.log_predictions(
            np.asarray(engine.dataset.images[indices]),
            _sample_captions(task, val_predictions[: len(indices)], val_targets[: len(indices)]),
        )
        if task.name == "classification":
            tracker.log_confusion_matrix(
                [int(t) for t in val_targets],
                [int(p) for p in val_predictions.argmax(axis=1)],
                getattr(task, "class_names", []),
            )
        tracker.log_checkpoint(
            best_path,
            f"model-{folder.path.name}",
            {
                "task": task.name,
                "best_epoch": best_epoch,
                task.monitor: folder.manifest.get("best_metric"),
            },
        )
    return payload


def _plot(folder: _RunFolder, task: TrainingTask, best_epoch: int | None) -> None:
    """Training curves into ``plots/``; a plotting problem never fails the run."""
    if not folder.history:
        return
    from visionops import plots

    shown = [task.monitor] + (["f1_macro"] if task.name != "regression" else [])
    try:
        plots.plot_loss_curves(folder.history, folder.path / "plots" / "loss.png")
        plots.plot_metric_curves(
            folder.history, shown, folder.path / "plots" / "metrics.png", best_epoch
        )
        plots.plot_learning_rate(folder.history, folder.path / "plots" / "lr.png")
    except Exception as exc:  # matplotlib problems must not lose a trained model
        logger.warning("could not draw the training curves: {}", exc)
