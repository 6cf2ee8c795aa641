"""``visionops doctor``: what this machine offers visionops."""

from __future__ import annotations

import os
import platform
import shutil
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from visionops import __version__
from visionops.config import Settings
from visionops.errors import DeviceError

__all__ = ["collect_diagnostics"]


def _package_version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def collect_diagnostics(settings: Settings, folder: Path | None = None) -> dict[str, Any]:
    """Gather versions, accelerators, the device ``auto`` picks, disk space and W&B mode.

    Args:
        settings: Resolved settings (their device and tracking mode are reported).
        folder: Working folder whose free disk space is reported (default: current folder).

    Returns:
        A JSON-serialisable mapping.
    """
    import onnxruntime
    import torch

    from visionops.device import resolve_device

    cuda_devices = [
        {
            "index": index,
            "name": torch.cuda.get_device_name(index),
            "memory_gib": round(torch.cuda.get_device_properties(index).total_memory / 2**30, 1),
            "bf16": torch.cuda.is_bf16_supported(),
        }
        for index in range(torch.cuda.device_count() if torch.cuda.is_available() else 0)
    ]
    try:
        auto = resolve_device("auto", amp=settings.train.amp)
        chosen: dict[str, Any] = {
            "device": str(auto.device),
            "reason": auto.reason,
            "precision": auto.precision,
        }
    except DeviceError as exc:  # pragma: no cover - auto never raises today
        chosen = {"device": None, "reason": str(exc), "precision": None}
    requested: dict[str, Any] = {"setting": settings.device}
    try:
        picked = resolve_device(settings.device, amp=settings.train.amp)
        requested.update(device=str(picked.device), ok=True)
    except DeviceError as exc:
        requested.update(device=None, ok=False, error=str(exc))
    usage = shutil.disk_usage(folder or Path.cwd())
    mps = getattr(torch.backends, "mps", None)
    return {
        "visionops": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "packages": {
            name: _package_version(name)
            for name in ("torch", "torchvision", "onnx", "onnxruntime", "numpy", "pillow")
        },
        "torch_threads": torch.get_num_threads(),
        "cuda": {
            "available": torch.cuda.is_available(),
            "version": torch.version.cuda,
            "devices": cuda_devices,
        },
        "mps": bool(mps is not None and mps.is_available()),
        "onnxruntime_providers": onnxruntime.get_available_providers(),
        "auto_device": chosen,
        "requested_device": requested,
        "disk": {
            "folder": str((folder or Path.cwd()).resolve()),
            "free_gib": round(usage.free / 2**30, 1),
            "total_gib": round(usage.total / 2**30, 1),
        },
        "wandb": {
            "mode": settings.tracking.mode,
            "env_mode": os.environ.get("WANDB_MODE"),
            "api_key_set": bool(os.environ.get("WANDB_API_KEY")),
            "installed": _package_version("wandb"),
        },
        "kagglehub_cache": os.environ.get(
            "KAGGLEHUB_CACHE", str(Path.home() / ".cache" / "kagglehub")
        ),
    }
