"""One batch of inputs through a bundle: decode, run, answer. Both ``predict`` engines use it.

Decoding, the model call and the answer are exactly ``serve``'s (:class:`ModelSession` and
:class:`Postprocessor`), at the precision ``serve`` would pick (``auto``: int8 when the bundle
carries an accepted int8 model and the session runs on the CPU). An input that cannot be read
or decoded becomes a row with an ``error``, never an abort.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
from numpy.typing import NDArray

from visionops.artifacts import PredictionRecord
from visionops.errors import ImageError
from visionops.inference.bundle import Bundle
from visionops.inference.inputs import InputReader
from visionops.inference.predlog import prediction_record
from visionops.inference.rows import Prediction, RowFormat
from visionops.inference.runtime import CPU_PROVIDER
from visionops.inference.session import (
    DecodedImage,
    ModelSession,
    Postprocessor,
    PredictOptions,
    UnsupportedImageError,
)

__all__ = ["BatchOutcome", "BatchPredictor", "Loaded"]

Loaded = tuple[str, DecodedImage | str]
"""An input and its decoded image, or why it could not be read or decoded."""


@dataclass
class BatchOutcome:
    """One batch's results.

    Attributes:
        predictions: One per input, in input order (failures carry ``error``).
        records: Prediction-log records of the decoded inputs, in order.
        embeddings: ``(len(records), D)`` float32, or None when the graph has none.
        outputs: ``(len(records), K)`` float32: the graph's main output.
    """

    predictions: list[Prediction]
    records: list[PredictionRecord]
    embeddings: NDArray[np.float32] | None
    outputs: NDArray[np.float32]


class BatchPredictor:
    """A bundle's session, post-processing and row columns, for batch prediction.

    Args:
        bundle: A verified bundle.
        threads: ONNX Runtime intra-op threads (0: every core this process may use).
        precision: ``auto`` (``serve``'s default), ``fp32`` or ``int8``.
        providers: ONNX Runtime providers (see ``runtime.execution_providers``).
        top_k: Labels in a classification answer.
        request_id: The job's id in prediction-log records.

    Raises:
        ArtifactError: ``int8`` asked of a bundle without one, or a graph that does not match
            its manifest.
        DeviceError: A provider that does not start or does not reproduce the CPU's outputs.
    """

    def __init__(
        self,
        bundle: Bundle,
        *,
        threads: int = 0,
        precision: str = "auto",
        providers: Sequence[str] = (CPU_PROVIDER,),
        top_k: int = 5,
        request_id: str = "predict",
    ) -> None:
        self.bundle = bundle
        self.session = ModelSession(
            bundle, threads=threads, precision=precision, providers=providers
        )
        self.postprocess = Postprocessor(bundle, default_top_k=top_k)
        self.rows = RowFormat.probe(self.session, self.postprocess, bundle.task)
        self.options = PredictOptions()
        self.request_id = request_id
        self.reader = InputReader()
        self.index = 0

    @property
    def precision(self) -> str:
        """``fp32`` or ``int8``: the graph this predictor runs."""
        return self.session.precision

    def decode(self, path: str, data: bytes) -> Loaded:
        """Decode one input's bytes (any thread); an error becomes its reason."""
        if not data:
            return path, "the file is empty (0 bytes)"
        try:
            return path, self.session.decode(data)
        except UnsupportedImageError:
            return path, (
                "not an image (unknown file signature) — visionops reads JPEG, PNG, BMP, GIF,"
                " TIFF, WebP and PNM"
            )
        except ImageError as error:
            # The session calls its input an upload (the server's word); a row names its file.
            return path, str(error).removeprefix("upload: ")

    def load(self, path: str) -> Loaded:
        """Read and decode one input (any thread); an error becomes its reason."""
        try:
            data = self.reader.read(path)
        except OSError as error:
            return path, f"cannot read it: {error.strerror or error}"
        return self.decode(path, data)

    def predict(self, loaded: Sequence[Loaded]) -> BatchOutcome:
        """Run the decoded inputs of one batch; failures pass through as error rows.

        Args:
            loaded: What :meth:`load` or :meth:`decode` returned, in input order.
        """
        images = [(path, item) for path, item in loaded if isinstance(item, DecodedImage)]
        records: list[PredictionRecord] = []
        answers: list[Prediction] = []
        outputs = np.zeros((0, 0), np.float32)
        embeddings = None
        if images:
            started = time.perf_counter()
            result = self.session.run(np.stack([image.pixels for _, image in images]))
            compute_ms = (time.perf_counter() - started) * 1000
            now = datetime.now(UTC).isoformat()
            outputs = result.main.reshape(len(images), -1)
            embeddings = result.embedding
            for row, (path, image) in enumerate(images):
                answer = self.postprocess(result, row, self.options)
                answers.append(Prediction(path=path, answer=answer, output=outputs[row]))
                records.append(
                    prediction_record(
                        answer,
                        result.main[row],
                        image.info,
                        time=now,
                        request_id=self.request_id,
                        index=self.index,
                        model_version=self.bundle.model_version,
                        task=self.bundle.meta.task,
                        precision=self.session.precision,
                        latency_ms=compute_ms,
                        queue_ms=0.0,
                        compute_ms=compute_ms,
                        batch_size=len(images),
                        source=path,
                    )
                )
                self.index += 1
        done = iter(answers)
        predictions = [
            Prediction(path=path, error=item) if isinstance(item, str) else next(done)
            for path, item in loaded
        ]
        return BatchOutcome(predictions, records, embeddings, outputs)
