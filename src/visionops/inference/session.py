"""The bundle's ONNX Runtime session, and the pre- and post-processing around it.

Pre-processing is :func:`visionops.imaging.load_image` with the bundle's input spec (the same
function ``data preprocess`` used, so serving and training see identical pixels). The graph
does normalisation and the task's activation itself; post-processing here only turns its
outputs into the answer a client reads (top-k labels, labels over threshold, named values,
anomaly verdict). Never imports torch.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal, cast

import numpy as np
import onnxruntime as ort
from numpy.typing import NDArray
from PIL import Image

from visionops.artifacts import BundleMeta
from visionops.errors import ArtifactError, DeviceError, ImageError
from visionops.imaging import displayed_size, image_statistics, load_image, sniff_format
from visionops.inference.bundle import Bundle
from visionops.tasks import INPUT_KEY, PredictOptions, task_for

__all__ = [
    "CPU_PROVIDER",
    "CUDA_PROVIDER",
    "DecodedImage",
    "ImageTooLargeError",
    "ModelOutputs",
    "ModelSession",
    "Postprocessor",
    "PredictOptions",
    "UnsupportedImageError",
    "available_cores",
    "execution_providers",
]

CPU_PROVIDER = "CPUExecutionProvider"
CUDA_PROVIDER = "CUDAExecutionProvider"


class UnsupportedImageError(ImageError):
    """The bytes are not an image format visionops reads (HTTP 415)."""


class ImageTooLargeError(ImageError):
    """The image has more pixels than the bundle allows (decompression-bomb guard, HTTP 413)."""


def available_cores() -> int:
    """CPU cores this process may run on (cgroup/affinity aware where the OS says)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def execution_providers(
    device: str, available: Sequence[str] | None = None
) -> tuple[list[str], str]:
    """The ONNX Runtime providers for ``--device``, and one sentence on why.

    The bundle's parity with PyTorch was checked on the CPU provider at export. Serving on
    CUDA needs that check repeated on the CUDA provider at load, which this version cannot
    do, so CUDA is refused when asked for and passed over (saying so) by ``auto``: never a
    silent switch to a provider whose answers were not checked.

    Args:
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
        available: Providers this ONNX Runtime has (None: ask it).

    Returns:
        The providers to use, best first, and the reason.

    Raises:
        DeviceError: A device that cannot serve this bundle with checked answers.
    """
    have = list(ort.get_available_providers() if available is None else available)
    if device == "cpu":
        return [CPU_PROVIDER], "--device cpu"
    if device.startswith("cuda"):
        if CUDA_PROVIDER not in have:
            raise DeviceError(
                f"--device {device}: this ONNX Runtime has no CUDA execution provider (it has"
                f" {', '.join(have)}) — install onnxruntime-gpu, or serve with --device cpu"
            )
        raise DeviceError(
            f"--device {device}: the bundle's parity was checked on the CPU only and this"
            " visionops cannot re-check it on CUDA at load — serve with --device cpu"
        )
    if device == "mps":
        raise DeviceError(
            "--device mps: ONNX Runtime has no Apple GPU provider for visionops bundles —"
            " serve with --device cpu"
        )
    if CUDA_PROVIDER in have:
        return [CPU_PROVIDER], (
            "auto: CUDA is present, but parity was checked on the CPU only, so the CPU serves"
        )
    return [CPU_PROVIDER], "auto: this ONNX Runtime has no CUDA execution provider"


@dataclass(frozen=True)
class DecodedImage:
    """One upload after decoding: model-ready pixels plus what the prediction log records.

    Attributes:
        pixels: ``(size, size, C)`` uint8, exactly what ``data preprocess`` would have stored.
        info: Format, width/height as displayed (after EXIF rotation), byte count and pixel
            statistics.
    """

    pixels: NDArray[np.uint8]
    info: dict[str, Any]


@dataclass
class ModelOutputs:
    """One batch's outputs, row-aligned with its inputs."""

    main: NDArray[np.float32]
    embedding: NDArray[np.float32] | None
    extra: dict[str, NDArray[Any]] = field(default_factory=dict)


class ModelSession:
    """An ONNX Runtime session over a bundle's ``model.onnx``.

    ``run`` may be called from any one thread at a time; ONNX Runtime releases the GIL while
    it computes, so the event loop keeps serving health checks and parsing uploads.

    Args:
        bundle: A verified bundle.
        threads: Intra-op threads; 0 uses every core this process may run on.
        precision: ``auto`` runs the int8 model when export kept one (it passed the accuracy
            check), else fp32; ``fp32`` and ``int8`` force one.
        providers: ONNX Runtime execution providers, from :func:`execution_providers`.

    Raises:
        ArtifactError: The graph does not have the inputs or outputs its manifest names, or
            ``int8`` was asked of a bundle without an accepted int8 model.
    """

    def __init__(
        self,
        bundle: Bundle,
        *,
        threads: int = 0,
        precision: str = "auto",
        providers: Sequence[str] = (CPU_PROVIDER,),
    ) -> None:
        self.bundle = bundle
        meta = BundleMeta.model_validate(bundle.manifest)
        int8_path = bundle.int8_model_path
        if precision == "int8" and int8_path is None:
            raise ArtifactError(
                f"bundle {bundle.path} has no accepted int8 model — export it with `visionops"
                " export --force --quantize int8`, or serve with --precision fp32"
            )
        use_int8 = int8_path is not None and precision in {"auto", "int8"}
        self.model_path = int8_path if use_int8 and int8_path else bundle.model_path
        self.precision = "int8" if use_int8 else "fp32"
        spec = meta.input
        self.input_name = spec.name
        self.size = spec.size
        self.channels: Literal[1, 3] = spec.channels
        self.layout = spec.layout
        self.resize = cast(Literal["crop", "letterbox"], spec.resize)
        self.max_pixels = spec.max_image_pixels
        self.main_output = meta.outputs.get("main") or _default_main_output(meta.task)
        self.embedding_output = meta.embedding_output
        self.threads = threads or available_cores()

        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        # Idle ORT threads would otherwise spin on the cores the decode threads and the event
        # loop need (measured: 2 threads went from 14.8 to 21.8 images/s on a busy 2-core box).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.providers = list(providers)
        try:
            self._session = ort.InferenceSession(
                str(self.model_path), options, providers=self.providers
            )
        except Exception as exc:  # ORT raises its own untyped errors for a damaged graph
            raise ArtifactError(
                f"ONNX Runtime cannot load {self.model_path} ({type(exc).__name__}) —"
                " re-export the bundle with `visionops export --force`"
            ) from None
        inputs = {node.name: node for node in self._session.get_inputs()}
        if self.input_name not in inputs:
            raise ArtifactError(
                f"{self.model_path} has no input '{self.input_name}' (it has"
                f" {sorted(inputs)}) — re-export the bundle with `visionops export --force`"
            )
        batch_dim = inputs[self.input_name].shape[0]
        self.fixed_batch: int | None = batch_dim if isinstance(batch_dim, int) else None
        self.output_names = [node.name for node in self._session.get_outputs()]
        for name in (self.main_output, self.embedding_output):
            if name is not None and name not in self.output_names:
                raise ArtifactError(
                    f"{self.model_path} has no output '{name}' (it has {self.output_names})"
                    " — re-export the bundle with `visionops export --force`"
                )

    def decode(self, data: bytes) -> DecodedImage:
        """Check, decode and resize one upload exactly as ``data preprocess`` does.

        Args:
            data: The uploaded file's bytes.

        Returns:
            The model-ready pixels and the facts the prediction log keeps.

        Raises:
            UnsupportedImageError: Not an image signature visionops reads.
            ImageTooLargeError: More pixels than the bundle's ``max_image_pixels``.
            ImageError: The image cannot be decoded (the message says why).
        """
        image_format = sniff_format(data[:16])
        if image_format is None:
            raise UnsupportedImageError(
                "not an image (unknown file signature) — send JPEG, PNG, BMP, GIF, TIFF, WebP"
                " or PNM"
            )
        width, height = _header_size(data, self.max_pixels)
        pixels = load_image(
            data,
            size=self.size,
            channels=self.channels,
            policy=self.resize,
            max_pixels=self.max_pixels,
        )
        info: dict[str, Any] = {
            "format": image_format,
            "width": width,
            "height": height,
            "bytes": len(data),
            **image_statistics(pixels),
        }
        return DecodedImage(pixels=pixels, info=info)

    def run(self, pixels: NDArray[np.uint8]) -> ModelOutputs:
        """Run the graph on a ``(N, H, W, C)`` uint8 batch.

        Args:
            pixels: Stacked outputs of :meth:`decode`.

        Returns:
            The main output and the embedding, one row per image.
        """
        batch = np.ascontiguousarray(
            pixels.transpose(0, 3, 1, 2) if self.layout == "NCHW" else pixels
        )
        if self.fixed_batch is not None and batch.shape[0] != self.fixed_batch:
            return _concat([self.run(pixels[i : i + 1]) for i in range(pixels.shape[0])])
        values = self._session.run(None, {self.input_name: batch})
        named = dict(zip(self.output_names, values, strict=True))
        main = np.asarray(named.pop(self.main_output), dtype=np.float32)
        embedding = None
        if self.embedding_output is not None:
            embedding = np.asarray(named.pop(self.embedding_output), dtype=np.float32)
            embedding = embedding.reshape(embedding.shape[0], -1)
        return ModelOutputs(main=main, embedding=embedding, extra=named)

    def warm_up(self, batch_sizes: tuple[int, ...] = (1,), repeats: int = 2) -> None:
        """Run the graph on grey images so the first real request pays no set-up cost.

        Args:
            batch_sizes: Batch sizes to run (ONNX Runtime plans memory per shape).
            repeats: Runs per batch size.
        """
        for batch_size in batch_sizes:
            grey = np.full((batch_size, self.size, self.size, self.channels), 128, np.uint8)
            for _ in range(repeats):
                self.run(grey)


def _default_main_output(task: str) -> str:
    return {"regression": "values", "anomaly": "score"}.get(task, "probabilities")


def _concat(parts: list[ModelOutputs]) -> ModelOutputs:
    embeddings = [p.embedding for p in parts]
    return ModelOutputs(
        main=np.concatenate([p.main for p in parts]),
        embedding=None
        if any(e is None for e in embeddings)
        else np.concatenate(cast(list[NDArray[np.float32]], embeddings)),
        extra={k: np.concatenate([p.extra[k] for p in parts]) for k in parts[0].extra},
    )


def _header_size(data: bytes, max_pixels: int) -> tuple[int | None, int | None]:
    """Read the displayed width and height from the header alone, refusing bombs first."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = displayed_size(image)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageTooLargeError(
            f"the image has too many pixels (possible decompression bomb); the limit is"
            f" {max_pixels:,} — send a smaller image"
        ) from None
    except Exception:
        # The full decoder, called next, names the precise reason (truncated, corrupt, ...).
        return None, None
    if width * height > max_pixels:
        raise ImageTooLargeError(
            f"the image is {width}x{height} = {width * height:,} pixels, above this model's"
            f" limit of {max_pixels:,} (decompression-bomb guard) — send a smaller image"
        )
    return width, height


class Postprocessor:
    """Turn one row of model outputs into the answer of the bundle's task.

    Args:
        bundle: The bundle (its task, labels, thresholds and units).
        default_top_k: Labels a classification answer lists when the request does not say.
    """

    def __init__(self, bundle: Bundle, default_top_k: int = 5) -> None:
        self.task = task_for(bundle.meta)
        self.default_top_k = default_top_k

    def describe(self) -> dict[str, Any]:
        """The post-processing facts ``/metadata`` reports."""
        return {**self.task.describe(), "default_top_k": self.default_top_k}

    def check(self, options: PredictOptions) -> str | None:
        """Why ``options`` do not apply to this task, or None when they do."""
        return self.task.check_options(options)

    def __call__(
        self,
        outputs: ModelOutputs,
        row: int,
        options: PredictOptions,
        pixels: NDArray[np.uint8] | None = None,
    ) -> dict[str, Any]:
        """The answer for image ``row`` of a batch (see each task's ``answer``).

        Args:
            outputs: The batch's graph outputs.
            row: Which image.
            options: The request's options.
            pixels: The model-sized image (anomaly overlays draw the heatmap on it).
        """
        options = replace(options, default_top_k=self.default_top_k)
        extra = {name: values[row] for name, values in outputs.extra.items()}
        if pixels is not None:
            extra[INPUT_KEY] = pixels
        return self.task.answer(outputs.main[row], extra, options)
