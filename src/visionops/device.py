"""Device and mixed-precision selection.

``auto`` picks CUDA, then Apple MPS, then CPU, and says why. Asking for a device that is not
there is a :class:`~visionops.errors.DeviceError`, never a silent fallback.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from visionops.errors import DeviceError

__all__ = ["DeviceChoice", "resolve_device"]


@dataclass(frozen=True)
class DeviceChoice:
    """The device to run on and how to use it.

    Attributes:
        device: The torch device.
        reason: One sentence on why this device was picked.
        amp_dtype: Autocast dtype for mixed precision, or None to run in fp32.
        grad_scaler: Whether fp16 training needs a gradient scaler.
    """

    device: torch.device
    reason: str
    amp_dtype: torch.dtype | None
    grad_scaler: bool

    @property
    def precision(self) -> str:
        """Human name of the training precision ("bf16 mixed", "fp16 mixed", "fp32")."""
        if self.amp_dtype is None:
            return "fp32"
        return "bf16 mixed" if self.amp_dtype == torch.bfloat16 else "fp16 mixed"


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def _precision(device: torch.device, amp: bool) -> tuple[torch.dtype | None, bool]:
    if not amp or device.type != "cuda":
        # CPU autocast is slower than fp32 for convnets on most CPUs; MPS autocast is immature.
        return None, False
    if torch.cuda.is_bf16_supported():
        return torch.bfloat16, False
    return torch.float16, True


def resolve_device(spec: str = "auto", *, amp: bool = True) -> DeviceChoice:
    """Turn a ``--device`` value into a concrete device and precision.

    Args:
        spec: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
        amp: Whether mixed precision is wanted where the device supports it.

    Returns:
        The chosen device, the reason, and the mixed-precision dtype (bf16 where supported,
        else fp16 with a gradient scaler; fp32 on CPU and MPS).

    Raises:
        DeviceError: The requested device does not exist on this machine.

    Examples:
        >>> resolve_device("cpu").device
        device(type='cpu')
    """
    if spec == "auto":
        if torch.cuda.is_available():
            device = torch.device("cuda", torch.cuda.current_device())
            reason = f"CUDA is available ({torch.cuda.get_device_name(device)})"
        elif _mps_available():
            device = torch.device("mps")
            reason = "no CUDA GPU, Apple MPS is available"
        else:
            device = torch.device("cpu")
            reason = "no CUDA GPU or Apple MPS found, using the CPU"
    elif spec.startswith("cuda"):
        if not torch.cuda.is_available():
            raise DeviceError(
                f"--device {spec} was asked for but this machine has no usable CUDA GPU"
                f" (torch {torch.__version__}) — use --device cpu or --device auto"
            )
        index = int(spec.split(":", 1)[1]) if ":" in spec else torch.cuda.current_device()
        if index >= torch.cuda.device_count():
            raise DeviceError(
                f"--device {spec}: only {torch.cuda.device_count()} CUDA device(s) here"
                f" — use cuda:0..cuda:{torch.cuda.device_count() - 1}"
            )
        device = torch.device("cuda", index)
        reason = f"asked for {spec} ({torch.cuda.get_device_name(index)})"
    elif spec == "mps":
        if not _mps_available():
            raise DeviceError(
                "--device mps was asked for but Apple MPS is not available here"
                " — use --device cpu or --device auto"
            )
        device, reason = torch.device("mps"), "asked for mps"
    elif spec == "cpu":
        device, reason = torch.device("cpu"), "asked for cpu"
    else:
        raise DeviceError(f"unknown device '{spec}' — use auto, cpu, cuda, cuda:N or mps")
    amp_dtype, scaler = _precision(device, amp)
    return DeviceChoice(device=device, reason=reason, amp_dtype=amp_dtype, grad_scaler=scaler)
