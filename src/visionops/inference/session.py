"""The bundle's ONNX Runtime session, and the pre- and post-processing around it.

Pre-processing is :func:`visionops.imaging.load_image` with the bundle's input spec (the same
function ``data preprocess`` used, so serving and training see identical pixels). The graph
does normalisation and the task's activation itself; post-processing here only turns its
outputs into the answer a client reads (top-k labels, labels over threshold, named values,
anomaly verdict). Never imports torch.
"""

from __future__ import annotations

import io
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal, cast

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from visionops.artifacts import LoggedImage
from visionops.errors import ArtifactError, DeviceError, ImageError
from visionops.image_quality import quality_statistics
from visionops.imaging import (
    displayed_size,
    image_statistics,
    load_image_and_source,
    sniff_format,
)
from visionops.inference.budget import CpuBudget
from visionops.inference.bundle import Bundle
from visionops.inference.runtime import (
    CPU_PROVIDER,
    available_cores,
    ort_session,
    verify_provider_parity,
)
from visionops.tasks import INPUT_KEY, PredictOptions, task_for

__all__ = [
    "DecodedImage",
    "ImageTooLargeError",
    "ModelOutputs",
    "ModelSession",
    "Postprocessor",
    "PredictOptions",
    "UnsupportedImageError",
]


class UnsupportedImageError(ImageError):
    """The bytes are not an image format visionops reads (HTTP 415)."""


class ImageTooLargeError(ImageError):
    """The image has more pixels than the bundle allows (decompression-bomb guard, HTTP 413)."""


@dataclass(frozen=True)
class DecodedImage:
    """One upload after decoding: model-ready pixels plus what the prediction log records.

    Attributes:
        pixels: ``(size, size, C)`` uint8, exactly what ``data preprocess`` would have stored.
        info: Format, width/height as displayed (after EXIF rotation), byte count and pixel
            statistics (left out of the uploads that the session's statistics budget did not
            admit): what the prediction log keeps as the record's ``image``.
    """

    pixels: NDArray[np.uint8]
    info: LoggedImage


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
            check) and the session runs on the CPU, else fp32; ``fp32`` and ``int8`` force one.
        providers: ONNX Runtime execution providers, from
            :func:`~visionops.inference.runtime.execution_providers`. On any other than the
            CPU, the bundle's parity samples are rerun at load.
        statistics_budget: The share of the CPU the image statistics of :meth:`decode` may
            take (serve's ``drift.statistics_cpu_share``); None measures every image.

    Raises:
        ArtifactError: The graph does not have the inputs or outputs its manifest names, or
            ``int8`` was asked of a bundle without an accepted int8 model.
        DeviceError: The first provider does not start, ``int8`` was asked on a GPU, or the
            GPU does not reproduce the outputs export verified on the CPU.
    """

    def __init__(
        self,
        bundle: Bundle,
        *,
        threads: int = 0,
        precision: str = "auto",
        providers: Sequence[str] = (CPU_PROVIDER,),
        statistics_budget: CpuBudget | None = None,
    ) -> None:
        self.bundle = bundle
        self.statistics_budget = statistics_budget
        meta = bundle.meta
        int8_path = bundle.int8_model_path
        if precision == "int8" and int8_path is None:
            raise ArtifactError(
                f"bundle {bundle.path} has no accepted int8 model — export it with `visionops"
                " export --force --quantize int8`, or serve with --precision fp32"
            )
        on_cpu = providers[0] == CPU_PROVIDER
        if precision == "int8" and not on_cpu:
            raise DeviceError(
                f"--precision int8 was checked on the CPU only, not on {providers[0]} — serve"
                " with --precision fp32, or with --device cpu"
            )
        use_int8 = int8_path is not None and precision in {"auto", "int8"} and on_cpu
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
        self.providers = list(providers)
        self._session = ort_session(
            self.model_path,
            self.threads,
            providers=self.providers,
            sequential=True,
            spinning=False,
        )
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
        if not on_cpu:
            verify_provider_parity(bundle, session=self._session)

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
        image, pixels = load_image_and_source(
            data,
            size=self.size,
            channels=self.channels,
            policy=self.resize,
            max_pixels=self.max_pixels,
        )
        facts: dict[str, Any] = {
            "format": image_format,
            "width": width,
            "height": height,
            "bytes": len(data),
        }
        budget = self.statistics_budget
        if budget is None or budget.admit():
            started = time.thread_time()
            facts.update(image_statistics(pixels))
            facts.update(quality_statistics(image, pixels, data, width))
            if budget is not None:
                budget.spend(time.thread_time() - started)
        return DecodedImage(pixels=pixels, info=LoggedImage.model_validate(facts))

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
        return {
            **self.task.describe(),
            "default_top_k": self.default_top_k,
            "heatmap": self.task.heatmap_support(),
        }

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
