"""Whether a photo needs the restorer at all: its noise level and its JPEG compression, read from the pixels.

    verdict = inspect(photo, RestoreGateSettings())
    verdict.restore        # True: noisy, or compressed harder than gate.jpeg_quality
    verdict.reason         # "noise sigma 14.2" / "JPEG quality about 30 (DC step 27)" / "clean: ..."
    restored, verdict = gated_restore(model, photo, gate)   # the photo itself, unchanged, when it is clean

Why a gate: the restorer is blind, and the catalogue's clean photos are themselves JPEGs (quality 70), so it
"deblocks" them and moves a clean photo about 38 dB away from itself (the issue asks 45). A gate that leaves a
clean photo alone is exact on clean input, and costs nothing on damaged input as long as it finds the damage.

Both measures look only at the pixels, so they work on a PNG re-save of a JPEG as well as on the JPEG:
- noise: the 5th percentile over 16 px blocks (and the three channels) of the std of a 3x3 second-difference
  filter scaled so that white noise of sigma s reads s. Texture raises some blocks, but a photo has flat parts;
  sensor-like noise raises all of them. Pixels next to a clipped one say nothing about noise and are left out.
- JPEG: the quantisation step of the luma DC coefficient. A JPEG stores each 8x8 block's mean brightness as a
  multiple of a step that grows as quality falls (10 at quality 70, 20 at 40, 27 at 30, 80 at 10), and the
  decoded pixels keep it to within a level or two: over the 64 possible grid positions, the step whose
  multiples the block means fall on most often, beyond chance, is the one the encoder used. Both the block means
  and their distinct values must favour it: a photo with large flat areas has many equal block means, which can
  fall on the multiples of some step by chance (one clean crop of 60 read a step of 29 by counting blocks alone).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from productstudio.config import RestoreGateSettings

REGION = 512  # both measures read the central region of at most this side (a 24 MP photo is not scanned)
NOISE_BLOCK = 16
NOISE_PERCENTILE = 5
STEPS = np.arange(6, 101)  # DC steps considered: quality about 90 (6) to 8 (100)
STEP_TOLERANCE = 2.0  # the decoder's rounding and colour conversion move a block mean's DC by a level or two
MIN_EXCESS = 0.1  # a step counts when its share of block means on its multiples beats chance by this much
# 3x3 second difference: its response to white noise of std s has std 6 s (sum of squared weights 36)
_SECOND_DIFFERENCE = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], np.float64) / 6


@dataclass(frozen=True)
class Verdict:
    restore: bool
    reason: str
    noise_sigma: float
    jpeg_step: int | None  # the luma DC quantisation step found (None: no JPEG grid in the pixels)

    def as_dict(self) -> dict:
        return {"restore": self.restore, "reason": self.reason, "noise_sigma": round(self.noise_sigma, 2),
                "jpeg_step": self.jpeg_step}


def dc_step_for_quality(quality: int) -> int:
    """The luma DC step a libjpeg/Pillow encoder uses at ``quality`` (the IJG scaling of the standard table's 16)."""
    scale = 5000 / quality if quality < 50 else 200 - 2 * quality
    return max(1, min(255, int((16 * scale + 50) // 100)))


def central(photo: np.ndarray, side: int = REGION) -> np.ndarray:
    top, left = max(0, (photo.shape[0] - side) // 2), max(0, (photo.shape[1] - side) // 2)
    return photo[top:top + side, left:left + side]


def noise_sigma(photo: np.ndarray) -> float:
    """The photo's noise level in 8-bit levels (about s for Gaussian noise of sigma s; under 2 for clean photos)."""
    import cv2

    # a pixel next to a clipped one reads less than the noise (the clipping cut it off), so a block is read
    # over its other pixels; a block with too few of those (a noisy white background: half its pixels at 255)
    # is read over all of them, which still reads about half the noise rather than none
    clipped = ((photo == 0) | (photo == 255)).any(axis=2).astype(np.uint8)
    valid = (cv2.dilate(clipped, np.ones((3, 3), np.uint8)) == 0)[1:-1, 1:-1]
    rows, cols = valid.shape[0] // NOISE_BLOCK, valid.shape[1] // NOISE_BLOCK
    if not rows or not cols:
        return 0.0
    valid = valid[:rows * NOISE_BLOCK, :cols * NOISE_BLOCK].reshape(rows, NOISE_BLOCK, cols, NOISE_BLOCK)
    counts = valid.sum(axis=(1, 3))
    enough = counts >= NOISE_BLOCK ** 2 // 4
    levels = []
    for channel in range(3):
        response = cv2.filter2D(photo[..., channel].astype(np.float64), -1, _SECOND_DIFFERENCE)[1:-1, 1:-1]
        blocks = response[:rows * NOISE_BLOCK, :cols * NOISE_BLOCK].reshape(rows, NOISE_BLOCK, cols, NOISE_BLOCK)
        squares = blocks ** 2
        valid_power = (squares * valid).sum(axis=(1, 3)) / np.maximum(counts, 1)
        levels.append(np.sqrt(np.where(enough, valid_power, squares.mean(axis=(1, 3)))).ravel())
    levels = np.concatenate(levels)
    return float(np.percentile(levels, NOISE_PERCENTILE)) if levels.size else 0.0


def jpeg_dc_step(photo: np.ndarray) -> int | None:
    """The luma DC quantisation step of the JPEG these pixels were decoded from; None when no grid shows."""
    x = photo.astype(np.float64)
    luma = 0.299 * x[..., 0] + 0.587 * x[..., 1] + 0.114 * x[..., 2] - 128  # JPEG's level-shifted Y
    clipped = ((photo == 0) | (photo == 255)).any(axis=2)  # a clipped block's mean is not the stored one
    chance = (2 * STEP_TOLERANCE + 1) / STEPS  # share of arbitrary values within the tolerance of a multiple

    def excess(values: np.ndarray) -> np.ndarray:  # per step: share of values on its multiples, beyond chance
        off = np.abs(values[None] - STEPS[:, None] * np.round(values[None] / STEPS[:, None]))
        return (off <= STEP_TOLERANCE).mean(axis=1) - chance

    best_excess, best_step = MIN_EXCESS, None
    for dy in range(8):
        for dx in range(8):
            rows, cols = (luma.shape[0] - dy) // 8, (luma.shape[1] - dx) // 8
            if not rows or not cols:
                continue
            dc = 8 * luma[dy:dy + rows * 8, dx:dx + cols * 8].reshape(rows, 8, cols, 8).mean(axis=(1, 3))
            bad = clipped[dy:dy + rows * 8, dx:dx + cols * 8].reshape(rows, 8, cols, 8).any(axis=(1, 3))
            dc = dc[~bad]
            if dc.size < 32:
                continue
            # the weaker of the two readings: every block, and every distinct (rounded) block mean once
            score = np.minimum(excess(dc), excess(np.unique(np.round(dc))))
            index = int(np.argmax(score))
            if score[index] > best_excess:
                best_excess, best_step = float(score[index]), int(STEPS[index])
    return best_step


def inspect(photo: np.ndarray, gate: RestoreGateSettings) -> Verdict:
    region = central(photo)
    sigma, step = noise_sigma(region), jpeg_dc_step(region)
    if not gate.enabled:
        return Verdict(True, "gate off: every photo is restored", sigma, step)
    if sigma >= gate.noise_sigma:
        return Verdict(True, f"noise sigma {sigma:.1f} >= {gate.noise_sigma:g}", sigma, step)
    if step is not None and step >= dc_step_for_quality(gate.jpeg_quality):
        return Verdict(True, f"JPEG compressed harder than quality {gate.jpeg_quality} (DC step {step})", sigma, step)
    jpeg = f"JPEG DC step {step}" if step is not None else "no JPEG grid"
    return Verdict(False, f"clean, left as it is (noise sigma {sigma:.1f}, {jpeg})", sigma, step)


def gated_restore(model, photo: np.ndarray, gate: RestoreGateSettings) -> tuple[np.ndarray, Verdict]:
    """The restorer's output when the gate finds noise or heavy JPEG compression, else the photo itself."""
    from productstudio.models.restorer import restore

    verdict = inspect(photo, gate)
    return (restore(model, photo) if verdict.restore else photo), verdict
