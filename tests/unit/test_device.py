import pytest
import torch

from visionops.device import resolve_device
from visionops.errors import DeviceError


def test_cpu_is_fp32() -> None:
    choice = resolve_device("cpu")
    assert choice.device == torch.device("cpu")
    assert choice.amp_dtype is None
    assert choice.precision == "fp32"


def test_auto_says_why() -> None:
    choice = resolve_device("auto")
    assert choice.reason
    if not torch.cuda.is_available():
        assert choice.device.type in {"cpu", "mps"}


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("spec", ["cuda", "cuda:1"])
def test_cuda_without_gpu_is_an_error_not_a_fallback(spec: str) -> None:
    with pytest.raises(DeviceError, match=r"no usable CUDA GPU.*--device cpu"):
        resolve_device(spec)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_picks_mixed_precision() -> None:
    choice = resolve_device("cuda")
    assert choice.amp_dtype in {torch.bfloat16, torch.float16}
    assert choice.grad_scaler == (choice.amp_dtype == torch.float16)


def test_unknown_device() -> None:
    with pytest.raises(DeviceError, match="unknown device"):
        resolve_device("tpu")
