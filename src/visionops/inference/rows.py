"""One prediction as a row: the same columns from the local engine and the Ray engine.

A row is ``path`` (the input as listed), the task's flat answer columns (``label``,
``probability`` for classification; see each task's ``flat_answer``), ``output`` (the graph's
main output, float32: what drift and parity checks compare) and ``error`` (why the file could
not be read or decoded; the other columns are then empty). The columns come from the answer
to one grey image, so they are known before the first real image and every writer, shard and
Ray actor agrees on them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from visionops.errors import ConfigError
from visionops.tasks import PredictOptions, get_task

if TYPE_CHECKING:
    import pyarrow as pa

    from visionops.inference.session import ModelSession, Postprocessor

__all__ = ["Prediction", "RowFormat", "require_pyarrow"]


@dataclass
class Prediction:
    """One input's result.

    Attributes:
        path: The input as listed (local path or URL).
        answer: The task's answer, as ``serve`` returns it; None when ``error`` is set.
        output: The graph's main output for the image, flat float32; None with ``error``.
        error: Why the input could not be read or decoded, else None.
    """

    path: str
    answer: dict[str, Any] | None = None
    output: NDArray[np.float32] | None = None
    error: str | None = None


def require_pyarrow(what: str = "--out *.parquet") -> Any:
    """``pyarrow``, or the one-line error that says how to install it.

    Raises:
        ConfigError: pyarrow is not installed.
    """
    try:
        import pyarrow
        import pyarrow.parquet  # a submodule: `import pyarrow` alone does not bring it
    except ImportError:
        raise ConfigError(
            f"{what} needs pyarrow — pip install 'visionops[parquet]' (or write .csv/.jsonl)"
        ) from None
    return pyarrow


@dataclass(frozen=True)
class RowFormat:
    """The columns of a bundle's rows.

    Attributes:
        task: The task name.
        flat_columns: The flat answer's column names, in order.
        flat_example: One flat answer (the grey image's), for the Arrow column types.
    """

    task: str
    flat_columns: tuple[str, ...]
    flat_example: tuple[Any, ...]

    @classmethod
    def probe(cls, session: ModelSession, postprocess: Postprocessor, task: str) -> RowFormat:
        """The columns of ``task``'s answers, read from the answer to one grey image."""
        grey = np.full((1, session.size, session.size, session.channels), 128, np.uint8)
        answer = postprocess(session.run(grey), 0, PredictOptions())
        flat = get_task(task).flat_answer(answer)
        return cls(task=task, flat_columns=tuple(flat), flat_example=tuple(flat.values()))

    @property
    def columns(self) -> list[str]:
        """Every column: ``path``, the flat answer, ``output``, ``error``."""
        return ["path", *self.flat_columns, "output", "error"]

    def flat_row(self, prediction: Prediction) -> dict[str, Any]:
        """``path``, the flat answer's columns and ``error`` (a CSV row)."""
        flat = (
            get_task(self.task).flat_answer(prediction.answer)
            if prediction.answer is not None
            else {}
        )
        return {
            "path": prediction.path,
            **{column: flat.get(column) for column in self.flat_columns},
            "error": prediction.error,
        }

    def record(self, prediction: Prediction) -> dict[str, Any]:
        """The whole answer with ``path``, ``output`` and ``error`` (a JSON Lines row)."""
        answer = dict(prediction.answer or {})
        if answer.get("heatmap"):
            answer["heatmap"] = "omitted"
        output = None if prediction.output is None else prediction.output.tolist()
        return {"path": prediction.path, **answer, "output": output, "error": prediction.error}

    @cached_property
    def arrow_schema(self) -> pa.Schema:
        """The Arrow schema of a parquet row."""
        pa = require_pyarrow()
        example = pa.Table.from_pylist(
            [dict(zip(self.flat_columns, self.flat_example, strict=True))]
        )
        fields = [pa.field("path", pa.string())]
        for column in self.flat_columns:
            kind = example.schema.field(column).type
            fields.append(pa.field(column, pa.string() if pa.types.is_null(kind) else kind))
        fields += [pa.field("output", pa.list_(pa.float32())), pa.field("error", pa.string())]
        return pa.schema(fields)

    def arrow_table(self, predictions: Sequence[Prediction]) -> pa.Table:
        """Parquet rows for ``predictions``, in the :attr:`arrow_schema`."""
        pa = require_pyarrow()
        flat = [self.flat_row(p) for p in predictions]
        columns: dict[str, Any] = {
            c: [row[c] for row in flat] for c in ("path", *self.flat_columns)
        }
        # The outputs go in as one float32 buffer with offsets: no Python float per value.
        lengths = [0 if p.output is None else len(p.output) for p in predictions]
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
        present = [p.output for p in predictions if p.output is not None]
        values = np.concatenate(present).astype(np.float32) if present else np.zeros(0, np.float32)
        missing = pa.array([p.output is None for p in predictions])
        columns["output"] = pa.ListArray.from_arrays(
            pa.array(offsets), pa.array(values), mask=missing
        )
        columns["error"] = [row["error"] for row in flat]
        return pa.Table.from_pydict(columns, schema=self.arrow_schema)
