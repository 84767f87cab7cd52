"""Text and watermark detection: PP-OCRv4's DBNet detector (ONNX, from the pinned ``rapidocr-onnxruntime`` wheel;
see ``models.pretrained``) with a post-processing of our own.

    detector = load_text_detector(weights_dir("ppocr-det"), threads=0)
    boxes = detector.detect(rgb)          # [TextBox(x0, y0, x1, y1, score)] in the input's pixels

The net outputs, per pixel, the probability of being inside a text line's *shrunk* core (DBNet trains on text
polygons shrunk by a ratio of 0.4, so that touching lines stay apart). Post-processing:

1. the image is resized so its longer side is about ``limit_side`` and both sides are multiples of 32 (the
   net's stride), normalised to [-1, 1] and given as BGR (PaddleOCR trains on OpenCV's channel order);
2. the probability map is thresholded (``pixel_threshold``) and split into connected components;
3. a component's score is its mean probability; dropped are components scoring under ``box_threshold``,
   thinner than ``min_side`` map pixels (specks on fabric texture), squarer than ``min_aspect`` (a word or a
   line is long; single square blobs are what the net fires on folds, prints and shoes) or thicker than
   ``max_thickness`` of the map's shorter side (measured on clothing photos: the net's false "text" on plain
   garments is large blobs, 0.18-0.45 of the side, while drawn words of 2-12 % of the height give cores of
   0.02-0.07);
4. each surviving box is grown back by DBNet's unclip distance (area * ``unclip_ratio`` / perimeter) and mapped
   to the input's pixels.

Boxes are axis-aligned: the compliance check only needs to know *whether* there is text, and where for a report.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from productstudio.errors import DataError, MissingInput
from productstudio.models.onnx_session import cpu_session

MODEL_FILE = "model.onnx"
KIND = "ppocr-det-onnx"
STRIDE = 32


@dataclass(frozen=True)
class TextBox:
    x0: int
    y0: int
    x1: int  # exclusive
    y1: int  # exclusive
    score: float  # mean text probability inside the detected core


def network_size(height: int, width: int, limit_side: int) -> tuple[int, int]:
    """(H, W) for the net: the longer side about ``limit_side``, multiples of 32, at least 32. Small images are
    enlarged too: on 400 px clothing photos with drawn words, running them at 640 found 54/60 words instead of
    50/60 (the misses are half-transparent or 13-22 px words), with one false photo fewer."""
    scale = limit_side / max(height, width)
    return (max(STRIDE, round(height * scale / STRIDE) * STRIDE),
            max(STRIDE, round(width * scale / STRIDE) * STRIDE))


class TextDetector:
    """One ONNX Runtime session, reused for every image."""

    def __init__(self, path: str | Path, threads: int = 0, pixel_threshold: float = 0.3, box_threshold: float = 0.8,
                 min_side: int = 4, min_aspect: float = 2.0, max_thickness: float = 0.12, unclip_ratio: float = 1.5):
        self.path = Path(path)
        self.session = cpu_session(self.path, threads)
        self.input_name = self.session.get_inputs()[0].name
        self.pixel_threshold, self.box_threshold = pixel_threshold, box_threshold
        self.min_side, self.min_aspect, self.max_thickness = min_side, min_aspect, max_thickness
        self.unclip_ratio = unclip_ratio

    def probability(self, rgb: np.ndarray, limit_side: int = 640) -> np.ndarray:
        """(h, w) float32 text probability at the net's resolution (see ``network_size``)."""
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ValueError(f"expected an (H, W, 3) uint8 RGB image, got {rgb.shape} {rgb.dtype}")
        height, width = network_size(rgb.shape[0], rgb.shape[1], limit_side)
        resized = cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA if height < rgb.shape[0]
                             else cv2.INTER_LINEAR)
        bgr = resized[..., ::-1].astype(np.float32) * np.float32(2 / 255) - np.float32(1)
        batch = np.ascontiguousarray(bgr.transpose(2, 0, 1)[None])
        return self.session.run(None, {self.input_name: batch})[0][0, 0]

    def detect(self, rgb: np.ndarray, limit_side: int = 640) -> list[TextBox]:
        """Text boxes in ``rgb``'s pixels, best first."""
        probability = self.probability(rgb, limit_side)
        map_h, map_w = probability.shape
        sy, sx = rgb.shape[0] / map_h, rgb.shape[1] / map_w
        core = (probability > self.pixel_threshold).astype(np.uint8)
        count, labels, stats, _ = cv2.connectedComponentsWithStats(core, connectivity=8)
        boxes = []
        for label in range(1, count):
            left, top, w, h, _area = stats[label]
            if min(w, h) < self.min_side or max(w, h) < self.min_aspect * min(w, h):
                continue
            if min(w, h) > self.max_thickness * min(map_h, map_w):
                continue
            window = labels[top:top + h, left:left + w] == label
            score = float(probability[top:top + h, left:left + w][window].mean())
            if score < self.box_threshold:
                continue
            grow = w * h * self.unclip_ratio / (2 * (w + h))  # DBNet's unclip distance, for a rectangle
            boxes.append(TextBox(max(0, math.floor((left - grow) * sx)), max(0, math.floor((top - grow) * sy)),
                                 min(rgb.shape[1], math.ceil((left + w + grow) * sx)),
                                 min(rgb.shape[0], math.ceil((top + h + grow) * sy)), round(score, 4)))
        return sorted(boxes, key=lambda box: -box.score)


def load_text_detector(directory: str | Path, threads: int = 0) -> TextDetector:
    """The detector installed in ``directory`` (``model.onnx`` + ``config.json`` of kind ppocr-det-onnx)."""
    directory = Path(directory)
    model, config = directory / MODEL_FILE, directory / "config.json"
    if not model.is_file() or not config.is_file():
        raise MissingInput(f"{directory}: no text detector ({MODEL_FILE} and config.json); run scripts/install-weights")
    kind = json.loads(config.read_text()).get("kind")
    if kind != KIND:
        raise DataError(f"{directory}: config.json says kind {kind!r}, expected {KIND!r}")
    return TextDetector(model, threads=threads)
