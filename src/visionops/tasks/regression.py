"""Multi-output regression: standardised targets, MSE, R² and MAE in original units."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from numpy.typing import NDArray
from torch.nn import functional

from visionops.errors import ArtifactError
from visionops.tasks._base import TrainingTask

__all__ = ["RegressionTask", "regression_metrics"]


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


class RegressionTask(TrainingTask):
    """Several numbers per image, learned standardised with the train split's mean and std.

    Args:
        target_names: One name per output.
        target_mean: Train-split mean of each target (original units).
        target_std: Train-split standard deviation of each target.
    """

    name: ClassVar[str] = "regression"
    monitor: ClassVar[str] = "r2"
    mode: ClassVar[Literal["max", "min"]] = "max"

    def __init__(
        self,
        target_names: Sequence[str],
        target_mean: Sequence[float],
        target_std: Sequence[float],
    ) -> None:
        if (
            not target_names
            or len(target_mean) != len(target_names)
            or len(target_std) != len(target_names)
        ):
            raise ArtifactError(
                "the regression dataset's manifest lacks target_names/target_mean/target_std"
                " of equal length — preprocess it again with `visionops data preprocess`"
            )
        self.target_names = list(target_names)
        # A constant target has std 0: divide by 1 instead of producing inf.
        std = [float(s) if float(s) > 1e-12 else 1.0 for s in target_std]
        self._mean = torch.tensor([float(m) for m in target_mean], dtype=torch.float32)
        self._std = torch.tensor(std, dtype=torch.float32)

    @classmethod
    def from_manifest(
        cls, manifest: Mapping[str, Any], *, label_smoothing: float = 0.0
    ) -> RegressionTask:
        """Build from ``target_names``, ``target_mean`` and ``target_std``."""
        del label_smoothing
        return cls(
            manifest.get("target_names") or [],
            manifest.get("target_mean") or [],
            manifest.get("target_std") or [],
        )

    @property
    def num_outputs(self) -> int:
        """One output per target."""
        return len(self.target_names)

    def _stats(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self._mean.device != like.device:
            self._mean = self._mean.to(like.device)
            self._std = self._std.to(like.device)
        return self._mean, self._std

    def encode_targets(self, targets: torch.Tensor) -> torch.Tensor:
        """Standardise: ``(y - mean) / std``."""
        mean, std = self._stats(targets)
        return (targets.float().reshape(len(targets), -1) - mean) / std

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean squared error on standardised targets (each target weighs the same)."""
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
