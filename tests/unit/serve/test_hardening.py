"""Inputs an attacker or a careless client sends, and secrets that must never leak."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from loguru import logger
from PIL import Image

from serve_helpers import colour_image, serving
from visionops.inference.predlog import read_prediction_log

KEY = "k3y-that-must-never-leak"


def test_deeply_nested_json_is_a_422_not_a_crash(
    classification_bundle: Path, tmp_path: Path
) -> None:
    json_type = {"Content-Type": "application/json"}
    bodies = [
        b"[" * 1000 + b"]" * 1000,
        b'{"images": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        b'{"image": ' + b'{"a": ' * 5000 + b"1" + b"}" * 5001,
    ]
    with serving(classification_bundle, tmp_path) as client:
        answers = [client.post("/predict", content=body, headers=json_type) for body in bodies]
        after = client.post("/predict", files={"file": ("a.png", colour_image(), "image/png")})
        metrics = client.get("/metrics").text
    for answer in answers:
        assert answer.status_code == 422
        assert answer.json()["error"]["kind"] == "invalid_json"
        assert "recursion limit" in answer.json()["error"]["message"]
    assert after.status_code == 200
    assert 'visionops_errors_total{kind="invalid_json"} 3.0' in metrics
    assert 'kind="internal"' not in metrics


def test_the_api_key_never_reaches_a_log_a_body_or_a_metric(
    classification_bundle: Path, tmp_path: Path
) -> None:
    captured: list[str] = []
    # The worst case: a sink that prints variable values next to every traceback.
    handler = logger.add(captured.append, level="DEBUG", diagnose=True, backtrace=True)
    log_dir = tmp_path / "log"
    bodies: list[str] = []
    try:
        with serving(classification_bundle, log_dir, api_key=KEY) as client:
            log_dir.rmdir()
            log_dir.write_text("not a folder")  # every prediction now fails inside the server
            for headers in ({"X-API-Key": KEY}, {"Authorization": f"Bearer {KEY}"}):
                failed = client.post(
                    "/predict",
                    files={"file": ("a.png", colour_image(), "image/png")},
                    headers=headers,
                )
                assert failed.status_code == 500
                bodies.append(failed.text)
            wrong = client.post("/predict", json={"image": "x"}, headers={"X-API-Key": KEY[:-1]})
            assert wrong.status_code == 401
            bodies.append(wrong.text)
            bodies.append(client.get("/metrics").text)
            bodies.append(client.get("/metadata", headers={"X-API-Key": KEY}).text)
            log_dir.unlink()
    finally:
        logger.remove(handler)
    text = "".join(captured)
    assert "NotADirectoryError" in text  # the failure itself is logged, with its traceback
    assert text.count("failed: Traceback") == 2  # once per failed request
    assert KEY not in text
    for body in bodies:
        assert KEY not in body


def test_the_log_records_the_size_as_displayed(classification_bundle: Path, tmp_path: Path) -> None:
    # A phone photo: stored 48 wide and 40 high, EXIF says "rotate a quarter turn".
    pixels = np.zeros((40, 48, 3), np.uint8)
    pixels[:, :24] = (220, 30, 30)
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", exif=exif.tobytes())
    with serving(classification_bundle, tmp_path / "log") as client:
        answer = client.post("/predict", files={"file": ("phone.jpg", buffer.getvalue())})
    assert answer.status_code == 200
    (record,) = read_prediction_log(tmp_path / "log").records
    assert record.image is not None
    assert (record.image.width, record.image.height) == (40, 48)
