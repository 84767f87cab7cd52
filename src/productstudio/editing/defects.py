"""Synthetic defects on clean product photos, seeded and recorded: the test bench of restoration and enhancement.

    defect = DEFECTS["noise25"]
    damaged, mask, recorded = defect.apply(clean_rgb, rng)      # mask: the pixels the defect touched, or None

Every defect is a pure function of the clean image and a numpy Generator, so ``(seed, crop, defect)`` gives the
same damaged image on every machine; ``recorded`` holds the drawn parameters (what a reader needs to redo it).

Families (what a method is judged on):
    noise      additive Gaussian noise, sigma 15 / 25 / 50 (on 0-255)
    jpeg       JPEG re-encoding at quality 10 / 20 / 30 (Pillow, 4:2:0)
    dust       dark and light specks plus thin scratches, with their exact mask
    watermark  semi-transparent text across the photo, with its exact mask (the letters)
    cast       a colour cast: per-channel gains in linear light
    exposure   under-exposure: linear light scaled by 0.35-0.55
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Callable

import cv2
import numpy as np
from PIL import Image

WATERMARK_WORDS = ("SAMPLE", "PROOF", "© STUDIO", "DEMO", "PREVIEW")


def to_linear(rgb: np.ndarray) -> np.ndarray:
    """sRGB uint8 -> linear light in [0, 1] (float32)."""
    x = rgb.astype(np.float32) / 255.0
    return np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4).astype(np.float32)


def to_srgb(linear: np.ndarray) -> np.ndarray:
    """Linear light (any float) -> sRGB uint8, clipped."""
    x = np.clip(linear, 0.0, 1.0)
    srgb = np.where(x <= 0.0031308, 12.92 * x, 1.055 * np.power(x, 1 / 2.4) - 0.055)
    return np.clip(np.round(srgb * 255.0), 0, 255).astype(np.uint8)


def gaussian_noise(sigma: float):
    def apply(clean: np.ndarray, rng: np.random.Generator):
        noisy = clean.astype(np.float32) + rng.normal(0.0, sigma, clean.shape).astype(np.float32)
        return np.clip(np.round(noisy), 0, 255).astype(np.uint8), None, {"sigma": sigma}
    return apply


def jpeg(quality: int):
    def apply(clean: np.ndarray, rng: np.random.Generator):
        buffer = io.BytesIO()
        Image.fromarray(clean).save(buffer, format="JPEG", quality=quality)
        with Image.open(io.BytesIO(buffer.getvalue())) as image:
            return np.asarray(image.convert("RGB")).copy(), None, {"quality": quality}
    return apply


def dust(clean: np.ndarray, rng: np.random.Generator):
    """Specks (discs of radius 1-3) and scratches (thin polylines), dark or light, on about 0.5-1.5 % of pixels."""
    height, width = clean.shape[:2]
    mask = np.zeros((height, width), np.uint8)
    colours = np.zeros((height, width, 3), np.uint8)
    specks = int(rng.integers(20, 45))
    for _ in range(specks):
        centre = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        radius = int(rng.integers(1, 4))
        value = int(rng.integers(0, 50)) if rng.random() < 0.6 else int(rng.integers(215, 256))
        cv2.circle(mask, centre, radius, 255, -1)
        cv2.circle(colours, centre, radius, (value, value, value), -1)
    scratches = int(rng.integers(1, 4))
    for _ in range(scratches):
        start = np.array([rng.integers(0, width), rng.integers(0, height)], np.float64)
        angle, length = rng.uniform(0, np.pi), rng.uniform(0.2, 0.6) * max(height, width)
        bend = rng.normal(0, 0.15, 3)
        points = [start]
        for step in range(3):
            angle += bend[step]
            points.append(points[-1] + length / 3 * np.array([np.cos(angle), np.sin(angle)]))
        polyline = [np.round(np.array(points)).astype(np.int32)]
        value = int(rng.integers(0, 40)) if rng.random() < 0.5 else int(rng.integers(225, 256))
        cv2.polylines(mask, polyline, False, 255, 1, lineType=cv2.LINE_8)
        cv2.polylines(colours, polyline, False, (value, value, value), 1, lineType=cv2.LINE_8)
    damaged = clean.copy()
    damaged[mask > 0] = colours[mask > 0]
    return damaged, mask > 0, {"specks": specks, "scratches": scratches}


def watermark(clean: np.ndarray, rng: np.random.Generator):
    """A word in white or black, semi-transparent (opacity 0.35-0.6), tiled diagonally across the photo."""
    height, width = clean.shape[:2]
    word = WATERMARK_WORDS[int(rng.integers(0, len(WATERMARK_WORDS)))]
    opacity = float(rng.uniform(0.35, 0.6))
    value = 255 if rng.random() < 0.6 else 0
    scale = float(rng.uniform(0.6, 1.1)) * width / 256
    thickness = max(1, round(2 * scale))
    layer = np.zeros((height, width), np.uint8)
    (text_w, text_h), _ = cv2.getTextSize(word, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    step_x, step_y = text_w + int(rng.integers(20, 60)), text_h * 3
    offset = int(rng.integers(0, step_x))
    for row, y in enumerate(range(text_h + int(rng.integers(0, step_y)), height, step_y)):
        for x in range(-offset - (row % 2) * step_x // 2, width, step_x):
            cv2.putText(layer, word, (x, y), cv2.FONT_HERSHEY_SIMPLEX, scale, 255, thickness, cv2.LINE_AA)
    alpha = layer.astype(np.float32)[..., None] / 255.0 * opacity
    damaged = clean.astype(np.float32) * (1 - alpha) + value * alpha
    return (np.clip(np.round(damaged), 0, 255).astype(np.uint8), layer > 0,
            {"word": word, "opacity": round(opacity, 3), "value": value, "scale": round(scale, 3)})


def colour_cast(clean: np.ndarray, rng: np.random.Generator):
    """Per-channel gains in linear light (a wrong white balance), normalised to keep the mean brightness."""
    gains = np.exp(rng.uniform(-0.35, 0.35, 3)).astype(np.float32)
    gains /= gains.mean()
    return to_srgb(to_linear(clean) * gains), None, {"gains": [round(float(g), 4) for g in gains]}


def under_exposure(clean: np.ndarray, rng: np.random.Generator):
    """Linear light scaled down (a stop to a stop and a half too dark)."""
    factor = float(rng.uniform(0.35, 0.55))
    return to_srgb(to_linear(clean) * factor), None, {"factor": round(factor, 4)}


@dataclass(frozen=True)
class Defect:
    name: str
    family: str
    apply: Callable  # (clean uint8 RGB, rng) -> (damaged uint8 RGB, mask bool (H, W) or None, recorded dict)


DEFECTS: dict[str, Defect] = {d.name: d for d in [
    *(Defect(f"noise{s}", "noise", gaussian_noise(s)) for s in (15, 25, 50)),
    *(Defect(f"jpeg{q}", "jpeg", jpeg(q)) for q in (10, 20, 30)),
    Defect("dust", "dust", dust),
    Defect("watermark", "watermark", watermark),
    Defect("cast", "cast", colour_cast),
    Defect("exposure", "exposure", under_exposure),
]}


def defect_rng(seed: int, crop_index: int, defect: str) -> np.random.Generator:
    """The generator of one (crop, defect) pair: independent of which other pairs are drawn, or in what order."""
    return np.random.default_rng([seed, crop_index, *defect.encode()])
