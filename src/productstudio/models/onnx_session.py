"""One way to open a pretrained ONNX model for CPU inference (the text detector, the stylizer)."""

from __future__ import annotations

from pathlib import Path


def cpu_session(path: str | Path, threads: int = 0):
    """An ONNX Runtime CPU session; ``threads`` 0 lets it take all cores. Its worker threads do not spin between
    calls: on shared cores spinning steals time from everything else."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3  # errors only
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
