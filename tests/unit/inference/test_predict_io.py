"""What ``visionops predict`` reads (inputs) and how its rows survive a crash (writers)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from visionops.errors import DataError
from visionops.inference.inputs import InputReader, list_inputs
from visionops.inference.rows import Prediction, RowFormat
from visionops.inference.writers import done_inputs, open_writer, out_format

ROWS = RowFormat(task="classification", flat_columns=("label", "probability"),
                 flat_example=("red", 0.5))  # fmt: skip


def _png(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(path)
    return path


def _prediction(path: str, label: str = "red") -> Prediction:
    answer = {"label": label, "probability": 0.5, "top_k": []}
    return Prediction(path=path, answer=answer, output=np.array([0.5, 0.25, 0.25], np.float32))


def test_folders_files_and_list_files_in_order(tmp_path: Path) -> None:
    b, a = _png(tmp_path / "photos" / "b.png"), _png(tmp_path / "photos" / "sub" / "a.jpg")
    (tmp_path / "photos" / "notes.md").write_text("not an image")
    single = _png(tmp_path / "single.png")
    listing = tmp_path / "list.txt"
    listing.write_text(f"# a comment\n{a}\n\ns3://bucket/key.jpg\n")
    found = list_inputs([str(tmp_path / "photos"), str(single), str(listing)])
    assert found == [str(b), str(a), str(single), str(a), "s3://bucket/key.jpg"]


@pytest.mark.parametrize(
    ("make", "message"),
    [("missing", "does not exist"), ("empty", "no image files in")],
)
def test_no_images_is_one_line_saying_what_to_pass(tmp_path: Path, make: str, message: str) -> None:
    location = tmp_path / "in"
    if make == "empty":
        location.mkdir()
        (location / "readme.txt").write_text("hi")
    with pytest.raises(DataError, match=message) as caught:
        list_inputs([str(location)])
    assert "\n" not in str(caught.value) and "pass" in str(caught.value)


def test_the_reader_reads_local_files_and_raises_oserror_for_missing(tmp_path: Path) -> None:
    image = _png(tmp_path / "x.png")
    reader = InputReader()
    assert reader.read(str(image)) == image.read_bytes()
    with pytest.raises(FileNotFoundError):
        reader.read(str(tmp_path / "gone.png"))


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_rows_written_batch_by_batch_are_what_resume_skips(tmp_path: Path, suffix: str) -> None:
    out = str(tmp_path / f"predictions{suffix}")
    writer = open_writer(out, ROWS, resume=False)
    writer.write([_prediction("a.png"), Prediction(path="b.png", error="not an image")])
    writer.close()
    assert done_inputs(out) == {"a.png", "b.png"}
    writer = open_writer(out, ROWS, resume=True)
    writer.write([_prediction("c.png", "blue")])
    writer.close()
    assert done_inputs(out) == {"a.png", "b.png", "c.png"}


def test_a_partial_last_line_from_a_killed_writer_is_cut(tmp_path: Path) -> None:
    out = tmp_path / "predictions.jsonl"
    writer = open_writer(str(out), ROWS, resume=False)
    writer.write([_prediction("a.png")])
    writer.close()
    with out.open("a") as handle:
        handle.write('{"path": "b.png", "lab')  # what a SIGKILL mid-write leaves
    assert done_inputs(str(out)) == {"a.png"}
    writer = open_writer(str(out), ROWS, resume=True)
    writer.write([_prediction("b.png")])
    writer.close()
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [row["path"] for row in rows] == ["a.png", "b.png"]
    assert rows[1]["output"] == [0.5, 0.25, 0.25] and rows[1]["error"] is None


def test_resuming_a_csv_of_another_model_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "predictions.csv"
    out.write_text("path,value,error\nx.png,3.0,\n")
    with pytest.raises(DataError, match="another model"):
        open_writer(str(out), ROWS, resume=True)
    assert out.read_text() == "path,value,error\nx.png,3.0,\n"


def test_an_unknown_suffix_names_the_ones_written(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"\.csv, \.jsonl or \.parquet"):
        out_format(str(tmp_path / "predictions.xlsx"))
