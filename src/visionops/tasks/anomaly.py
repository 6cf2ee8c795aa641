"""Anomaly detection: an image score against a threshold, with a pixel heatmap.

The model is a memory bank of good patches (:mod:`visionops.anomaly`), built in one pass
instead of trained by gradient descent; this module is its torch-free face for ``serve``,
``eval`` and ``drift``: the answer for one image, the metrics, the figures, the columns
drift tests.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
from numpy.typing import NDArray

from visionops.imaging import heatmap_overlay
from visionops.tasks import register_task
from visionops.tasks._base import INPUT_KEY, PredictOptions, Task, meta_field
from visionops.tasks._results import Plot, TaskMetrics, finite

if TYPE_CHECKING:
    import torch

__all__ = ["AnomalyTask", "heatmap_png"]


def _png_base64(pixels: NDArray[np.uint8]) -> str:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


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
    low, high = float(anomaly_map.min()), float(anomaly_map.max())
    scaled = (anomaly_map - low) / (high - low) if high > low else np.zeros_like(anomaly_map)
    grey = np.round(scaled * 255).astype(np.uint8)
    answer: dict[str, Any] = {
        "width": int(grey.shape[1]),
        "height": int(grey.shape[0]),
        "min": low,
        "max": high,
        "png_base64": _png_base64(grey),
    }
    if pixels is not None and pixels.shape[:2] == anomaly_map.shape:
        # On the threshold's scale, not per image: mid-ramp at the threshold, brightest at
        # twice it, so a good image stays dark.
        high = 2.0 * threshold if threshold > 0 else high
        answer["overlay_png_base64"] = _png_base64(heatmap_overlay(pixels, anomaly_map, 0.0, high))
    return answer


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
    # A memory bank is built, scored and exported by visionops.anomaly, not by the shared stages.
    own_stages: ClassVar[Mapping[str, str]] = {
        "train": "visionops.anomaly.fit:fit_anomaly",
        "eval": "visionops.anomaly.evaluate:evaluate_anomaly",
        "export": "visionops.anomaly.export:export_anomaly",
    }

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

    def __init__(self, threshold: float = 0.0) -> None:
        self.threshold = threshold

    @classmethod
    def from_manifest(cls, manifest: Any, *, label_smoothing: float = 0.0) -> AnomalyTask:
        """Build from a prepared manifest (no threshold yet), run record or bundle metadata."""
        del label_smoothing
        thresholds = meta_field(manifest, "thresholds") or [0.0]
        return cls(float(thresholds[0]))

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

    def predicted_labels(self, answer: Mapping[str, Any]) -> list[str]:
        """``defect`` or ``good``."""
        return [str(answer.get("verdict"))]

    def score(self, outputs: NDArray[Any], targets: NDArray[Any]) -> TaskMetrics:
        """Image AUROC, F1 and accuracy of scores at the threshold (pixel metrics: eval)."""
        from visionops.anomaly.metrics import anomaly_metrics

        scores = np.asarray(outputs, dtype=np.float64).reshape(-1)
        labels = np.asarray(targets).astype(np.int64).reshape(-1)
        values = anomaly_metrics(scores, labels, self.threshold)
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

    def metrics(
        self, predictions: NDArray[np.floating[Any]], targets: NDArray[Any]
    ) -> dict[str, float]:
        """Image AUROC, F1 and accuracy at the threshold."""
        from visionops.anomaly.metrics import anomaly_metrics

        scores = np.asarray(predictions, dtype=np.float64).reshape(-1)
        return anomaly_metrics(scores, np.asarray(targets).reshape(-1), self.threshold)

    def run_fields(self) -> dict[str, Any]:
        """The threshold, as ``thresholds: [value]``."""
        return {"thresholds": [self.threshold]}
