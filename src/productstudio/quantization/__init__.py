"""int8 ONNX generators for CPU serving and their measured cost (``quantize``)."""
