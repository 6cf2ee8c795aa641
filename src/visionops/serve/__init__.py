"""Serve a bundle over HTTP with ONNX Runtime; never imports torch.

HTTP only: the session, decoding, post-processing and the prediction log are
:mod:`visionops.inference`'s.

Modules:
    app: :func:`~visionops.serve.app.create_app`, the FastAPI app for one bundle.
    runner: :func:`~visionops.serve.runner.run_server`, what ``visionops serve`` calls.
    routes: the FastAPI routes (``/predict`` documented there); schemas: their request,
        query and response models.
    predict: ``POST /predict`` as a plain endpoint, and the shortcut to it past the router.
    auth: the API key check.
    state: what one app owns (session, batcher, pools, metrics, log) and the compute plan.
    batcher: the micro-batcher (bounded queue, inference off the event loop).
    uploads: reading multipart, raw image and JSON uploads within the limits.
    metrics: Prometheus metrics in a per-app registry.
    http_errors: every failure as one JSON error shape; secrets scrubbed from logs.
    page: the camera and upload page served at ``GET /``.
    probe: one worker's memory and CPU at full load, in a process of its own (``deploy``).

Only ``visionops.cli`` imports this package (``deploy`` runs the probe as a process).
Importing it imports nothing heavy; import the module you need.
"""
