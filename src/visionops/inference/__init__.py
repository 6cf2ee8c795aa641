"""The inference core under serve, predict and drift.

Bundles, the one ONNX Runtime session builder, decoding, post-processing, the prediction log
and batch prediction. No torch, no HTTP.
"""
