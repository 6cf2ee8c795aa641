"""Multi-output regression: standardised targets, MSE, R² and MAE in original units."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
from numpy.typing import NDArray

from visionops.errors import ArtifactError
from visionops.tasks import register_task
from visionops.tasks._base import PredictOptions, Task, meta_field
from visionops.tasks._results import ArrayLikeFloat, Plot, TaskMetrics, finite, headline

if TYPE_CHECKING:
    import torch

__all__ = ["RegressionTask", "regression_metrics", "regression_report"]


def regression_metrics(
    values: NDArray[np.floating[Any]],
    targets: NDArray[np.floating[Any]],
    target_names: Sequence[str] | None = None,
) -> dict[str, float]:
    """R², MAE and RMSE per target and averaged over targets, in the targets' units.

    Args:
        values: ``(N, T)`` predictions in original units.
        targets: ``(N, T)`` true values.
        target_names: Names used in the per-target keys (``r2/<name>``); ``t0``... if None.

    Returns:
        ``{"r2", "mae", "rmse", "r2/<name>", "mae/<name>", "rmse/<name>", ...}``; ``r2`` is
        the mean of the per-target R² (``sklearn.metrics.r2_score``, uniform average).
    """
    from sklearn.metrics import r2_score

    values = np.asarray(values, dtype=np.float64).reshape(len(values), -1)
    targets = np.asarray(targets, dtype=np.float64).reshape(len(targets), -1)
    names = list(target_names) if target_names else [f"t{i}" for i in range(targets.shape[1])]
    if len(targets) < 2:
        r2 = np.full(targets.shape[1], np.nan)
    else:
        r2 = np.atleast_1d(r2_score(targets, values, multioutput="raw_values"))
    mae = np.abs(values - targets).mean(axis=0)
    rmse = np.sqrt(((values - targets) ** 2).mean(axis=0))
    metrics = {"r2": float(r2.mean()), "mae": float(mae.mean()), "rmse": float(rmse.mean())}
    for index, name in enumerate(names):
        metrics[f"r2/{name}"] = float(r2[index])
        metrics[f"mae/{name}"] = float(mae[index])
        metrics[f"rmse/{name}"] = float(rmse[index])
    return metrics


def regression_report(
    values: ArrayLikeFloat,
    targets: ArrayLikeFloat,
    target_names: Sequence[str],
    target_units: Sequence[str] | None = None,
) -> TaskMetrics:
    """Score multi-output regression in the targets' original units.

    The headline is what training reports on val
    (:func:`regression_metrics`: ``r2``, ``mae``, ``rmse``, each
    the mean over targets) plus ``mape``, the mean over targets of the per-target MAPE.

    Args:
        values: ``(N, T)`` predictions in original units.
        targets: ``(N, T)`` true values in original units.
        target_names: The ``T`` target names.
        target_units: Their units (``kcal``, ``g``; empty when unknown).

    Returns:
        Headline metrics; per target MAE, RMSE, R² and MAPE. MAPE is a fraction
        (0.1 = 10 %) over the items whose true value is not 0 (``mape_n`` says how many),
        since it is undefined at 0.

    Raises:
        ArtifactError: Output count differs from the target count.
    """
    from sklearn.metrics import (
        mean_absolute_error,
        mean_absolute_percentage_error,
        r2_score,
        root_mean_squared_error,
    )

    y_pred = np.asarray(values, dtype=np.float64)
    y_true = np.asarray(targets, dtype=np.float64)
    y_pred = y_pred.reshape(len(y_pred), -1)
    y_true = y_true.reshape(len(y_true), -1)
    count = len(target_names)
    if y_pred.shape[1] != count or y_true.shape[1] != count:
        raise ArtifactError(
            f"the model gives {y_pred.shape[1]} outputs but the run names {count} targets"
            " — the checkpoint and run.json disagree; retrain the run"
        )
    units = list(target_units) if target_units else [""] * count
    rows: list[dict[str, Any]] = []
    for i, name in enumerate(target_names):
        truth, guess = y_true[:, i], y_pred[:, i]
        nonzero = truth != 0
        rows.append(
            {
                "target": str(name),
                "unit": str(units[i] or ""),
                "mae": float(mean_absolute_error(truth, guess)),
                "rmse": float(root_mean_squared_error(truth, guess)),
                "r2": finite(r2_score(truth, guess)) if truth.size > 1 else None,
                "mape": float(mean_absolute_percentage_error(truth[nonzero], guess[nonzero]))
                if nonzero.any()
                else None,
                "mape_n": int(nonzero.sum()),
                "true_mean": float(truth.mean()),
                "true_std": float(truth.std()),
            }
        )
    metrics = headline(regression_metrics(y_pred, y_true, list(target_names)))
    mapes = [row["mape"] for row in rows if row["mape"] is not None]
    metrics["mape"] = float(np.mean(mapes)) if mapes else None
    return TaskMetrics(metrics=metrics, rows=rows)


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "_", name).strip("_").lower() or "target"


@register_task
class RegressionTask(Task):
    """Several numbers per image, learned standardised with the train split's mean and std.

    Args:
        target_names: One name per output.
        target_mean: Train-split mean of each target (original units); needed to train and
            export, not to serve (a bundle's graph already de-standardises).
        target_std: Train-split standard deviation of each target.
        target_units: Unit of each target (``kcal``, ``g``; empty when unknown).
    """

    name: ClassVar[str] = "regression"
    main_output: ClassVar[str] = "values"
    row_noun: ClassVar[str] = "target"
    target_kind: ClassVar[Literal["class_index", "multi_hot", "values"]] = "values"
    monitor: ClassVar[str] = "r2"
    mode: ClassVar[Literal["max", "min"]] = "max"
    row_kind: ClassVar[Literal["class", "target"]] = "target"
    rank_rows_by: ClassVar[str | None] = None
    serve_options: ClassVar[frozenset[str]] = frozenset()

    def __init__(
        self,
        target_names: Sequence[str],
        target_mean: Sequence[float] | None = None,
        target_std: Sequence[float] | None = None,
        target_units: Sequence[str] | None = None,
    ) -> None:
        stats = [target_mean, target_std]
        if not target_names or any(s is not None and len(s) != len(target_names) for s in stats):
            raise ArtifactError(
                "the regression manifest lacks target_names, or its target_mean/target_std"
                " do not have one value per target — preprocess it again with"
                " `visionops data preprocess`"
            )
        self.target_names = list(target_names)
        self.target_units = [str(u or "") for u in target_units or [""] * len(target_names)]
        self.target_mean = None if target_mean is None else [float(m) for m in target_mean]
        # A constant target has std 0: divide by 1 instead of producing inf.
        self.target_std = (
            None
            if target_std is None
            else [float(s) if float(s) > 1e-12 else 1.0 for s in target_std]
        )

    @classmethod
    def from_manifest(cls, manifest: Any, *, label_smoothing: float = 0.0) -> RegressionTask:
        """Build from ``target_names``, ``target_mean``, ``target_std`` and ``target_units``."""
        del label_smoothing
        return cls(
            meta_field(manifest, "target_names") or [],
            meta_field(manifest, "target_mean"),
            meta_field(manifest, "target_std"),
            meta_field(manifest, "target_units"),
        )

    @property
    def labels(self) -> list[str]:
        """The target names."""
        return self.target_names

    # ------------------------------------------------------------ torch-free half

    def answer(
        self,
        main: NDArray[np.float32],
        extra: Mapping[str, NDArray[np.float32]],
        options: PredictOptions,
    ) -> dict[str, Any]:
        """Each target's name, value in original units and unit."""
        del extra, options
        names, units = self.target_names, self.target_units
        return {
            "values": [
                {
                    "name": names[i] if i < len(names) else f"target_{i}",
                    "value": float(value),
                    "unit": units[i] if i < len(units) else "",
                }
                for i, value in enumerate(np.atleast_1d(main))
            ]
        }

    @classmethod
    def flat_answer(cls, answer: Mapping[str, Any]) -> dict[str, Any]:
        """One column per target."""
        return {str(v["name"]): v["value"] for v in answer.get("values", [])}

    @classmethod
    def answer_text(cls, answer: Mapping[str, Any]) -> str:
        """Each target's name, value and unit."""
        return ", ".join(
            f"{v['name']} {v['value']:.4g} {v['unit']}".strip() for v in answer["values"]
        )

    def score(self, outputs: NDArray[Any], targets: NDArray[Any]) -> TaskMetrics:
        """See :func:`regression_report`."""
        return regression_report(outputs, targets, self.target_names, self.target_units)

    def plots(
        self, scored: TaskMetrics, outputs: NDArray[Any], targets: NDArray[Any]
    ) -> list[Plot]:
        """One predicted-against-true scatter per target."""
        from visionops.tasks import figures as eval_plots

        truth = np.asarray(targets, np.float64).reshape(len(targets), -1)
        guess = np.asarray(outputs, np.float64).reshape(len(outputs), -1)
        plots = []
        seen: set[str] = set()
        for i, row in enumerate(scored.rows):
            slug = _slug(row["target"])
            filename = f"scatter_{slug}.png" if slug not in seen else f"scatter_{i}_{slug}.png"
            seen.add(slug)
            plots.append(
                Plot(
                    filename,
                    f"Predicted against true {row['target']}; points on the dashed line are exact.",
                    eval_plots.regression_scatter_png(
                        truth[:, i],
                        guess[:, i],
                        name=row["target"],
                        unit=row["unit"],
                        r2=row["r2"],
                        mae=row["mae"],
                    ),
                )
            )
        return plots

    def output_columns(self, main: NDArray[Any]) -> dict[str, NDArray[np.float64]]:
        """One column per target, in original units."""
        values = np.asarray(main, np.float64).reshape(len(main), -1)
        return {name: values[:, i] for i, name in enumerate(self.target_names)}

    # ------------------------------------------------------------- training half

    @property
    def num_outputs(self) -> int:
        """One output per target."""
        return len(self.target_names)

    def _stats(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        import torch

        if self.target_mean is None or self.target_std is None:
            raise ArtifactError(
                "this regression manifest has no target_mean/target_std, which training and"
                " export need — train from a dataset made by `visionops data preprocess`"
            )
        # Made per call, not cached: under torch.export a cached tensor would be a fake one.
        return (
            torch.tensor(self.target_mean, dtype=torch.float32, device=like.device),
            torch.tensor(self.target_std, dtype=torch.float32, device=like.device),
        )

    def encode_targets(self, targets: torch.Tensor) -> torch.Tensor:
        """Standardise: ``(y - mean) / std``."""
        mean, std = self._stats(targets)
        return (targets.float().reshape(len(targets), -1) - mean) / std

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean squared error on standardised targets (each target weighs the same)."""
        from torch.nn import functional

        return functional.mse_loss(outputs.float(), targets)

    def postprocess(self, outputs: torch.Tensor) -> torch.Tensor:
        """Back to original units: ``outputs * std + mean``."""
        mean, std = self._stats(outputs)
        return outputs.float() * std + mean

    def metrics(
        self, predictions: NDArray[np.floating[Any]], targets: NDArray[Any]
    ) -> dict[str, float]:
        """See :func:`regression_metrics`."""
        return regression_metrics(predictions, targets, self.target_names)
