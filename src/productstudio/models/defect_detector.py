"""The learned defect detector: a small fully convolutional network that marks dust, specks and scratches.

    model = DefectDetector(width=32)
    mask = detect_defects(model, photo_rgb, threshold=0.3, min_blob=4)  # (H, W) bool: the pixels to fill

Detect, then fill: the mask goes to ``cv2.inpaint`` (``fill_defects``). The network works at full resolution
(a scratch is one pixel wide) with dilated 3x3 convolutions (dilations 1, 1, 2, 4, 8, 1: a 35 px field, enough
to tell a speck from a button or a print by its surroundings) and outputs one logit per pixel. The mask rule,
``threshold`` and ``min_blob`` (marked blobs of fewer pixels are dropped), is chosen on validation crops by the
training step (the best fill of validation crops that keeps the recall target) and stored with the weights; ``grow``
widens the mask by that many pixels. False alarms are what the fill pays for most: one is usually a real detail
(a stitch's highlight, a print's dot) and refilling it erases that detail, which cost more PSNR than the missed
defect pixels did (``bench/bench_dust_fill.py``); the smallest speck drawn is a 5-pixel disc, while most false
alarms are 1-3 pixel dots.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

from productstudio.models.tiling import inner, tiles

DILATIONS = (1, 1, 2, 4, 8, 1)
PRIOR_LOGIT = -4.0  # an untrained model says "about 2 % defect" everywhere: training starts from the prior
TILE = 512  # full-size photos are scanned in tiles of this side (memory stays bounded)
OVERLAP = 24  # context around each tile (> the receptive field's half, 17 px)


class DefectDetector(nn.Module):
    def __init__(self, width: int = 24):
        super().__init__()
        self.width = width
        layers, channels = [], 6
        for dilation in DILATIONS:
            layers += [nn.Conv2d(channels, width, 3, padding=dilation, dilation=dilation), nn.ReLU(inplace=True)]
            channels = width
        self.body = nn.Sequential(*layers)
        self.tail = nn.Conv2d(width, 1, 1)
        nn.init.zeros_(self.tail.weight)
        nn.init.constant_(self.tail.bias, PRIOR_LOGIT)
        for layer in self.body[::2]:
            nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")  # as the restorer: a deep ReLU stack
            nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 6, H, W) ``features`` -> (N, 1, H, W) logits (defect where > 0 at threshold 0.5)."""
        return self.tail(self.body(x))


def features(images: np.ndarray) -> torch.Tensor:
    """(N, H, W, 3) uint8 RGB -> (N, 6, H, W): the centred photo and its difference from its 5x5 median.

    A speck or a scratch stands out in the difference at once, so the network learns what is a defect and
    what is texture (a print, a button, a seam) instead of first learning to find small things. OpenCV's
    median is computed outside the network: in torch it took a third of each training step."""
    images = np.asarray(images)
    medians = np.stack([cv2.medianBlur(np.ascontiguousarray(image), 5) for image in images])
    photo = torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255)
    median = torch.from_numpy(medians).permute(0, 3, 1, 2).float().div_(255)
    return torch.cat([photo - 0.5, photo - median], dim=1)


def defect_probability(model: DefectDetector, image: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (H, W) float32 probability that each pixel is a defect, tile by tile."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an (H, W, 3) uint8 RGB image, got {image.shape} {image.dtype}")
    height, width = image.shape[:2]
    x = features(image[None])
    out = np.empty((height, width), np.float32)
    model.eval()
    with torch.inference_mode():
        for rows, cols, in_rows, in_cols in tiles(height, width, TILE, OVERLAP):
            logits = model(x[..., in_rows, in_cols])[0, 0, inner(rows, in_rows), inner(cols, in_cols)]
            out[rows, cols] = torch.sigmoid(logits).numpy()
    return out


def grow_mask(mask: np.ndarray, pixels: int) -> np.ndarray:
    if pixels <= 0:
        return mask
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * pixels + 1, 2 * pixels + 1))
    return cv2.dilate(mask.astype(np.uint8), kernel) > 0


def drop_small_blobs(mask: np.ndarray, min_blob: int) -> np.ndarray:
    """``mask`` without its 8-connected blobs of fewer than ``min_blob`` pixels."""
    if min_blob <= 1 or not mask.any():
        return mask
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    keep = stats[:, cv2.CC_STAT_AREA] >= min_blob
    keep[0] = False  # the background
    return keep[labels]


def detect_defects(model: DefectDetector, image: np.ndarray, threshold: float, grow: int = 0,
                   min_blob: int = 1) -> np.ndarray:
    """The defect mask of one photo, (H, W) bool: probability >= ``threshold``, blobs under ``min_blob`` pixels
    dropped, then grown by ``grow`` pixels."""
    return grow_mask(drop_small_blobs(defect_probability(model, image) >= threshold, min_blob), grow)


def mask_rule(info: dict) -> dict:
    """The stored rule that turns probabilities into a mask (detector.json). Detectors saved before
    ``min_blob`` existed keep every blob, as they did."""
    return {"threshold": float(info["threshold"]), "grow": int(info["grow"]), "min_blob": int(info.get("min_blob", 1))}


def fill_defects(model: DefectDetector, image: np.ndarray, threshold: float, grow: int, radius: int,
                 min_blob: int = 1) -> np.ndarray:
    """Detect, then fill with Navier-Stokes inpainting; a photo with nothing detected comes back unchanged."""
    return fill_mask(image, detect_defects(model, image, threshold, grow, min_blob), radius)


def fill_mask(image: np.ndarray, mask: np.ndarray, radius: int) -> np.ndarray:
    """``mask``'s pixels refilled by Navier-Stokes inpainting from around them; an empty mask gives a copy."""
    if not mask.any():
        return image.copy()
    return cv2.inpaint(image, mask.astype(np.uint8) * 255, radius, cv2.INPAINT_NS)


def dust_filler(model: DefectDetector, info: dict, radius: int):
    """photo -> photo with what the detector finds (by its stored mask rule) filled: the first step of
    'edit restore --detector' and of the served restore task packaged with a detector."""
    rule = mask_rule(info)
    return lambda photo: fill_defects(model, photo, radius=radius, **rule)


def save_detector(model: DefectDetector, out_dir: Path, info: dict) -> None:
    from safetensors.torch import save

    from productstudio.artifacts import write_atomic, write_json_atomic

    write_atomic(out_dir / "detector.safetensors", save({k: v.contiguous() for k, v in model.state_dict().items()}))
    write_json_atomic(out_dir / "detector.json", info)


def load_detector(directory: str | Path) -> tuple[DefectDetector, dict]:
    """The model ``train_detector`` saved and its info (threshold, grow): safetensors + JSON, nothing unpickled."""
    from safetensors.torch import load

    from productstudio.errors import MissingInput

    directory = Path(directory)
    weights, info_path = directory / "detector.safetensors", directory / "detector.json"
    if not weights.is_file() or not info_path.is_file():
        raise MissingInput(f"{directory}: no defect detector here (detector.safetensors + detector.json); "
                           "train one with 'productstudio edit detect-train'")
    info = json.loads(info_path.read_text())
    model = DefectDetector(int(info["width"]))
    model.load_state_dict(load(weights.read_bytes()))
    model.eval()
    return model, info
