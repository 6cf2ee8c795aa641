"""The Task protocol: everything that differs between tasks, in one class per task.

A task has two halves. The torch-free half is used by ``serve``, ``drift``, ``eval``'s
metrics and ``export``'s naming, and never imports torch (serving images need no torch): the
graph's output name, the answer ``/predict`` gives for one image, the request options that
apply, metrics, figures and the columns drift tests. The training half (head size, targets,
loss, the post-processing that export puts inside the ONNX graph) imports torch lazily,
inside its methods, so importing a task module stays cheap.

The shared ``train``, ``eval`` and ``export`` stages keep all the I/O and call the task's
hooks where tasks differ: what the graph computes (:meth:`Task.graph_outputs`), how a trained
model is rebuilt (:meth:`Task.load_model`), how a model that is not trained by gradient
descent is built (:meth:`Task.plan_fit`, :meth:`Task.fit`), which images it is built from
(:meth:`Task.learns_from`) and how a split's outputs are scored and drawn
(:meth:`Task.score_outputs`, :meth:`Task.eval_plots`).

Adding a task is adding one module that subclasses :class:`Task` and decorating the class
with :func:`visionops.tasks.register_task`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
from numpy.typing import NDArray

from visionops.artifacts import BundleMeta, ClassActivationRecord, PreparedManifest, RunRecord
from visionops.tasks._results import Outputs, Plot, TaskMetrics

if TYPE_CHECKING:
    from pathlib import Path

    import torch
    from torch import nn

    from visionops.artifacts import RunRecord
    from visionops.config import Settings
    from visionops.progress import ProgressReporter

__all__ = ["INPUT_KEY", "PredictOptions", "Task", "TaskSource", "TrainingTask", "meta_field"]

INPUT_KEY = "input"
"""Key of the model-sized input pixels in the ``extra`` that :meth:`Task.answer` receives."""


@dataclass(frozen=True)
class PredictOptions:
    """Per-request options of ``/predict`` (None: the bundle's default).

    Attributes:
        top_k: Labels to return (classification, multilabel).
        threshold: Decision threshold (multilabel probability, anomaly score).
        heatmap: Return the heatmap as PNGs: the anomaly map (anomaly), the top class's
            activation map (classification, multilabel, where the bundle has one).
        default_top_k: Labels a classification answer lists when ``top_k`` is None (the
            server's ``serve.top_k``).
    """

    top_k: int | None = None
    threshold: float | None = None
    heatmap: bool = False
    default_top_k: int = 5


TaskSource = PreparedManifest | RunRecord | BundleMeta
"""An artifact a task is built from: each names the task and its labels."""


def meta_field(meta: TaskSource, name: str) -> Any:
    """Field ``name`` of an artifact, or None when its kind has no such field.

    Not every kind records every label field (a prepared manifest has no tuned
    ``thresholds``, a bundle no ``target_mean``), so one reader serves all three.
    """
    return getattr(meta, name, None)


class Task(ABC):
    """One task's behaviour, built from an artifact that names its labels.

    One instance is built with :meth:`from_manifest` from a prepared manifest, a run record
    or a bundle's metadata (a :data:`TaskSource`); it holds what the task needs from them
    (class names, target statistics, tuned thresholds).

    Attributes:
        name: The task name used in artifacts (``classification``, ...).
        main_output: Name of the ONNX graph's task output.
        monitor: The validation metric used for early stopping and the best checkpoint.
        mode: ``max`` if a larger ``monitor`` is better, else ``min``.
        row_kind: What a row of the evaluation table describes: ``class`` or ``target``.
        row_noun: What a row is called in tables (``class``, ``label``, ``target``).
        rank_rows_by: The per-row column eval's summary sorts the weakest rows by (or None
            to keep the order).
        serve_options: The :class:`PredictOptions` fields a request may set for this task.
        trained_by_gradient: Whether the gradient-descent engine trains it (anomaly
            detection builds a memory bank instead).
        target_kind: How ``targets.npy`` stores a target: ``class_index`` (``(N,)`` int64),
            ``multi_hot`` (``(N, K)`` float32 0/1) or ``values`` (``(N, T)`` float32).
        has_masks: Whether a prepared dataset of this task carries ``masks.npy``.
        extra_outputs: Graph outputs besides the main one and ``embedding`` (anomaly
            detection's ``heatmap``), in the graph's order after the main output.
        mixed_precision: Whether ``eval`` may run the model in mixed precision.
        int8_op_types: The only operators int8 quantisation touches (None: all it can).
        int8_symbolic_shapes: Whether ONNX Runtime's symbolic shape inference can follow
            the graph (int8 pre-processing).
        explains: Whether export may give the bundle a class activation map (``cam``) that
            ``heatmap=true`` returns (:meth:`explained_model`).
    """

    name: ClassVar[str]
    main_output: ClassVar[str]
    monitor: ClassVar[str]
    mode: ClassVar[Literal["max", "min"]] = "max"
    row_kind: ClassVar[Literal["class", "target"]] = "class"
    row_noun: ClassVar[str] = "class"
    rank_rows_by: ClassVar[str | None] = "f1"
    serve_options: ClassVar[frozenset[str]] = frozenset({"top_k"})
    trained_by_gradient: ClassVar[bool] = True
    target_kind: ClassVar[Literal["class_index", "multi_hot", "values"]] = "class_index"
    has_masks: ClassVar[bool] = False
    extra_outputs: ClassVar[tuple[str, ...]] = ()
    mixed_precision: ClassVar[bool] = True
    int8_op_types: ClassVar[tuple[str, ...] | None] = None
    int8_symbolic_shapes: ClassVar[bool] = True
    explains: ClassVar[bool] = False

    @classmethod
    @abstractmethod
    def from_manifest(cls, manifest: TaskSource, *, label_smoothing: float = 0.0) -> Task:
        """Build the task from a prepared manifest, run record or bundle metadata."""

    @property
    @abstractmethod
    def labels(self) -> list[str]:
        """Class names or target names, in the order of the model's outputs."""

    # ------------------------------------------------------------ torch-free half

    @abstractmethod
    def answer(
        self,
        main: NDArray[np.float32],
        extra: Mapping[str, NDArray[np.float32]],
        options: PredictOptions,
    ) -> dict[str, Any]:
        """What ``/predict`` answers for one image.

        Args:
            main: This image's row of the graph's main output.
            extra: This image's rows of the graph's other outputs (embedding excluded) and,
                under :data:`INPUT_KEY`, the model-sized ``(H, W, C)`` uint8 pixels it saw.
            options: The request's options (already checked by :meth:`check_options`).
        """

    def check_options(self, options: PredictOptions, default_top_k: int = 5) -> str | None:
        """Why ``options`` do not apply to this task, or None when they do."""
        from visionops.tasks import TASKS

        del default_top_k
        asked = {"threshold": options.threshold is not None, "heatmap": options.heatmap}
        for option in (name for name, given in asked.items() if given):
            if option not in self.serve_options:
                takers = [name for name, cls in TASKS.items() if option in cls.serve_options]
                return (
                    f"'{option}' applies to {' and '.join(takers) or 'no'} models, this one is"
                    f" {self.name}"
                )
        return None

    def describe(self) -> dict[str, Any]:
        """Post-processing facts ``/metadata`` reports (thresholds in use)."""
        return {"thresholds": None}

    def heatmap_support(self) -> dict[str, Any]:
        """Whether answers can carry a heatmap: ``available``, ``kind`` and ``detail`` (why not)."""
        return {"available": False, "kind": None, "detail": f"{self.name} models have no heatmap"}

    @classmethod
    def flat_answer(cls, answer: Mapping[str, Any]) -> dict[str, Any]:
        """An answer as flat columns for a CSV row (``visionops predict --out x.csv``)."""
        return {k: v for k, v in answer.items() if k != "heatmap"}

    @classmethod
    def answer_text(cls, answer: Mapping[str, Any]) -> str:
        """An answer as one short line for a table."""
        return str(dict(answer))

    def predicted_labels(self, answer: Mapping[str, Any]) -> list[str]:
        """The labels an answer predicts (counted in serve's metrics; none for regression)."""
        del answer
        return []

    @abstractmethod
    def score(self, outputs: NDArray[Any], targets: NDArray[Any]) -> TaskMetrics:
        """Evaluation metrics of post-processed outputs against targets as stored."""

    @abstractmethod
    def plots(
        self, scored: TaskMetrics, outputs: NDArray[Any], targets: NDArray[Any]
    ) -> list[Plot]:
        """The evaluation figures, in the order the report shows them."""

    @abstractmethod
    def output_columns(self, main: NDArray[Any]) -> dict[str, NDArray[np.float64]]:
        """The model's outputs as named numeric columns, for drift's per-column tests.

        Args:
            main: ``(N, ...)`` main outputs of ``N`` images.
        """

    def predicted_classes(self, main: NDArray[Any]) -> NDArray[np.int64] | None:
        """One predicted class per image for drift's chi-square test, or None."""
        del main
        return None

    def caption(self, prediction: NDArray[Any], target: NDArray[Any]) -> str:
        """One image's prediction against its target, short (W&B sample captions).

        The default lists each output as ``name prediction/target``.
        """
        pairs = zip(self.labels, np.atleast_1d(prediction), np.atleast_1d(target), strict=False)
        return " · ".join(f"{n} {p:.3g}/{t:.3g}" for n, p, t in pairs)

    def learns_from(self, targets: NDArray[Any]) -> NDArray[np.bool_]:
        """Which images (by their stored targets) a model of this task is built from.

        Training, int8 calibration and the drift reference use these (anomaly detection:
        good images only). The default is every image.
        """
        return np.ones(len(targets), dtype=bool)

    def score_outputs(self, outputs: Outputs) -> TaskMetrics:
        """``eval``'s metrics of a split's outputs (default: :meth:`score` of the main output)."""
        return self.score(outputs.main, outputs.targets)

    def eval_plots(self, scored: TaskMetrics, outputs: Outputs) -> list[Plot]:
        """``eval``'s figures (default: :meth:`plots`; a task may draw on the images)."""
        return self.plots(scored, outputs.main, outputs.targets.astype(np.float64))

    def quick_metrics(self, outputs: Outputs) -> dict[str, float]:
        """Headline metrics of a split's outputs: the bundle's and a one-pass run's.

        The default is :meth:`metrics` of the main output.
        """
        return self.metrics(np.asarray(outputs.main, np.float64), outputs.targets)

    def saved_outputs(self, outputs: Outputs) -> dict[str, NDArray[Any]]:
        """Arrays ``predictions.npz`` keeps besides ``indices``, ``outputs`` and ``targets``."""
        del outputs
        return {}

    @classmethod
    def training_data_problem(cls, names: Sequence[str], train: NDArray[Any]) -> str | None:
        """What makes a train split unusable for this task (None: nothing).

        Args:
            names: Class or target names of the dataset.
            train: The train split's targets as ``targets.npy`` stores them.
        """
        del names, train
        return None

    # ------------------------------------------------------------- training half

    @property
    @abstractmethod
    def num_outputs(self) -> int:
        """Size of the model head's output."""

    def encode_targets(self, targets: torch.Tensor) -> torch.Tensor:
        """Turn targets as stored (``targets.npy``) into what :meth:`loss` expects."""
        return targets

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean loss of raw model outputs ``(B, K)`` against encoded targets."""
        raise NotImplementedError(f"{self.name} is not trained by gradient descent")

    @abstractmethod
    def postprocess(self, outputs: torch.Tensor) -> torch.Tensor:
        """Raw outputs to what a user gets (this is also what export puts in the graph)."""

    @abstractmethod
    def metrics(
        self, predictions: NDArray[np.floating[Any]], targets: NDArray[Any]
    ) -> dict[str, float]:
        """Quick metrics of post-processed predictions (training's validation metrics)."""

    def fit_postprocessing(
        self, predictions: NDArray[np.floating[Any]], targets: NDArray[Any]
    ) -> None:
        """Tune post-processing on validation predictions (multilabel thresholds)."""
        del predictions, targets

    def graph_outputs(self, model: nn.Module, normalised: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """What the exported graph (and ``eval``) computes from normalised images.

        In order: the main output, :attr:`extra_outputs`, the embedding. The default is the
        task's post-processing of the model's raw output, then the embedding.
        """
        raw, embedding = model(normalised)
        return self.postprocess(raw.float()), embedding

    def bundle_outputs(self, model: nn.Module | None) -> tuple[str, ...]:
        """The bundle graph's outputs besides the main one and the embedding, for ``model``.

        The default is :attr:`extra_outputs`; a task whose exported model explains its
        answers adds the map (:meth:`explained_model`).
        """
        del model
        return self.extra_outputs

    def explained_model(
        self, model: nn.Module, *, channels: int, image_size: int
    ) -> tuple[nn.Module, ClassActivationRecord | None]:
        """The model ``export`` puts in the bundle, and its class activation map record.

        The default exports ``model`` as it is, with no record (the task has no such map).
        """
        del channels, image_size
        return model, None

    def load_model(self, run_dir: Path, which: str = "best") -> tuple[nn.Module, RunRecord]:
        """Rebuild a run's trained model on the CPU, in eval mode.

        Raises:
            ArtifactError: A missing, corrupt or foreign checkpoint.
        """
        from visionops.runs import load_trained_model

        model, record = load_trained_model(run_dir, which)
        return model, record

    def plan_fit(
        self,
        settings: Settings,
        *,
        images: int,
        image_size: int,
        channels: int,
        val_targets: NDArray[Any],
    ) -> int:
        """Check a one-pass fit can be done before a run folder exists, and size it.

        Only for tasks not :attr:`trained_by_gradient`: the shared ``train`` stage calls
        this, then :meth:`fit`, then :meth:`fit_postprocessing` on validation outputs.

        Args:
            settings: Resolved settings.
            images: Training images the model will be built from (:meth:`learns_from`).
            image_size: Their side.
            channels: Their channels.
            val_targets: The validation split's targets (post-processing is tuned on them).

        Returns:
            The model's feature (embedding) length.
        """
        raise NotImplementedError(f"{self.name} is trained by gradient descent")

    def fit(
        self,
        images: NDArray[np.uint8],
        mean: Sequence[float],
        std: Sequence[float],
        *,
        device: torch.device,
        progress: ProgressReporter,
    ) -> nn.Module:
        """Build the model in one pass over ``(N, H, W, C)`` uint8 training images.

        Called after :meth:`plan_fit`, with the run's normalisation.
        """
        del images, mean, std, device, progress
        raise NotImplementedError(f"{self.name} is trained by gradient descent")

    def run_fields(self) -> dict[str, Any]:
        """Fields this task adds to ``run.json`` (``thresholds`` for multilabel)."""
        return {"thresholds": None}

    def better(self, value: float, best: float | None) -> bool:
        """Whether ``value`` of the monitored metric improves on ``best``."""
        if best is None or not np.isfinite(best):
            return bool(np.isfinite(value))
        return value > best if self.mode == "max" else value < best

    def within_noise(self, value: float, best: float | None, images: int) -> bool:
        """Whether ``value`` falls short of ``best`` by less than validation noise.

        The noise is the standard error of a share measured on ``images`` validation images,
        ``sqrt(p (1 - p) / n)`` at ``p = best``: the exact error of accuracy, and the scale of
        the error of mAP and R² (every monitored metric here is at most 1 and maximised). On
        150 images at 0.89 it is 2.6 points, four images.
        """
        if best is None or not (np.isfinite(best) and np.isfinite(value)) or images < 1:
            return False
        if self.mode != "max":
            return False
        share = min(max(best, 0.0), 1.0)
        return best - value <= float(np.sqrt(share * (1.0 - share) / images))


TrainingTask = Task
"""The name the training engine used before tasks had a torch-free half."""


def class_names_of(meta: TaskSource) -> Sequence[str]:
    """``class_names`` of a manifest (empty when absent)."""
    return [str(name) for name in meta_field(meta, "class_names") or []]
