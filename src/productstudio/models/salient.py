"""The salient-object net behind background removal: U^2-Net small (u2netp, Qin et al. 2020) run with ONNX Runtime.

    segmenter = load_segmenter(weights_dir("u2netp"), threads=1)    # one session, reused for every photo
    probability = segmenter.predict(photo_rgb)                      # (320, 320) float32 in [0, 1]
    probabilities = segmenter.predict_batch([photo, mirrored])      # one run for both (flip averaging)

Contract: an RGB uint8 photo (H, W, 3) of any size is resized (without keeping its aspect, as the net was
trained) to ``size`` x ``size``, scaled by its own maximum, normalised with the ImageNet mean and std, and the
net's first output (d1, the fused full-resolution map) is min-max normalised to [0, 1]. The mask comes back at
``size`` x ``size``; mapping it back to the photo (and every clean-up) is ``editing.cutout``'s job.

The shipped ONNX graph declares a fixed 1x3x320x320 input; we relax the batch and spatial dimensions to
symbolic ones when loading (every op in the graph is size-agnostic), so a flipped pair runs as one batch and
``size`` can differ from 320 (the net was trained at 320: other sizes are for experiments).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from productstudio.errors import DataError
from productstudio.models.pretrained import CONFIG, MODEL_FILE

KIND = "u2netp-onnx"
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)


def _session_options(threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads  # 0: ORT's default (all cores)
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # shared cores: do not spin
    options.log_severity_level = 3
    return options


def _dynamic_graph(path: Path) -> bytes:
    """The model file with its input's and outputs' batch, height and width made symbolic."""
    import onnx

    model = onnx.load(str(path))
    for value in [*model.graph.input, *model.graph.output]:
        dims = value.type.tensor_type.shape.dim
        if len(dims) == 4:
            dims[0].dim_param, dims[2].dim_param, dims[3].dim_param = "batch", "height", "width"
    return model.SerializeToString()


class SalientSegmenter:
    """One ONNX Runtime session of u2netp; ``predict`` maps a photo to its salient-object probability."""

    def __init__(self, path: str | Path, threads: int = 0, scale: str = "max"):
        import onnxruntime as ort

        self.path = Path(path)
        self.scale = scale  # "max": x / max(x) (as u2net's own data loader); "255": x / 255
        self.session = ort.InferenceSession(_dynamic_graph(self.path), _session_options(threads),
                                            providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.output_name = self.session.get_outputs()[0].name  # d1: the fused, full-resolution map

    def preprocess(self, rgb: np.ndarray, size: int) -> np.ndarray:
        """(H, W, 3) uint8 -> (3, size, size) float32, normalised as the net was trained."""
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ValueError(f"expected an (H, W, 3) uint8 RGB image, got {rgb.shape} {rgb.dtype}")
        shrinking = rgb.shape[0] > size or rgb.shape[1] > size
        small = cv2.resize(rgb, (size, size), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)
        x = small.astype(np.float32)
        x /= max(float(x.max()), 1e-6) if self.scale == "max" else 255.0
        x -= IMAGENET_MEAN
        x /= IMAGENET_STD
        return x.transpose(2, 0, 1)

    def predict_batch(self, images: Sequence[np.ndarray], size: int = 320) -> np.ndarray:
        """RGB uint8 images -> (N, size, size) float32 in [0, 1], one network run for all of them."""
        batch = np.stack([self.preprocess(image, size) for image in images])
        maps = self.session.run([self.output_name], {self.input_name: batch})[0][:, 0]
        low = maps.min(axis=(1, 2), keepdims=True)
        high = maps.max(axis=(1, 2), keepdims=True)
        return ((maps - low) / np.maximum(high - low, 1e-6)).astype(np.float32)

    def predict(self, rgb: np.ndarray, size: int = 320) -> np.ndarray:
        """(H, W, 3) uint8 RGB -> (size, size) float32 salient-object probability in [0, 1]."""
        return self.predict_batch([rgb], size)[0]


def load_segmenter(directory: str | Path, threads: int = 0) -> SalientSegmenter:
    """The segmenter saved in ``directory`` (``weights_dir("u2netp")``: model.onnx + config.json of kind
    "u2netp-onnx")."""
    import json

    directory = Path(directory)
    config = directory / CONFIG
    if config.is_file():
        kind = json.loads(config.read_text()).get("kind")
        if kind != KIND:
            raise DataError(f"{directory}: config.json kind is {kind!r}, not {KIND!r}")
    return SalientSegmenter(directory / MODEL_FILE, threads=threads)
