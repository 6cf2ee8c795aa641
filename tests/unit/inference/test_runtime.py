"""``visionops.inference.runtime``: sessions, batched prediction, parity on other providers,
and :class:`ModelSession` re-checking that parity when it loads off the CPU.

Uses the tiny torch-free bundle of bundle_helpers.py; the real exported bundles are checked
in test_export.py.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from bundle_helpers import images, make_bundle, tiny_graph
from visionops.errors import ArtifactError, DeviceError
from visionops.inference.bundle import load_bundle
from visionops.inference.runtime import (
    CPU_PROVIDER,
    CUDA_PROVIDER,
    available_cores,
    check_provider_parity,
    execution_providers,
    onnx_predict,
    ort_session,
    to_layout,
    verify_provider_parity,
)
from visionops.inference.session import ModelSession

NO_CUDA = CUDA_PROVIDER not in ort.get_available_providers()
WITH_CUDA = [CUDA_PROVIDER, CPU_PROVIDER]
OFF_CPU = "AzureExecutionProvider"
"""A provider other than the CPU that CPU builds of ONNX Runtime have: stands in for CUDA."""
needs_off_cpu = pytest.mark.skipif(
    OFF_CPU not in ort.get_available_providers(), reason=f"this ONNX Runtime has no {OFF_CPU}"
)


def test_to_layout() -> None:
    batch = images(2)
    assert to_layout(batch, "NCHW").shape == (2, 3, 4, 4)
    assert to_layout(batch, "NCHW").flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(to_layout(batch, "NHWC"), batch)


def test_predict_in_batches_equals_one_batch(tmp_path: Path) -> None:
    tiny_graph(tmp_path / "m.onnx")
    session = ort_session(tmp_path / "m.onnx", threads=1)
    batch = images(7)
    main, embedding = onnx_predict(session, batch, "NCHW", batch_size=3)
    whole_main, whole_embedding = onnx_predict(session, batch, "NCHW", batch_size=32)
    assert main.shape == (7, 3) and embedding.shape == (7, 3)
    np.testing.assert_allclose(main, whole_main, atol=1e-7)
    np.testing.assert_allclose(embedding, batch.reshape(7, -1, 3).mean(axis=1), rtol=1e-5)
    swapped, _ = onnx_predict(session, batch, "NCHW", output_names=["embedding", "probabilities"])
    np.testing.assert_allclose(swapped, whole_embedding, atol=1e-7)


def test_damaged_graph_names_re_export(tmp_path: Path) -> None:
    (tmp_path / "m.onnx").write_bytes(b"not a graph")
    with pytest.raises(ArtifactError, match="visionops export --force"):
        ort_session(tmp_path / "m.onnx")


@pytest.mark.skipif(not NO_CUDA, reason="this ONNX Runtime has the CUDA provider")
def test_a_provider_that_cannot_start_is_an_error_not_a_fallback(tmp_path: Path) -> None:
    tiny_graph(tmp_path / "m.onnx")
    # ONNX Runtime itself would quietly run this on the CPU.
    with pytest.raises(DeviceError, match="could not start CUDAExecutionProvider"):
        ort_session(tmp_path / "m.onnx", providers=[CUDA_PROVIDER, CPU_PROVIDER])


def test_provider_parity_on_the_cpu_passes(tmp_path: Path) -> None:
    bundle = load_bundle(make_bundle(tmp_path / "bundle"))
    record = verify_provider_parity(bundle, [CPU_PROVIDER])
    assert record.passed
    assert record.providers == (CPU_PROVIDER,)
    assert record.images == 6
    assert set(record.max_abs_diff) == {"probabilities", "embedding"}
    assert record.bound["probabilities"] == pytest.approx(1e-4)


def test_provider_parity_catches_a_session_that_answers_differently(tmp_path: Path) -> None:
    # A session computing something else (here: the int8 graph, which divides by 63, not 64)
    # is what a provider with a wrong kernel looks like: outputs beyond the bound.
    bundle = load_bundle(make_bundle(tmp_path / "bundle", int8=True))
    assert bundle.int8_model_path is not None
    other = ort_session(bundle.int8_model_path)
    record = check_provider_parity(bundle, session=other)
    assert not record.passed
    assert record.failures[0].startswith("probabilities differs by up to")
    with pytest.raises(DeviceError) as error:
        verify_provider_parity(bundle, session=other)
    message = str(error.value)
    assert "does not reproduce its verified CPU outputs on CPUExecutionProvider" in message
    assert "--device cpu" in message
    assert "\n" not in message


def test_provider_parity_needs_the_samples(tmp_path: Path) -> None:
    bundle = load_bundle(make_bundle(tmp_path / "bundle", samples=False))
    with pytest.raises(ArtifactError, match=r"no parity\.npz .*visionops export --force"):
        check_provider_parity(bundle, [CPU_PROVIDER])


@needs_off_cpu
def test_a_session_off_the_cpu_re_checks_parity_at_load(tmp_path: Path) -> None:
    checked = ModelSession(load_bundle(make_bundle(tmp_path / "good")), threads=1,
                           providers=[OFF_CPU, CPU_PROVIDER])  # fmt: skip
    assert checked.providers == [OFF_CPU, CPU_PROVIDER]
    wrong = load_bundle(make_bundle(tmp_path / "wrong", sample_scale=63.0))
    with pytest.raises(DeviceError, match=f"verified CPU outputs on {OFF_CPU}.*--device cpu"):
        ModelSession(wrong, threads=1, providers=[OFF_CPU, CPU_PROVIDER])


@needs_off_cpu
def test_int8_runs_on_the_cpu_only(tmp_path: Path) -> None:
    bundle = load_bundle(make_bundle(tmp_path / "bundle", int8=True))
    assert ModelSession(bundle, threads=1).precision == "int8"
    assert ModelSession(bundle, threads=1, providers=[OFF_CPU, CPU_PROVIDER]).precision == "fp32"
    with pytest.raises(DeviceError, match="int8 was checked on the CPU only"):
        ModelSession(bundle, threads=1, precision="int8", providers=[OFF_CPU, CPU_PROVIDER])


@pytest.mark.skipif(not NO_CUDA, reason="this ONNX Runtime has the CUDA provider")
def test_a_session_on_a_cuda_that_cannot_start_is_refused(tmp_path: Path) -> None:
    bundle = load_bundle(make_bundle(tmp_path / "bundle"))
    with pytest.raises(DeviceError, match="could not start CUDAExecutionProvider"):
        ModelSession(bundle, threads=1, providers=[CUDA_PROVIDER, CPU_PROVIDER])


# ------------------------------------------------------------------ --device


def test_cpu_and_auto_serve_on_the_cpu_and_say_why() -> None:
    assert execution_providers("cpu", WITH_CUDA) == ([CPU_PROVIDER], "--device cpu")
    providers, reason = execution_providers("auto", [CPU_PROVIDER])
    assert providers == [CPU_PROVIDER]
    assert "no CUDA" in reason
    # CUDA present: auto does not switch providers unasked.
    providers, reason = execution_providers("auto", WITH_CUDA)
    assert providers == [CPU_PROVIDER]
    assert "--device cuda re-checks the bundle's parity" in reason


def test_cuda_is_asked_for_and_its_parity_re_checked() -> None:
    providers, reason = execution_providers("cuda", WITH_CUDA)
    assert providers == [CUDA_PROVIDER, CPU_PROVIDER]
    assert "parity samples re-checked" in reason
    assert execution_providers("cuda:0", WITH_CUDA)[0] == providers


def test_cuda_is_never_a_silent_fallback() -> None:
    with pytest.raises(DeviceError, match="install onnxruntime-gpu, or serve with --device cpu"):
        execution_providers("cuda", [CPU_PROVIDER])
    with pytest.raises(DeviceError, match=r"cuda:1.*CUDA_VISIBLE_DEVICES=1 and --device cuda"):
        execution_providers("cuda:1", WITH_CUDA)
    with pytest.raises(DeviceError, match="--device cpu"):
        execution_providers("mps", WITH_CUDA)


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({"cpu.max": "max 100000\n"}, None),  # cgroup v2, no limit
        ({"cpu.max": "150000 100000\n"}, 2),  # 1.5 cores: 2 threads sharing the time
        ({"cpu.max": "100000 100000\n"}, 1),
        ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),  # v1
        ({"cpu/cpu.cfs_quota_us": "100000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 1),
        ({}, None),  # no cgroup file system (macOS, a bare VM)
    ],
)
def test_available_cores_follows_a_container_cpu_limit(
    tmp_path: Path, files: dict[str, str], expected: int | None
) -> None:
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    unlimited = len(os.sched_getaffinity(0))
    assert available_cores(tmp_path) == min(unlimited, expected or unlimited)
