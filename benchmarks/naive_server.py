"""The baseline server: what the seed projects shipped — FastAPI + PyTorch, one request at a time.

An ``async def`` endpoint that decodes with PIL, transforms with torchvision and runs the
PyTorch model on the event loop, so requests are handled strictly one after another (the
pattern every seed system used, and why they fell over under load). Same trained weights as
the bundle under test (loaded from the run's checkpoint).

Run: python benchmarks/naive_server.py runs/run-001 --port 8001
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path
from typing import Any

import torch
import uvicorn
from fastapi import FastAPI, File, UploadFile
from PIL import Image
from torchvision import transforms

from visionops.runs import load_trained_model


def build_app(run_dir: Path) -> FastAPI:
    model, record = load_trained_model(run_dir)
    model.eval()
    size = record.model.image_size
    transform = transforms.Compose(
        [
            transforms.Resize(size),
            transforms.CenterCrop(size),
            transforms.ToTensor(),
            transforms.Normalize(record.normalization.mean, record.normalization.std),
        ]
    )
    classes = record.labels
    app = FastAPI()

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/predict")
    async def predict(file: UploadFile = File(...)) -> dict[str, Any]:  # noqa: B008
        image = Image.open(io.BytesIO(await file.read())).convert("RGB")
        with torch.no_grad():
            logits, _ = model(transform(image).unsqueeze(0))
            probabilities = torch.softmax(logits, dim=1)[0]
        top = torch.topk(probabilities, k=min(5, len(classes)))
        return {
            "predictions": [
                {"label": classes[int(i)], "probability": float(p)}
                for p, i in zip(top.values, top.indices, strict=True)
            ]
        }

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="A run folder with checkpoints/best.pt.")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--threads", type=int, default=0, help="torch threads; 0 = default.")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    uvicorn.run(build_app(args.run), host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
