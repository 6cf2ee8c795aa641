"""The training engine: model, optimiser, schedule, loops; no files.

Plain PyTorch: AdamW with a per-step linear warm-up and cosine decay, mixed precision on CUDA,
channels-last, gradient clipping and accumulation, an optional exponential moving average
of the weights. Images arrive as uint8 batches from
:class:`~visionops.data.loading.BatchLoader`; augmentation, conversion and normalisation
happen on the training device.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import os
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torchvision
from loguru import logger
from torch import nn

from visionops import __version__
from visionops.augment import BatchAugment, build_augment
from visionops.config import Settings
from visionops.data.loading import BatchLoader
from visionops.data.prepared import PreparedDataset
from visionops.device import DeviceChoice
from visionops.distributed import DistContext
from visionops.errors import ArtifactError, TrainingError
from visionops.models import VisionModel, build_model, pretrained_normalization
from visionops.progress import ProgressReporter
from visionops.runs import CHECKPOINT_FORMAT, SCHEMA_VERSION
from visionops.tasks import TrainingTask

__all__ = [
    "Engine",
    "EpochPosition",
    "EpochStats",
    "ModelEma",
    "StepHook",
    "normalisation",
    "rng_state",
    "seed_everything",
    "set_rng_state",
    "training_versions",
    "warmup_cosine",
]

_PROGRESS_EVERY_S = 0.5
# Training images whose BatchNorm statistics are recomputed before each evaluation.
# Up to 1,024 training images: with 256 the estimate was noisier than the running averages it
# replaces (MobileNetV2 on 850 Fashion-MNIST images: test accuracy 0.859 with 256, 0.866 with
# all 850; the running statistics of a 13-batch epoch already hold 832 images).
_BN_CALIBRATION_IMAGES = 1024
# Running statistics are current enough when at most this share of them predates the epoch.
_BN_STALE_SHARE = 0.01


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


def training_versions() -> dict[str, str]:
    """Versions of visionops, torch and torchvision, recorded in ``run.json``."""
    return {
        "visionops": __version__,
        "torch": str(torch.__version__).split("+")[0],
        "torchvision": str(torchvision.__version__).split("+")[0],
    }


def normalisation(settings: Settings, dataset: PreparedDataset) -> tuple[list[float], list[float]]:
    """The run's per-channel mean and std: the backbone's when pretrained, else the data's."""
    if settings.model.pretrained or settings.model.weights is not None:
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


def rng_state() -> dict[str, Any]:
    """The torch (and CUDA) random streams, for a checkpoint."""
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []
    return {"torch": torch.get_rng_state(), "cuda": list(cuda)}


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore the random streams a checkpoint saved."""
    if isinstance(state.get("torch"), torch.Tensor):
        torch.set_rng_state(state["torch"].cpu())
    cuda = state.get("cuda") or []
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in cuda])


def seed_everything(seed: int, deterministic: bool) -> None:
    """Seed Python, NumPy and torch; optionally ask for deterministic algorithms."""
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


@dataclass
class EpochPosition:
    """How far an epoch got: what a mid-epoch checkpoint holds to continue it exactly.

    Attributes:
        epoch: The epoch in progress.
        batch: Batches of it already trained (the next one is ``batch``).
        loss_sum: Sum of the per-image training loss so far (this rank's).
        seen: Images trained so far in the epoch (this rank's).
        seconds: Training seconds spent in the epoch so far.
    """

    epoch: int
    batch: int
    loss_sum: float
    seen: int
    seconds: float


class StepHook(Protocol):
    """Asked after every optimiser step whether to checkpoint (see ``train.checkpoints``)."""

    def due(self, step: int) -> bool:
        """Whether to checkpoint after global optimiser step ``step`` (same on every rank)."""
        ...

    def save(self, position: EpochPosition) -> None:
        """Checkpoint the engine at ``position`` (called on every rank)."""
        ...


@dataclass
class EpochStats:
    """Mean loss, images seen and seconds of one training epoch."""

    loss: float
    images: int
    seconds: float


class Engine:
    """Model, optimiser, schedule, loaders and loops of one training invocation.

    The public engine of :func:`visionops.train.train`, also used on its own (the training
    benchmark times :meth:`train_epoch`). It writes no files: checkpoints and the run folder
    are the caller's.

    Args:
        settings: Resolved settings (``train.*``, ``model.*``).
        dataset: The prepared dataset.
        task: The training half of the dataset's task.
        choice: Device and precision.
        context: Rank and world size (``DistContext()`` for one process).

    Raises:
        TrainingError: Fewer training images than one batch per process.
    """

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
            weights=Path(settings.model.weights) if settings.model.weights else None,
            image_size=dataset.image_size,
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
        mean, std = normalisation(settings, dataset)
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

    def state(
        self,
        epoch: int,
        best_metric: float | None,
        run: dict[str, Any],
        *,
        position: EpochPosition | None = None,
        rank_rng: list[dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        """Everything a checkpoint holds to continue exactly after ``epoch``.

        Args:
            epoch: The last finished epoch.
            best_metric: The best validation metric so far.
            run: The run record.
            position: How far the next epoch got, for a mid-epoch checkpoint.
            rank_rng: Every rank's random streams (this process's alone when None).
        """
        return {
            "format": CHECKPOINT_FORMAT,
            "schema_version": SCHEMA_VERSION,
            "epoch": epoch,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None,
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "rng": rng_state(),
            "rank_rng": rank_rng,
            "position": dataclasses.asdict(position) if position is not None else None,
            "best_metric": best_metric if best_metric is not None else float("nan"),
            "run": run,
        }

    def load_state(self, checkpoint: Mapping[str, Any], path: Path) -> None:
        """Continue from a checkpoint's state (``path`` is only named in errors).

        Raises:
            ArtifactError: The checkpoint does not fit this model and optimiser.
        """
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
        """Mixed precision on devices that have it; nothing otherwise."""
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def train_epoch(
        self,
        epoch: int,
        total_epochs: int,
        progress: ProgressReporter,
        *,
        start: EpochPosition | None = None,
        hook: StepHook | None = None,
    ) -> EpochStats:
        """One pass over this process's shard of the training split.

        Args:
            epoch: The epoch number.
            total_epochs: For the progress bar.
            progress: Receives the epoch's bar.
            start: Continue a mid-epoch checkpoint's position instead of starting the epoch.
            hook: Asked after each optimiser step whether to write a mid-epoch checkpoint.

        Raises:
            TrainingError: The loss became NaN or infinite.
        """
        cfg = self.settings.train
        loader = self.train_loader
        first = start.batch if start is not None else 0
        loader.set_epoch(epoch, first)
        self.network.train()
        if self.settings.model.freeze_backbone:
            self.model.backbone.eval()  # frozen BatchNorm keeps its statistics
        steps = len(loader)
        bar = progress.start(f"epoch {epoch}/{total_epochs}", total=steps - first)
        loss_sum = torch.full((), start.loss_sum if start else 0.0, device=self.device)
        seen = start.seen if start else 0
        started = last_report = time.perf_counter() - (start.seconds if start else 0.0)
        try:
            for step, (images, targets) in enumerate(loader, start=first):
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
                if (
                    hook is not None
                    and boundary
                    and step + 1 < steps
                    and hook.due(self.scheduler.last_epoch)
                ):
                    hook.save(
                        EpochPosition(
                            epoch, step + 1, float(loss_sum), seen, time.perf_counter() - started
                        )
                    )
                now = time.perf_counter()
                if now - last_report >= _PROGRESS_EVERY_S or step + 1 == steps:
                    # The only host sync of the loop, twice a second at most.
                    mean_loss = float(loss_sum) / seen
                    self.check_finite(mean_loss, epoch, step + 1)
                    bar.advance(1, loss=mean_loss, img_s=seen / (now - started))
                    last_report = now
                else:
                    bar.advance(1)
                if step == first:
                    # How long the loader took to start (workers, memory map): slow starts show.
                    logger.debug(
                        "epoch {}: first batch done {:.2f} s after the epoch started",
                        epoch,
                        now - started,
                    )
        finally:
            bar.close()
        seconds = time.perf_counter() - started
        if self.context.enabled:
            # The epoch's loss over every rank's images, not rank 0's shard alone.
            totals = torch.stack([loss_sum, torch.tensor(float(seen), device=self.device)])
            torch.distributed.all_reduce(totals)
            return EpochStats(
                loss=float(totals[0]) / max(float(totals[1]), 1.0), images=seen, seconds=seconds
            )
        return EpochStats(loss=float(loss_sum) / max(seen, 1), images=seen, seconds=seconds)

    def check_finite(self, loss: float, epoch: int, step: int, which: str = "training") -> None:
        """Raise a :class:`TrainingError` if ``loss`` is NaN or infinite."""
        if not math.isfinite(loss):
            raise TrainingError(
                f"the {which} loss became {loss} at epoch {epoch}, step {step} — lower"
                f" train.lr (now {self.settings.train.lr:g}) or keep train.grad_clip set;"
                " the last good checkpoint is kept"
            )

    def batchnorm_is_stale(self, batches: int) -> bool:
        """Whether the evaluated model's BatchNorm statistics lag its weights after an epoch.

        A running statistic with momentum ``m`` keeps a share ``(1 - m) ** batches`` of what
        it was before the epoch's ``batches`` forward passes. Calibration (a forward pass over
        up to 1,024 training images) changes the result only where that share is above 1 %: short
        epochs, small momenta (MobileNet's 0.01, MNASNet's 0.0003), cumulative averages
        (``momentum=None``), and the EMA model, whose statistics are copied from a model whose
        weights it does not have. A long epoch with ResNet's 0.1 (44 batches or more) already
        carries statistics of its own, so its evaluation is the same without it.

        Args:
            batches: Forward passes of the epoch just trained (on this process).
        """
        if self.ema is not None:
            return True
        momenta = [
            m.momentum
            for m in self.eval_model().modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm)
        ]
        return any(
            momentum is None or (1 - momentum) ** batches > _BN_STALE_SHARE for momentum in momenta
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
