"""Watermark letters: inside a text box, thin bright or dark strokes are marked and the fabric around them is not;
outside the boxes nothing is; the real OCR detector finds a drawn word and its letters are filled."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from productstudio.editing.restoration_eval import damage, load_crops
from productstudio.editing.watermark import letter_mask, remove_watermark
from productstudio.models.restorer import psnr
from productstudio.models.text_detector import TextBox


def textured(seed: int = 0) -> np.ndarray:
    """A knit-like fabric: smooth colour with a fine low-contrast weave."""
    rng = np.random.default_rng(seed)
    base = np.full((120, 240, 3), (120, 90, 70), np.float32)
    weave = cv2.GaussianBlur(rng.normal(0, 6, (120, 240)).astype(np.float32), (0, 0), 1.5)
    return np.clip(base + weave[..., None], 0, 255).astype(np.uint8)


@pytest.mark.parametrize("value", [255, 0])
def test_letters_inside_a_box_are_marked_and_the_fabric_is_not(value):
    clean = textured()
    layer = np.zeros(clean.shape[:2], np.uint8)
    cv2.putText(layer, "SAMPLE", (20, 70), cv2.FONT_HERSHEY_SIMPLEX, 1.2, 255, 2, cv2.LINE_AA)
    alpha = layer.astype(np.float32)[..., None] / 255 * 0.5
    marked = np.clip(clean * (1 - alpha) + value * alpha + 0.5, 0, 255).astype(np.uint8)
    strong = layer > 128  # the strokes' cores, where the watermark is plain to see
    mask = letter_mask(marked, [TextBox(10, 35, 200, 85, 0.9)])
    assert (mask & strong).sum() / strong.sum() > 0.9
    assert (mask & (layer == 0)).mean() < 0.01  # the fabric stays
    assert not mask[:35].any() and not mask[85:].any()  # nothing outside the box
    assert not letter_mask(marked, []).any()


def test_a_watermarked_crop_gets_its_letters_filled_and_a_clean_one_is_left_alone(clothing_dir):
    from productstudio.models.pretrained import weights_dir
    from productstudio.models.text_detector import load_text_detector

    detector = load_text_detector(weights_dir("ppocr-det"), threads=1)
    _, clean = load_crops(clothing_dir, ("test",), 256, 6)
    damaged, masks, _ = damage(clean, "watermark", 0)
    filled = [remove_watermark(d, detector) for d in damaged]
    gain = np.mean([psnr(f, c) - psnr(d, c) for f, d, c in zip(filled, damaged, clean)])
    assert gain > 1.5  # letters filled (the benchmark: +4.3 dB on 60 crops)
    assert np.mean([psnr(remove_watermark(c, detector), c) for c in clean]) > 60  # text-free crops come back unchanged
