"""``visionops export`` and ``visionops benchmark``.

The ONNX graph, the parity check, int8 quantisation and timing.
"""
