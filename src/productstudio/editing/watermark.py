"""Watermark removal, for the merchant's *own* images only (a photo they shot and watermarked themselves, or an
old proof): text found by the OCR detector, shrunk to its letters, filled by inpainting.

    text_detector = load_text_detector(weights_dir("ppocr-det"))
    mask = watermark_mask(photo, text_detector)          # (H, W) bool: the letters' pixels
    clean = remove_watermark(photo, text_detector)       # Navier-Stokes inpainting of that mask

The OCR detector (PP-OCRv4 DBNet, ``models.text_detector``) gives boxes around words; a box is mostly the photo,
so it is shrunk to the letters: watermark strokes are thin and either brighter or darker than what is under
them, so a morphological top-hat (bright letters) or black-hat (dark letters: the stronger of the two in the box
decides) larger than a stroke, thresholded, marks them. Filling whole boxes instead would repaint a tenth of the
photo. ``bench/bench_watermark.py`` measures the mask against the true letters and the fill against inpainting
with them, on the restoration table's watermark crops.
"""

from __future__ import annotations

import cv2
import numpy as np

LIMIT_SIDE = 640  # the text detector's working size (its default; 960 covered 1 % more letter pixels at 2.5x the time)
STROKE_KERNEL = 7  # px: wider than a watermark's stroke, so the hat keeps the strokes and drops the fabric
STROKE_LEVEL = 6  # grey levels above (or below) the surroundings that make a pixel a letter's


def letter_mask(rgb: np.ndarray, boxes, kernel: int = STROKE_KERNEL, level: float = STROKE_LEVEL) -> np.ndarray:
    """(H, W) bool: inside each text box, the pixels that stand out as thin bright or dark strokes."""
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    element = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (kernel, kernel))
    bright = cv2.morphologyEx(grey, cv2.MORPH_TOPHAT, element)
    dark = cv2.morphologyEx(grey, cv2.MORPH_BLACKHAT, element)
    mask = np.zeros(grey.shape, bool)
    for box in boxes:
        window = (slice(box.y0, box.y1), slice(box.x0, box.x1))
        hat = bright[window] if int(bright[window].sum()) >= int(dark[window].sum()) else dark[window]
        mask[window] |= hat > level
    return mask


def watermark_mask(rgb: np.ndarray, text_detector, limit_side: int = LIMIT_SIDE) -> np.ndarray:
    """(H, W) bool: the letters of the text the detector finds in ``rgb``."""
    return letter_mask(rgb, text_detector.detect(rgb, limit_side))


def remove_watermark(rgb: np.ndarray, text_detector, radius: int = 3) -> np.ndarray:
    """``rgb`` with the letters of any text inpainted (Navier-Stokes); unchanged when no text is found."""
    mask = watermark_mask(rgb, text_detector)
    if not mask.any():
        return rgb
    return cv2.inpaint(rgb, mask.astype(np.uint8) * 255, radius, cv2.INPAINT_NS)
