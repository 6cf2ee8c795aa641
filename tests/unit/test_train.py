"""The training engine on tiny generated data: run folder, resume, failures, options."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torchvision

from visionops.artifacts import PreparedManifest, SourceRecord
from visionops.config import Settings, load_settings
from visionops.errors import (
    ArtifactError,
    ConcurrencyError,
    ConfigError,
    DeviceError,
    InterruptError,
    TrackingError,
    TrainingError,
)
from visionops.models import IMAGENET_MEAN
from visionops.progress import ProgressReporter, ProgressTask
from visionops.runs import latest_run, load_checkpoint, load_trained_model, read_run_manifest
from visionops.train import ModelEma, resolve_prepared, train, warmup_cosine
from visionops.train.checkpoints import epoch_checkpoint_due

MODEL = "mobilenet_v3_small"  # 1.5 M parameters: fast on a shared CPU, small checkpoints
COLOURS = np.array([[220, 40, 40], [40, 200, 40], [40, 40, 220], [230, 230, 40]])


def _write_colours(
    folder: Path,
    *,
    per_class: tuple[int, int, int] = (12, 4, 4),
    size: int = 32,
    channels: int = 3,
    task: str = "classification",
) -> Path:
    """A learnable prepared dataset: one noisy solid colour per class (docs/artifacts.md)."""
    rng = np.random.default_rng(0)
    n_per_class = sum(per_class)
    labels = np.repeat(np.arange(len(COLOURS)), n_per_class)
    position = np.tile(np.arange(n_per_class), len(COLOURS))
    splits = np.where(
        position < per_class[0], 0, np.where(position < per_class[0] + per_class[1], 1, 2)
    ).astype(np.uint8)
    pixels = COLOURS[labels][:, None, None, :] + rng.normal(0, 12, (len(labels), size, size, 3))
    images = np.clip(pixels, 0, 255).astype(np.uint8)
    if channels == 1:
        images = images.mean(axis=3, keepdims=True).astype(np.uint8)
    manifest: dict[str, Any] = {
        "class_names": ["red", "green", "blue", "yellow"],
        "target_names": None,
        "target_units": None,
        "target_mean": None,
        "target_std": None,
    }
    if task == "classification":
        targets: np.ndarray = labels.astype(np.int64)
    elif task == "multilabel":
        targets = np.stack([labels == 0, labels == 1, labels >= 2], axis=1).astype(np.float32)
        manifest["class_names"] = ["red", "green", "other"]
    else:
        targets = np.stack([images[..., 0].mean((1, 2)), images[..., -1].mean((1, 2))], 1)
        targets = targets.astype(np.float32)
        train = targets[splits == 0]
        manifest.update(
            class_names=None,
            target_names=["redness", "blueness"],
            target_units=["", ""],
            target_mean=train.mean(0).tolist(),
            target_std=train.std(0).tolist(),
        )
    folder.mkdir(parents=True)
    np.save(folder / "images.npy", images)
    np.save(folder / "targets.npy", targets)
    np.save(folder / "splits.npy", splits)
    (folder / "items.csv").write_text("index,path,split,target,sha256\n", encoding="utf-8")
    (folder / "rejected.csv").write_text("path,reason\n", encoding="utf-8")
    train_pixels = images[splits == 0].astype(np.float64) / 255
    manifest.update(
        {
            "name": folder.name,
            "task": task,
            "image_size": size,
            "channels": channels,
            "resize": "crop",
            "mean": train_pixels.mean(axis=(0, 1, 2)).tolist(),
            "std": train_pixels.std(axis=(0, 1, 2)).tolist(),
            "counts": {
                "train": int((splits == 0).sum()),
                "val": int((splits == 1).sum()),
                "test": int((splits == 2).sum()),
                "rejected": 0,
                "duplicates_across_splits": 0,
            },
            "fingerprint": f"colours-{task}-{channels}-{size}-{per_class}",
            "source": SourceRecord(
                name=folder.name, source="generated", file_count=0, bytes=0, fingerprint="0"
            ),
            "created_at": "2026-01-01T00:00:00+00:00",
            "visionops_version": "0.1.0",
        }
    )
    PreparedManifest(**manifest).write(folder)
    return folder


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="module")
def colours(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _write_colours(tmp_path_factory.mktemp("prepared") / "colours")


def _settings(*overrides: str) -> Settings:
    return load_settings(
        overrides=[
            f"model.name={MODEL}",
            "train.epochs=2",
            "train.batch_size=16",
            "device=cpu",
            *overrides,
        ]
    )


def _history(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]


# --------------------------------------------------------------------------- run folder


def test_run_folder_has_every_documented_artifact(colours: Path) -> None:
    result = train(_settings(), colours)
    run = result.run_dir
    assert result.status == "completed"
    assert result.name == "run-001"
    assert run == Path("runs/run-001")
    assert latest_run(Path("runs")) == run
    manifest = read_run_manifest(run)
    assert manifest.status == "completed"
    assert manifest.task == "classification"
    assert manifest.dataset.fingerprint.startswith("colours-")
    assert manifest.model.name == MODEL
    assert manifest.model.num_outputs == 4
    assert manifest.model.feature_dim == 1024  # mobilenet_v3_small's embedding
    assert manifest.normalization.mean == pytest.approx(PreparedManifest.read(colours).mean)
    assert (manifest.monitor.metric, manifest.monitor.mode) == ("accuracy", "max")
    assert manifest.epochs_completed == 2
    assert manifest.best_epoch in (1, 2)
    assert manifest.finished_at
    assert manifest.class_names == ["red", "green", "blue", "yellow"]
    # config.yaml records what the run used: the dataset's 32 px, not the default 64.
    assert "image_size: 32" in (run / "config.yaml").read_text()

    history = _history(run)
    assert [row["epoch"] for row in history] == [1, 2]
    for key in ("train_loss", "val_loss", "val_accuracy", "lr", "seconds", "images_per_s"):
        assert key in history[0]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["val"]["accuracy"] == pytest.approx(manifest.best_metric)
    assert set(metrics) >= {"val", "test", "best_epoch", "monitor"}
    assert (run / "config.yaml").is_file()
    assert "epoch 2/2" in (run / "train.log").read_text()
    for plot in ("loss.png", "metrics.png", "lr.png"):
        assert (run / "plots" / plot).read_bytes()[:4] == b"\x89PNG"

    for which in ("best", "last"):
        checkpoint = torch.load(run / "checkpoints" / f"{which}.pt", weights_only=True)
        assert checkpoint["format"] == "visionops.checkpoint"
        assert checkpoint["ema"] is None
        assert isinstance(checkpoint["rng"]["torch"], torch.Tensor)
    assert load_checkpoint(run / "checkpoints" / "last.pt")["epoch"] == 2
    model, _ = load_trained_model(run)
    outputs, embedding = model(torch.zeros(1, 3, 32, 32))
    assert outputs.shape == (1, 4)
    assert embedding.shape == (1, 1024)


def test_learns_the_colours(colours: Path) -> None:
    result = train(_settings("train.epochs=4"), colours, name="learn")
    assert result.metrics["test"]["accuracy"] >= 0.9
    history = _history(result.run_dir)
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    checkpoints = result.run_dir / "checkpoints"
    assert load_checkpoint(checkpoints / "last.pt")["epoch"] == 4
    assert load_checkpoint(checkpoints / "best.pt")["epoch"] == result.best_epoch


def test_run_names_count_up_and_taken_name_is_refused(colours: Path) -> None:
    settings = _settings("train.epochs=1")
    first = train(settings, colours)
    second = train(settings, colours)
    assert (first.name, second.name) == ("run-001", "run-002")
    with pytest.raises(ConfigError, match=r"already exists.*--exist-ok"):
        train(settings, colours, name="run-001")
    replaced = train(settings, colours, name="run-001", exist_ok=True)
    assert replaced.status == "completed"
    assert sorted(p.name for p in Path("runs").iterdir()) == ["latest", "run-001", "run-002"]
    with pytest.raises(ConfigError, match="not a usable run name"):
        train(settings, colours, name="latest")


class _InterruptAt:
    """A progress reporter whose bar raises KeyboardInterrupt in the given epoch (Ctrl-C).

    The bar advances once per batch, after the batch's step (and any checkpoint): the
    interrupt comes at the ``batch``-th advance of that epoch.
    """

    def __init__(self, epoch: int, batch: int = 1) -> None:
        self.epoch = epoch
        self.batch = batch

    def start(self, description: str, total: float | None = None) -> ProgressTask:
        interrupt = description.startswith(f"epoch {self.epoch}/")
        batch = self.batch

        class _Task:
            advanced = 0

            def advance(self, amount: float = 1, **fields: Any) -> None:
                self.advanced += 1
                if interrupt and self.advanced >= batch:
                    raise KeyboardInterrupt

            def close(self) -> None:
                pass

        return _Task()


# --------------------------------------------------------------------------- resume


def test_resume_continues_exactly(colours: Path) -> None:
    overrides = ("train.epochs=3", "train.augment.rotate_degrees=10", "model.dropout=0.2")
    straight = train(_settings(*overrides), colours, name="straight")
    # The same plan stopped by Ctrl-C during epoch 2 (one step of it already taken), then
    # resumed from last.pt (end of epoch 1) with the run's own settings, as the CLI does.
    stopped = train(_settings(*overrides), colours, name="split", progress=_InterruptAt(2))
    assert stopped.status == "interrupted"
    resumed = train(load_settings(config_file=Path("runs/split/config.yaml")), resume="split")
    assert resumed.resumed_from == 1
    assert resumed.epochs_completed == 3
    expected, got = _history(straight.run_dir), _history(resumed.run_dir)
    assert [row["epoch"] for row in got] == [1, 2, 3]
    for epoch in (1, 2):
        for key in ("train_loss", "val_loss", "val_accuracy", "lr"):
            assert got[epoch][key] == pytest.approx(expected[epoch][key], rel=1e-4, abs=1e-6)
    assert resumed.metrics["test"] == pytest.approx(straight.metrics["test"], rel=1e-4)
    a = torch.load(straight.run_dir / "checkpoints/last.pt", weights_only=True)["model"]
    b = torch.load(resumed.run_dir / "checkpoints/last.pt", weights_only=True)["model"]
    for key in a:
        assert torch.allclose(a[key].float(), b[key].float(), atol=1e-5), key


def test_a_mid_epoch_checkpoint_resumes_at_the_exact_batch(colours: Path) -> None:
    overrides = (
        "train.epochs=2",
        "train.augment.rotate_degrees=10",
        "model.dropout=0.2",
        "train.ema=true",
        "train.checkpoint_every=1steps",
    )
    straight = train(_settings(*overrides), colours, name="straight")
    # Ctrl-C after the second batch of epoch 2: last.pt holds the checkpoint written after it.
    stopped = train(_settings(*overrides), colours, name="split", progress=_InterruptAt(2, 2))
    assert stopped.status == "interrupted"
    last = load_checkpoint(stopped.run_dir / "checkpoints" / "last.pt")
    assert last["epoch"] == 1
    assert (last["position"]["epoch"], last["position"]["batch"]) == (2, 2)
    resumed = train(load_settings(config_file=Path("runs/split/config.yaml")), resume="split")
    assert "resuming runs/split at epoch 2 batch 2/" in (resumed.run_dir / "train.log").read_text()
    expected, got = _history(straight.run_dir), _history(resumed.run_dir)
    assert [row["epoch"] for row in got] == [1, 2]
    for key in ("train_loss", "val_loss", "val_accuracy", "lr"):
        # The epoch's mean loss carries the batches before the checkpoint.
        assert got[1][key] == pytest.approx(expected[1][key], rel=1e-5, abs=1e-7)
    a = torch.load(straight.run_dir / "checkpoints/last.pt", weights_only=True)
    b = torch.load(resumed.run_dir / "checkpoints/last.pt", weights_only=True)
    for part in ("model", "ema"):
        for key in a[part]:
            assert torch.allclose(a[part][key].float(), b[part][key].float(), atol=1e-6), key


def test_checkpoint_every_epochs_writes_at_the_interval_on_improvement_and_at_the_end() -> None:
    settings = _settings("train.epochs=5", "train.checkpoint_every=2epochs")
    due = [epoch_checkpoint_due(settings, epoch, improved=False) for epoch in range(1, 6)]
    assert due == [False, True, False, True, True]
    assert epoch_checkpoint_due(settings, 3, improved=True)
    steps = _settings("train.checkpoint_every=500steps")
    assert steps.train.checkpoint_interval == (500, "step")
    assert epoch_checkpoint_due(steps, 1, improved=False)


def test_val_every_scores_every_nth_epoch_and_the_last(colours: Path) -> None:
    result = train(_settings("train.epochs=3", "train.val_every=2"), colours, name="sparse")
    rows = _history(result.run_dir)
    assert ["val_accuracy" in row for row in rows] == [False, True, True]
    assert result.best_epoch in (2, 3)
    log = (result.run_dir / "train.log").read_text()
    assert "epoch 1/3  train loss" in log and "not validated (train.val_every=2)" in log
    assert (result.run_dir / "checkpoints" / "best.pt").is_file()
    assert (result.run_dir / "plots" / "metrics.png").is_file()


def test_checkpoint_every_refuses_what_is_not_an_interval() -> None:
    with pytest.raises(ConfigError, match=r"`1epoch`, `500steps` or `10min`"):
        _settings("train.checkpoint_every=5h")


def test_resume_can_train_longer(colours: Path) -> None:
    train(_settings("train.epochs=1"), colours, name="short")
    longer = train(
        load_settings(config_file=Path("runs/short/config.yaml"), overrides=["train.epochs=2"]),
        resume="short",
    )
    assert longer.epochs_completed == 2
    assert longer.resumed_from == 1
    assert read_run_manifest(longer.run_dir).epochs == 2
    assert "epochs: 2" in (longer.run_dir / "config.yaml").read_text()


def test_resume_needs_more_epochs(colours: Path) -> None:
    train(_settings("train.epochs=1"), colours, name="done")
    with pytest.raises(TrainingError, match=r"already trained 1 of 1 epochs.*--epochs"):
        train(_settings("train.epochs=1"), resume="done")


def test_resume_refuses_another_model(colours: Path) -> None:
    train(_settings("train.epochs=1"), colours, name="small")
    with pytest.raises(ConfigError, match=r"model.name='mobilenet_v3_small'"):
        train(_settings("train.epochs=2", "model.name=resnet18"), resume="small")


def test_resume_corrupt_or_foreign_checkpoint_is_artifact_error(colours: Path) -> None:
    run = train(_settings("train.epochs=1"), colours, name="broken").run_dir
    last = run / "checkpoints" / "last.pt"
    last.write_bytes(last.read_bytes()[:1000])
    with pytest.raises(ArtifactError, match="corrupt or truncated"):
        train(_settings("train.epochs=2"), resume="broken")
    torch.save({"state_dict": {}}, last)
    with pytest.raises(ArtifactError, match="not a visionops checkpoint"):
        train(_settings("train.epochs=2"), resume="broken")


def test_ctrl_c_keeps_last_epoch_and_says_how_to_resume(colours: Path) -> None:
    progress: ProgressReporter = _InterruptAt(2)
    result = train(_settings("train.epochs=3"), colours, name="stopped", progress=progress)
    assert result.status == "interrupted"
    assert result.resume_command == "visionops train --resume runs/stopped"
    assert read_run_manifest(result.run_dir).status == "interrupted"
    assert load_checkpoint(result.run_dir / "checkpoints" / "last.pt")["epoch"] == 1
    resumed = train(load_settings(config_file=Path("runs/stopped/config.yaml")), resume="stopped")
    assert resumed.status == "completed"
    assert resumed.epochs_completed == 3
    assert [row["epoch"] for row in _history(resumed.run_dir)] == [1, 2, 3]


def test_ctrl_c_in_first_epoch_leaves_no_run_and_says_so(colours: Path) -> None:
    with pytest.raises(InterruptError, match="nothing was kept") as stopped:
        train(_settings(), colours, name="early", progress=_InterruptAt(1))
    assert stopped.value.exit_code == 130
    assert not Path("runs/early").exists()
    assert latest_run(Path("runs")) is None


# --------------------------------------------------------------------------- failures


def test_diverging_loss_stops_and_keeps_last_good_checkpoint(colours: Path) -> None:
    train(_settings("train.epochs=1"), colours, name="diverge")
    with pytest.raises(TrainingError, match=r"loss became (nan|inf).*lower train.lr"):
        train(
            _settings("train.epochs=2", "train.lr=1e30", "train.grad_clip=null"),
            resume="diverge",
        )
    run = Path("runs/diverge")
    assert read_run_manifest(run).status == "failed"
    assert load_checkpoint(run / "checkpoints" / "last.pt")["epoch"] == 1


def test_failure_before_first_epoch_removes_the_run(
    colours: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    train(_settings("train.epochs=1"), colours, name="keep")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_DIR", str(Path.cwd() / "wandb-files"))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(Path.cwd() / "wandb-config"))
    monkeypatch.setenv("NETRC", str(Path.cwd() / "no-netrc"))
    with pytest.raises(TrackingError, match="wandb login"):
        train(_settings("tracking.mode=online"), colours, name="keep", exist_ok=True)
    # The run it would have replaced is back, untouched.
    assert read_run_manifest(Path("runs/keep")).status == "completed"
    assert sorted(p.name for p in Path("runs").iterdir() if not p.name.startswith(".")) == [
        "keep",
        "latest",
    ]


def test_fewer_images_than_a_batch_says_how_to_fix(colours: Path) -> None:
    with pytest.raises(TrainingError, match=r"only 48 training images.*--batch-size 16"):
        train(_settings("train.batch_size=64"), colours)
    assert not Path("runs").exists() or not any(Path("runs").iterdir())


def test_task_mismatch_is_one_line_config_error(colours: Path) -> None:
    with pytest.raises(ConfigError, match=r"is a classification dataset but data.task is"):
        train(_settings("data.task=regression"), colours)


def test_unknown_model_suggests_names(colours: Path) -> None:
    with pytest.raises(ConfigError, match="did you mean 'resnet18'"):
        train(_settings("model.name=resnet81"), colours)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_cuda_is_device_error(colours: Path) -> None:
    with pytest.raises(DeviceError, match="no usable CUDA"):
        train(_settings("device=cuda"), colours)


# --------------------------------------------------------------------------- options


def test_ema_weights_are_saved_with_model_keys_and_used(colours: Path) -> None:
    result = train(_settings("train.ema=true", "train.ema_decay=0.9"), colours, name="ema")
    checkpoint = load_checkpoint(result.run_dir / "checkpoints" / "best.pt")
    assert set(checkpoint["ema"]) == set(checkpoint["model"])
    differs = any(
        not torch.equal(checkpoint["ema"][key], checkpoint["model"][key])
        for key in checkpoint["model"]
        if checkpoint["model"][key].is_floating_point()
    )
    assert differs
    model, _ = load_trained_model(result.run_dir)
    assert torch.equal(model.head.weight, checkpoint["ema"]["head.weight"])


def test_ema_warms_up() -> None:
    model = torch.nn.Linear(2, 1)
    ema = ModelEma(model, decay=0.999)
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.update()  # decay (1 + 1) / (10 + 1): mostly the new weights
    moved = (ema.module.weight - (model.weight - 1.0)).abs().mean().detach()
    assert 0.7 < float(moved) < 0.9


def test_warmup_then_cosine() -> None:
    factor = warmup_cosine(total_steps=100, warmup_steps=10)
    assert factor(0) < factor(5) < factor(9) <= 1.0
    assert factor(10) == pytest.approx(1.0)
    assert factor(55) == pytest.approx(0.5)
    assert factor(99) < 0.01


def test_freeze_backbone_trains_only_the_head(colours: Path) -> None:
    torch.manual_seed(0)
    result = train(_settings("model.freeze_backbone=true"), colours, name="frozen")
    checkpoint = load_checkpoint(result.run_dir / "checkpoints" / "last.pt")
    torch.manual_seed(0)  # the engine seeds train.seed=0 before building: same initial weights
    from visionops.models import build_model

    initial = build_model(MODEL, num_outputs=4).state_dict()
    for key, value in checkpoint["model"].items():
        if key.startswith("backbone."):
            assert torch.equal(value, initial[key]), key  # weights and BatchNorm statistics
    assert not torch.equal(checkpoint["model"]["head.weight"], initial["head.weight"])


def test_accumulation_clipping_and_deterministic_run(colours: Path) -> None:
    overrides = ("train.accumulate=2", "train.grad_clip=0.5", "train.deterministic=true")
    first = train(_settings(*overrides), colours, name="det-a")
    second = train(_settings(*overrides), colours, name="det-b")
    assert _history(first.run_dir)[-1]["train_loss"] == _history(second.run_dir)[-1]["train_loss"]


@pytest.mark.parametrize("task", ["multilabel", "regression"])
def test_other_tasks_train(tmp_path: Path, task: str) -> None:
    dataset = _write_colours(tmp_path / task, task=task)
    result = train(_settings("train.epochs=3"), dataset, name=task)
    manifest = read_run_manifest(result.run_dir)
    assert manifest.task == task
    if task == "multilabel":
        assert manifest.monitor.metric == "map"
        assert manifest.thresholds is not None
        assert len(manifest.thresholds) == 3
        assert result.metrics["thresholds"] == manifest.thresholds
        assert 0 <= result.metrics["test"]["map"] <= 1
    else:
        assert manifest.target_names == ["redness", "blueness"]
        assert manifest.thresholds is None
        assert "r2/redness" in result.metrics["test"]
        assert "mae/blueness" in result.metrics["val"]


def test_grey_images_and_pretrained_weights_from_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    weights = torchvision.models.get_model_weights(MODEL).DEFAULT
    cache = tmp_path / "torch" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.save(torchvision.models.get_model(MODEL).state_dict(), cache / weights.url.split("/")[-1])

    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("must not download")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    grey = _write_colours(tmp_path / "grey", channels=1)
    result = train(_settings("model.pretrained=true", "train.epochs=1"), grey, name="grey")
    manifest = read_run_manifest(result.run_dir)
    assert manifest.model.channels == 1
    assert manifest.normalization.mean == pytest.approx([float(np.mean(IMAGENET_MEAN))])


def test_pretrained_without_network_or_cache_is_one_line_error(
    colours: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-torch"))

    def no_network(*args: object, **kwargs: object) -> None:
        raise OSError("network is unreachable")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    with pytest.raises(ConfigError, match="--no-pretrained"):
        train(_settings("model.pretrained=true"), colours)
    assert not Path("runs").exists() or not any(Path("runs").iterdir())


# --------------------------------------------------------------------------- datasets


def test_dataset_resolution_order(tmp_path: Path, colours: Path) -> None:
    settings = load_settings(overrides=[f"data.prepared_root={colours.parent}"])
    assert resolve_prepared(settings, None) == colours  # the newest prepared dataset
    assert resolve_prepared(settings, "colours") == colours  # a name under prepared_root
    assert resolve_prepared(settings, colours) == colours  # a prepared folder


# The demo quality bar (accuracy, mAP, R² from random initialisation) is checked once per
# trained run in tests/integration/test_cli_eval.py, together with `visionops eval` on it.


def test_sources_and_raw_folders_are_fetched_and_prepared(tmp_path: Path) -> None:
    settings = load_settings(
        overrides=["data.demo.images_per_class=4", "data.image_size=32", "data.workers=1"]
    )
    prepared = resolve_prepared(settings, "demo:multilabel")
    assert prepared == Path("data/prepared/multilabel")
    assert PreparedManifest.read(prepared).task == "multilabel"
    # A raw folder is prepared; the project's data.source is used when no DATASET is given.
    assert resolve_prepared(settings, Path("data/raw/multilabel")) == prepared
    configured = load_settings(
        overrides=[
            "data.source=demo:multilabel",
            "data.demo.images_per_class=4",
            "data.image_size=32",
            "data.workers=1",
        ]
    )
    assert "source" in configured.data.model_fields_set
    assert resolve_prepared(configured, None) == prepared


# --------------------------------------------------------------------------- concurrency, crashes

SPAWN = multiprocessing.get_context("spawn")


class _HangIn:
    """A progress reporter that signals ``reached`` in the given epoch, then hangs there."""

    def __init__(self, epoch: int, reached: Event) -> None:
        self.epoch, self.reached = epoch, reached

    def start(self, description: str, total: float | None = None) -> ProgressTask:
        hang = description.startswith(f"epoch {self.epoch}/")
        reached = self.reached

        class _Task:
            def advance(self, amount: float = 1, **fields: Any) -> None:
                if hang:
                    reached.set()
                    while True:  # until the test kills this process
                        reached.wait(3600)

            def close(self) -> None:
                pass

        return _Task()


def _train_until_killed(folder: str, dataset: str, epoch: int, reached: Event) -> None:
    os.chdir(folder)
    train(_settings("train.epochs=3"), Path(dataset), name="same", progress=_HangIn(epoch, reached))


@pytest.mark.parametrize("killed_in_epoch", [1, 2])
def test_a_run_in_use_refuses_a_second_writer_and_a_killed_run_is_marked_failed(
    colours: Path, tmp_path: Path, killed_in_epoch: int
) -> None:
    reached = SPAWN.Event()
    first = SPAWN.Process(
        target=_train_until_killed, args=(str(tmp_path), str(colours), killed_in_epoch, reached)
    )
    first.start()
    try:
        assert reached.wait(300), "the first run never started training"
        # Issue 12.1: a second run on the same folder fails at once, naming the writer.
        with pytest.raises(ConcurrencyError) as refused:
            train(
                _settings("train.epochs=1", "model.dropout=0.3"),
                colours,
                name="same",
                exist_ok=True,
            )
        assert str(refused.value) == (
            f"runs/same is being written by process {first.pid} — wait for it or pick"
            " another --name"
        )
        assert read_run_manifest(Path("runs/same")).model.dropout == 0.0  # untouched
    finally:
        os.kill(first.pid or 0, signal.SIGKILL)  # issue 12.7: a real kill -9
        first.join(60)
    assert read_run_manifest(Path("runs/same")).status == "running"

    # The next training in the same runs folder notices the dead run.
    train(_settings("train.epochs=1"), colours, name="next")
    record = read_run_manifest(Path("runs/same"))
    assert record.status == "failed"
    assert record.failure is not None
    if killed_in_epoch == 1:
        assert "nothing to resume" in record.failure
        assert "--resume" not in record.failure
        with pytest.raises(ArtifactError) as no_resume:
            train(_settings("train.epochs=3"), resume="same")
        assert "no checkpoint to resume" in str(no_resume.value)
        assert "--name same --exist-ok" in str(no_resume.value)
        assert "--resume" not in str(no_resume.value)
    else:
        assert "visionops train --resume runs/same" in record.failure
        resumed = train(_settings("train.epochs=2"), resume="same")
        assert resumed.status == "completed"
        assert read_run_manifest(Path("runs/same")).failure is None


def test_config_yaml_records_the_size_the_dataset_has_and_another_size_is_refused(
    colours: Path,
) -> None:
    with pytest.raises(ConfigError) as refused:
        train(_settings("data.image_size=48"), colours)
    message = str(refused.value)
    assert "was prepared with image_size 32 but data.image_size is 48" in message
    assert "visionops data preprocess" in message
    assert not Path("runs").exists() or not [
        p for p in Path("runs").iterdir() if not p.name.startswith(".")
    ]
    same = train(_settings("data.image_size=32", "train.epochs=1"), colours)
    assert "image_size: 32" in (same.run_dir / "config.yaml").read_text()


def test_unsafe_checkpoint_error_gives_the_reason_not_torchs_advice(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"format": "visionops.checkpoint", "payload": os.system}, path)
    with pytest.raises(ArtifactError) as refused:
        load_checkpoint(path)
    message = str(refused.value)
    assert "posix.system" in message or "os.system" in message
    assert "weights_only" not in message and "trust" not in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("model", "overrides", "batches", "stale"),
    [
        ("resnet18", [], 9, True),  # 0.9**9 = 39 % of the statistics predate the epoch
        ("resnet18", [], 44, False),  # under 1 %: evaluation is the same without calibration
        ("mobilenet_v3_small", [], 400, True),  # momentum 0.01: 2 % still predates it
        ("resnet18", ["train.ema=true"], 1000, True),  # the EMA's weights, the model's stats
    ],
)
def test_batchnorm_is_calibrated_only_where_its_statistics_lag(
    prepared_shapes: Path, model: str, overrides: list[str], batches: int, stale: bool
) -> None:
    from visionops.data.prepared import PreparedDataset
    from visionops.device import resolve_device
    from visionops.distributed import DistContext
    from visionops.tasks import task_for
    from visionops.train.engine import Engine

    settings = load_settings(overrides=[f"model.name={model}", "device=cpu", *overrides])
    dataset = PreparedDataset.open(prepared_shapes)
    engine = Engine(
        settings, dataset, task_for(dataset.manifest), resolve_device("cpu"), DistContext()
    )  # type: ignore[arg-type]
    assert engine.batchnorm_is_stale(batches) is stale
