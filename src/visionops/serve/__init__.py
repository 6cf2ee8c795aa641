"""Serve a bundle over HTTP with ONNX Runtime; never imports torch.

Modules:
    app: :func:`~visionops.serve.app.create_app`, the FastAPI app for one bundle.
    runner: :func:`~visionops.serve.runner.run_server`, what ``visionops serve`` calls.
    session: the ONNX Runtime session, decoding guards and post-processing by task.
    batcher: the micro-batcher (bounded queue, inference off the event loop).
    metrics: Prometheus metrics in a per-app registry.
    predlog: the prediction log and :func:`~visionops.inference.predlog.read_prediction_log`,
        which drift detection reads.
    page: the upload page served at ``GET /``.

Importing this package imports nothing heavy; import the module you need.
"""
