"""Anomaly detection: an image score against a threshold, with a pixel heatmap.

The model is a memory bank of good patches (:mod:`visionops.anomaly`), built in one pass
instead of trained by gradient descent. The shared stages run it through this task's hooks:
``train`` calls :meth:`AnomalyTask.plan_fit` and :meth:`AnomalyTask.fit` (features, coreset,
bank) and places the threshold with :meth:`AnomalyTask.fit_postprocessing`; ``eval`` scores
heatmaps against masks (:meth:`AnomalyTask.score_outputs`) and draws overlays;
``export`` puts the bank in the graph (:meth:`AnomalyTask.graph_outputs`: score, heatmap,
embedding). The torch-free half answers ``serve`` and ``drift``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Final, Literal

import numpy as np
from numpy.typing import NDArray

from visionops.artifacts import AnomalyModelRecord, AnomalyThreshold
from visionops.errors import ArtifactError
from visionops.logs import logger
from visionops.tasks import register_task
from visionops.tasks._base import INPUT_KEY, PredictOptions, Task, meta_field
from visionops.tasks._heatmap import map_png
from visionops.tasks._results import Outputs, Plot, TaskMetrics, finite

if TYPE_CHECKING:
    import torch
    from torch import nn

    from visionops.anomaly.bank import BankPlan
    from visionops.anomaly.features import PatchFeatureExtractor
    from visionops.artifacts import RunRecord
    from visionops.config import AnomalySettings, Settings
    from visionops.progress import ProgressReporter

__all__ = ["AnomalyTask", "heatmap_png"]

_SHOWN: Final = 4
"""Images per overlay figure."""
_CALIBRATION_IMAGES: Final = 64
"""Good images whose BatchNorm statistics a randomly initialised trunk takes (enough to settle)."""
_BATCH: Final = 64


def heatmap_png(
    anomaly_map: NDArray[np.float32],
    pixels: NDArray[Any] | None = None,
    threshold: float = 0.0,
) -> dict[str, Any]:
    """An anomaly map as PNGs for an answer, base64-encoded.

    Args:
        anomaly_map: ``(H, W)`` patch distances.
        pixels: The image the map belongs to; adds ``overlay_png_base64``
            (:func:`heatmap_overlay` from 0 to twice the threshold).
        threshold: The image-score threshold in use.

    Returns:
        ``width``, ``height``, ``min``, ``max``, ``png_base64`` (8-bit greyscale, min..max
        stretched to 0..255) and, with ``pixels``, ``overlay_png_base64``.
    """
    # On the threshold's scale, not per image: mid-ramp at the threshold, brightest at
    # twice it, so a good image stays dark.
    return map_png(anomaly_map, pixels, low=0.0, high=2.0 * threshold if threshold > 0 else None)


@register_task
class AnomalyTask(Task):
    """Good vs defect from a memory-bank score; ``threshold`` is the run's.

    Args:
        threshold: Images scoring at or above it are defects.
    """

    name: ClassVar[str] = "anomaly"
    main_output: ClassVar[str] = "score"
    monitor: ClassVar[str] = "image_auroc"
    mode: ClassVar[Literal["max", "min"]] = "max"
    rank_rows_by: ClassVar[str | None] = None
    serve_options: ClassVar[frozenset[str]] = frozenset({"threshold", "heatmap"})
    trained_by_gradient: ClassVar[bool] = False
    has_masks: ClassVar[bool] = True
    extra_outputs: ClassVar[tuple[str, ...]] = ("heatmap",)
    # Distances subtract numbers of similar size (|x|² - 2x·m + |m|²): reduced precision,
    # like 8-bit products there, would erase the very differences the score measures. Only
    # the trunk's convolutions are quantised; ONNX Runtime's symbolic shape inference cannot
    # follow the chunked search.
    mixed_precision: ClassVar[bool] = False
    int8_op_types: ClassVar[tuple[str, ...] | None] = ("Conv",)
    int8_symbolic_shapes: ClassVar[bool] = False

    @classmethod
    def training_data_problem(cls, names: Sequence[str], train: NDArray[Any]) -> str | None:
        """No good image to learn from."""
        del names
        if not np.any(train == 0):
            return (
                "no good image in the train split — anomaly detection learns from good images"
                " (MVTec: train/good/)"
            )
        return None

    def __init__(self, threshold: float = 0.0, record: AnomalyModelRecord | None = None) -> None:
        self.threshold = threshold
        self.record = record
        self._fit: tuple[AnomalySettings, int, PatchFeatureExtractor, BankPlan, bool] | None = None

    @classmethod
    def from_manifest(cls, manifest: Any, *, label_smoothing: float = 0.0) -> AnomalyTask:
        """Build from a prepared manifest (no threshold yet), run record or bundle metadata."""
        del label_smoothing
        thresholds = meta_field(manifest, "thresholds") or [0.0]
        record = meta_field(manifest, "anomaly")
        return cls(
            float(thresholds[0]),
            AnomalyModelRecord.model_validate(record) if record is not None else None,
        )

    @property
    def labels(self) -> list[str]:
        """``good`` and ``defect``."""
        return ["good", "defect"]

    @property
    def num_outputs(self) -> int:
        """One score."""
        return 1

    def answer(
        self,
        main: NDArray[np.float32],
        extra: Mapping[str, NDArray[np.float32]],
        options: PredictOptions,
    ) -> dict[str, Any]:
        """Score, threshold, verdict and (when asked) the heatmap PNG."""
        score = float(np.asarray(main).reshape(-1)[0])
        threshold = options.threshold if options.threshold is not None else self.threshold
        answer: dict[str, Any] = {
            "score": score,
            "threshold": threshold,
            "is_anomaly": score >= threshold,
            "verdict": "defect" if score >= threshold else "good",
            "heatmap": None,
        }
        if options.heatmap and "heatmap" in extra:
            anomaly_map = np.asarray(extra["heatmap"], np.float32)
            pixels = extra.get(INPUT_KEY)
            answer["heatmap"] = heatmap_png(
                anomaly_map.reshape(anomaly_map.shape[-2:]), pixels, threshold
            )
        return answer

    def describe(self) -> dict[str, Any]:
        """The threshold in use."""
        return {"thresholds": self.threshold}

    def heatmap_support(self) -> dict[str, Any]:
        """Always: the patch distances to the memory bank, upsampled and smoothed."""
        return {
            "available": True,
            "kind": "anomaly_map",
            "detail": "each patch's distance to the nearest good patch, upsampled and smoothed"
            " to the input",
        }

    def predicted_labels(self, answer: Mapping[str, Any]) -> list[str]:
        """``defect`` or ``good``."""
        return [str(answer.get("verdict"))]

    def score(self, outputs: NDArray[Any], targets: NDArray[Any]) -> TaskMetrics:
        """Image AUROC, F1 and accuracy of scores at the threshold (pixel metrics: eval)."""
        return self.score_outputs(Outputs(outputs, targets))

    def score_outputs(self, outputs: Outputs) -> TaskMetrics:
        """Image metrics at the threshold and, where the split has masks, pixel AUROC and AUPRO."""
        scores = np.asarray(outputs.main, dtype=np.float64).reshape(-1)
        labels = np.asarray(outputs.targets).astype(np.int64).reshape(-1)
        values = self.quick_metrics(outputs)
        verdicts = scores >= self.threshold
        rows = [
            {
                "class": name,
                "support": int((labels == code).sum()),
                "flagged": int(verdicts[labels == code].sum()),
                "mean_score": finite(float(scores[labels == code].mean()))
                if (labels == code).any()
                else None,
            }
            for code, name in enumerate(self.labels)
        ]
        return TaskMetrics(
            {k: finite(v) for k, v in values.items()}, rows, {"threshold": self.threshold}
        )

    def plots(
        self, scored: TaskMetrics, outputs: NDArray[Any], targets: NDArray[Any]
    ) -> list[Plot]:
        """The score histogram (heatmap overlays need the images: :mod:`visionops.anomaly`)."""
        from visionops.anomaly.plots import score_histogram_png

        del scored
        return [
            Plot(
                "score_histogram.png",
                "Image scores of good and defective images; the dashed line is the threshold.",
                score_histogram_png(
                    np.asarray(outputs, np.float64).reshape(-1), np.asarray(targets), self.threshold
                ),
            )
        ]

    def eval_plots(self, scored: TaskMetrics, outputs: Outputs) -> list[Plot]:
        """The score histogram, and heatmap overlays of the worst misses and false alarms."""
        from visionops.anomaly.plots import overlays_png

        plots = self.plots(scored, outputs.main, outputs.targets)
        heatmaps = outputs.extra.get("heatmap")
        if heatmaps is None or outputs.images is None or outputs.indices is None:
            return plots
        scores = np.asarray(outputs.main, np.float64).reshape(-1)
        labels = np.asarray(outputs.targets).reshape(-1)
        masks, indices, threshold = outputs.masks, outputs.indices, self.threshold
        low, high = float(np.percentile(heatmaps, 1)), float(np.percentile(heatmaps, 99.9))
        defects, goods = np.flatnonzero(labels == 1), np.flatnonzero(labels == 0)
        missed = int((scores[defects] < threshold).sum())
        alarms = int((scores[goods] >= threshold).sum())
        # (rows, caption, title, verdict of a row scoring at or above the threshold, below)
        chosen = {
            "worst_misses.png": (
                defects[np.argsort(scores[defects])][:_SHOWN],
                "Defective images with the lowest scores, the nearest to being missed (red:"
                " heatmap, cyan: true defect).",
                f"lowest-scoring defects: {missed} of {len(defects)} missed",
                ("caught", "MISSED"),
            ),
            "false_alarms.png": (
                goods[np.argsort(-scores[goods])][:_SHOWN],
                "Good images with the highest scores, the nearest to a false alarm (red: heatmap).",
                f"highest-scoring good images: {alarms} of {len(goods)} false alarms",
                ("FALSE ALARM", "passed"),
            ),
        }
        for filename, (rows, caption, title, (above, below)) in chosen.items():
            if not len(rows):
                continue
            png = overlays_png(
                [np.asarray(outputs.images[indices[row]]) for row in rows],
                [heatmaps[row] for row in rows],
                [masks[row] if masks is not None else None for row in rows],
                [
                    f"#{int(indices[row])} score {scores[row]:.3g}"
                    f" ({above if scores[row] >= threshold else below})"
                    for row in rows
                ],
                low=low,
                high=high,
                title=title,
            )
            plots.append(Plot(filename, caption, png))
        return plots

    def quick_metrics(self, outputs: Outputs) -> dict[str, float]:
        """Image AUROC, F1 and accuracy; pixel AUROC and AUPRO where the split has masks."""
        from visionops.anomaly.metrics import anomaly_metrics

        masks = outputs.masks
        with_masks = masks is not None and bool(masks.any()) and "heatmap" in outputs.extra
        return anomaly_metrics(
            np.asarray(outputs.main, np.float64).reshape(-1),
            np.asarray(outputs.targets).reshape(-1),
            self.threshold,
            outputs.extra["heatmap"] if with_masks else None,
            masks if with_masks else None,
        )

    def saved_outputs(self, outputs: Outputs) -> dict[str, NDArray[Any]]:
        """The heatmaps, as float16."""
        heatmaps = outputs.extra.get("heatmap")
        return {} if heatmaps is None else {"heatmaps": heatmaps.astype(np.float16)}

    def learns_from(self, targets: NDArray[Any]) -> NDArray[np.bool_]:
        """Good images: the bank holds what normal looks like."""
        good: NDArray[np.bool_] = np.asarray(targets).reshape(len(targets), -1)[:, 0] == 0
        return good

    def output_columns(self, main: NDArray[Any]) -> dict[str, NDArray[np.float64]]:
        """The score, for drift's distribution test."""
        return {"score": np.asarray(main, dtype=np.float64).reshape(len(main), -1)[:, 0]}

    def predicted_classes(self, main: NDArray[Any]) -> NDArray[np.int64] | None:
        """1 where the score reaches the threshold (the verdict mix drift compares)."""
        scores = np.asarray(main, dtype=np.float64).reshape(len(main), -1)[:, 0]
        return (scores >= self.threshold).astype(np.int64)

    def postprocess(self, outputs: torch.Tensor) -> torch.Tensor:
        """The score is the output; nothing to apply."""
        return outputs

    def graph_outputs(self, model: nn.Module, normalised: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``(score (B,), heatmap (B, H, W), embedding (B, D))``: the bank is in the model."""
        outputs: tuple[torch.Tensor, ...] = model(normalised)
        return outputs

    def load_model(self, run_dir: Path, which: str = "best") -> tuple[nn.Module, RunRecord]:
        """Rebuild the memory-bank model from its checkpoint's ``anomaly`` record."""
        from visionops.anomaly.scoring import build_patchcore
        from visionops.runs import load_checkpoint, read_run_manifest

        run = read_run_manifest(run_dir)
        path = run_dir / "checkpoints" / f"{which}.pt"
        checkpoint = load_checkpoint(path)
        record = checkpoint.get("anomaly")
        if run.task != self.name or not isinstance(record, dict):
            raise ArtifactError(
                f"{path} is not an anomaly-detection checkpoint — pass a run trained on an"
                " anomaly dataset"
            )
        spec = run.model
        try:
            model = build_patchcore(
                spec.name, spec.channels, AnomalyModelRecord.model_validate(record)
            )
            model.load_state_dict(dict(checkpoint["model"]))
        except (KeyError, RuntimeError, ValueError) as exc:
            raise ArtifactError(
                f"{path} does not fit a {spec.name} anomaly model"
                f" ({str(exc).splitlines()[0][:120]}) — the checkpoint belongs to another run"
            ) from None
        return model.eval(), run

    def plan_fit(
        self,
        settings: Settings,
        *,
        images: int,
        image_size: int,
        channels: int,
        val_targets: NDArray[Any],
    ) -> int:
        """Size the memory bank (refusing one above ``anomaly.max_bank_mb``).

        Returns:
            The length of one bank feature.

        Raises:
            TrainingError: No good training image, or a bank over the limit.
            ConfigError: A backbone without the requested layers.
            DataError: A validation split without good images (no threshold possible).
        """
        from visionops.anomaly.bank import plan_bank
        from visionops.anomaly.features import PatchFeatureExtractor
        from visionops.anomaly.threshold import choose_threshold

        labels = np.asarray(val_targets).reshape(-1)
        if labels.size == 0 or labels.all():
            # What choose_threshold would refuse after the work, refused before it.
            choose_threshold(np.zeros(labels.size), labels)

        options = settings.anomaly
        extractor = PatchFeatureExtractor.build(
            settings.model.name,
            channels=channels,
            layers=options.layers,
            pretrained=settings.model.pretrained,
            weights=Path(settings.model.weights) if settings.model.weights else None,
            image_size=image_size,
            projection_dim=options.projection_dim,
            seed=settings.train.seed,
        )
        plan = plan_bank(
            extractor, images=images, image_size=image_size, channels=channels, settings=options
        )
        logger.info(
            "memory bank of {} ({}, {}px): {}",
            settings.model.name,
            f"{images} good images",
            image_size,
            plan.describe(),
        )
        starts_trained = bool(settings.model.pretrained) or settings.model.weights is not None
        self._fit = (options, settings.train.seed, extractor, plan, starts_trained)
        return plan.dim

    def fit(
        self,
        images: NDArray[np.uint8],
        mean: Sequence[float],
        std: Sequence[float],
        *,
        device: torch.device,
        progress: ProgressReporter,
    ) -> nn.Module:
        """Features of every good image, their coreset as the bank; the threshold comes later."""
        from visionops.anomaly.bank import build_memory_bank
        from visionops.anomaly.features import calibrate_batchnorm, normalised_batches
        from visionops.anomaly.scoring import PatchCoreModel, sigma_for_size

        if self._fit is None:
            raise RuntimeError("plan_fit() comes before fit()")
        options, seed, extractor, plan, pretrained = self._fit
        extractor = extractor.to(device)
        if not pretrained:
            calibration = images[:_CALIBRATION_IMAGES]
            calibrate_batchnorm(
                extractor, list(normalised_batches(calibration, mean, std, _BATCH, device))
            )
        bank = build_memory_bank(
            extractor,
            normalised_batches(images, mean, std, _BATCH, device),
            plan,
            settings=options,
            seed=seed,
            progress=progress,
        )
        size = int(images.shape[1])
        sigma = sigma_for_size(options.sigma, size)
        model = PatchCoreModel(extractor, bank, image_size=size, sigma=sigma, chunk=options.chunk)
        projection = extractor.projection
        self.record = AnomalyModelRecord(
            layers=list(options.layers),
            threshold=AnomalyThreshold(value=self.threshold, method="f1"),
            bank_size=int(bank.shape[0]),
            feature_dim=int(bank.shape[1]),
            image_size=size,
            sigma=sigma,
            chunk=options.chunk,
            projection_dim=int(projection.shape[1]) if projection is not None else None,
            patches_per_image=plan.patches_per_image,
            bank_mb=round(plan.bank_mb, 3),
            bytes_per_image=plan.bytes_per_image,
        )
        return model.eval()

    def metrics(
        self, predictions: NDArray[np.floating[Any]], targets: NDArray[Any]
    ) -> dict[str, float]:
        """Image AUROC, F1 and accuracy at the threshold."""
        from visionops.anomaly.metrics import anomaly_metrics

        scores = np.asarray(predictions, dtype=np.float64).reshape(-1)
        return anomaly_metrics(scores, np.asarray(targets).reshape(-1), self.threshold)

    def fit_postprocessing(
        self, predictions: NDArray[np.floating[Any]], targets: NDArray[Any]
    ) -> None:
        """Place the threshold on validation scores (F1-optimal, or a false-positive rate).

        Raises:
            DataError: No validation image, or no good one among them.
        """
        from visionops.anomaly.threshold import choose_threshold

        target_fpr = self._fit[0].target_fpr if self._fit is not None else 0.05
        chosen = choose_threshold(
            np.asarray(predictions).reshape(-1), np.asarray(targets), target_fpr=target_fpr
        )
        self.threshold = chosen.value
        if self.record is not None:
            self.record.threshold = AnomalyThreshold(
                value=chosen.value, method=chosen.method, target_fpr=chosen.target_fpr
            )
        logger.info(
            "threshold {:.4g} ({}) from {} validation images",
            chosen.value,
            "F1-optimal" if chosen.method == "f1" else f"false-positive rate {target_fpr:g}",
            len(targets),
        )

    def run_fields(self) -> dict[str, Any]:
        """The threshold, as ``thresholds: [value]``, and the bank's ``anomaly`` record."""
        if self.record is None:  # not built yet
            return {"thresholds": None, "anomaly": None}
        return {"thresholds": [self.threshold], "anomaly": self.record}
