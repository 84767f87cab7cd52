"""Watermark letters: inside a text box, thin bright or dark strokes are marked and the fabric around them is not;
outside the boxes nothing is; un-blending finds the overlay's colour and opacity and computes the photo back under
the letters (better than inpainting them), inpaints letter pixels whose computed alpha a hidden patch inflated,
leaves marked fabric that does not fit the overlay alone, and falls back
to inpainting; the letters read over a tiling's repeats keep faint edges and drop a detector's halo and a row the
tiling does not have; the real OCR detector finds a drawn word and it is removed."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from productstudio.editing.restoration_eval import damage, load_crops
from productstudio.editing.watermark import (estimate_overlay, letter_mask, letters_over_repeats, remove_watermark,
                                             repeat_lattice, repeat_mean, repeat_median, unblend)
from productstudio.models.defect_detector import fill_mask
from productstudio.models.restorer import psnr
from productstudio.models.text_detector import TextBox


def textured(seed: int = 0) -> np.ndarray:
    """A knit-like fabric: smooth colour with a fine low-contrast weave."""
    rng = np.random.default_rng(seed)
    base = np.full((120, 240, 3), (120, 90, 70), np.float32)
    weave = cv2.GaussianBlur(rng.normal(0, 6, (120, 240)).astype(np.float32), (0, 0), 1.5)
    return np.clip(base + weave[..., None], 0, 255).astype(np.uint8)


def overlaid(clean: np.ndarray, value: int, opacity: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """``clean`` with SAMPLE blended over it in ``value`` at ``opacity`` (anti-aliased), and the letters' layer."""
    layer = np.zeros(clean.shape[:2], np.uint8)
    cv2.putText(layer, "SAMPLE", (20, 70), cv2.FONT_HERSHEY_SIMPLEX, 1.2, 255, 2, cv2.LINE_AA)
    alpha = layer.astype(np.float32)[..., None] / 255 * opacity
    return np.clip(clean * (1 - alpha) + value * alpha + 0.5, 0, 255).astype(np.uint8), layer


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


@pytest.mark.parametrize("value, opacity", [(255, 0.5), (0, 0.4)])
def test_unblending_finds_the_overlay_and_computes_the_letters_cores_back(value, opacity):
    clean = textured()
    marked, layer = overlaid(clean, value, opacity)
    letters = layer > 0
    background = fill_mask(marked, letters, 3).astype(np.float32)
    overlay = estimate_overlay(marked, letters, background)
    assert overlay.colour == value and abs(overlay.opacity - opacity) < 0.03
    restored, changed = unblend(marked, letters)
    core = layer == 255
    assert changed[core].mean() > 0.95
    assert np.abs(marked[core].astype(int) - clean[core]).mean() > 20  # what the watermark did there
    assert np.abs(restored[core].astype(int) - clean[core]).mean() < 2  # computed back
    assert (restored[~letters] == marked[~letters]).all()  # nothing outside the mask moves


def test_unblending_leaves_marked_pixels_that_do_not_fit_the_overlay_alone():
    clean = textured()
    marked, layer = overlaid(clean, 255)
    box = np.zeros(layer.shape, bool)
    box[30:90, 10:230] = True  # a text box: the letters and the fabric between them
    restored, changed = unblend(marked, box)
    fabric = box & cv2.dilate((layer > 0).astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool).__invert__()
    assert changed[fabric].mean() < 0.02 and np.abs(restored[fabric].astype(int) - clean[fabric]).max() <= 1
    assert psnr(restored, clean) > psnr(marked, clean) + 10


def test_unblending_inpaints_the_fallback_when_no_overlay_can_be_estimated():
    flat = np.full((40, 40, 3), 128, np.uint8)
    speck = np.zeros((40, 40), bool)
    speck[20, 20] = True  # far too few pixels to tell an opacity
    flat[speck] = 0
    restored, changed = unblend(flat, speck)
    assert (changed == speck).all() and abs(int(restored[20, 20, 0]) - 128) <= 2
    empty = np.zeros((40, 40), bool)
    assert unblend(flat, empty)[0] is flat


def tiled(height: int = 200, width: int = 260, step_y: int = 40, step_x: int = 90) -> np.ndarray:
    """A probability map of a word tiled as the synthetic watermark tiles it: rows ``step_y`` apart, every other
    row shifted by half of ``step_x``."""
    layer = np.zeros((height, width), np.uint8)
    for row, y in enumerate(range(20 - step_y, height + step_y, step_y)):
        for x in range(-step_x - (row % 2) * step_x // 2, width, step_x):
            cv2.putText(layer, "PROOF", (x, y), cv2.FONT_HERSHEY_SIMPLEX, 0.6, 255, 2, cv2.LINE_AA)
    return layer.astype(np.float32) / 255


def test_the_repeats_of_a_tiled_watermark_are_found_and_average_away_a_false_alarm():
    probability = tiled()
    first, second = repeat_lattice(probability)
    # the true lattice: (0, 90) and (40, 45); the found shifts must span the same lattice
    basis = np.array([[0, 90], [40, 45]])
    for shift in (first, second):
        coefficients = np.linalg.solve(basis.T, np.array(shift, float))
        assert np.allclose(coefficients, np.round(coefficients), atol=1e-6), shift
    assert abs(np.linalg.det(np.array([first, second], float))) == pytest.approx(abs(np.linalg.det(basis)))
    noisy = probability.copy()
    noisy[150:160, 10:20] = 1.0  # a false alarm on fabric, in one tile only
    averaged = repeat_mean(noisy, first, second)
    assert averaged[150:160, 10:20].max() < 0.4  # diluted by the tiles where it is not
    letters = probability > 0.9
    assert (averaged[letters] >= 0.4).mean() > 0.95  # the letters, found in every tile, stay
    assert repeat_lattice(np.zeros((64, 64), np.float32)) is None  # nothing repeats in a flat map


def test_the_repeat_median_ignores_a_false_alarm_in_a_few_tiles_that_the_mean_would_keep():
    probability = tiled()
    first, second = repeat_lattice(probability)
    noisy = probability.copy()
    for top, left in ((150, 10), (60, 200)):  # fabric false alarms, each in one tile, far stronger than the letters
        noisy[top:top + 10, left:left + 10] = 50.0
    median = repeat_median(noisy, first, second, rows=7)  # an odd block height: the blocks must join exactly
    assert median[150:160, 10:20].max() < 0.2 and median[60:70, 200:210].max() < 0.2
    assert repeat_mean(noisy, first, second)[150:160, 10:20].max() > 0.4  # the mean is pulled up by it
    letters = probability > 0.9
    assert (median[letters] >= 0.4).mean() > 0.95
    # the median of a map that is the same in every tile is the map itself, away from the borders
    inner = (slice(60, 140), slice(100, 160))
    assert np.abs(repeat_median(probability, first, second)[inner] - probability[inner]).max() < 0.05


def test_unblending_inpaints_letter_pixels_over_a_hidden_patch_and_leaves_stray_white_alone():
    # Under a thick stroke the inpainted background guess cannot see a brighter patch of the photo, so the alpha
    # computed there comes out above the opacity (here about 1.3x): those pixels are still letter, and inpainted.
    # A pure white thread inside the mark (alpha about 2.5x) does not fit the overlay and stays as it is.
    clean = textured()
    clean[56:64, 60:140] = np.clip(clean[56:64, 60:140].astype(int) + 35, 0, 255)  # the hidden patch
    stroke = np.zeros(clean.shape[:2], bool)
    stroke[50:70, 20:220] = True
    alpha = 0.4
    marked = np.clip(clean * (1 - alpha) + 255 * alpha + 0.5, 0, 255).astype(np.uint8)
    marked[~stroke] = clean[~stroke]
    marked[60, 160:170] = 255  # the white thread
    restored, changed = unblend(marked, stroke)
    patch = np.zeros_like(stroke)
    patch[56:64, 60:140] = True
    assert changed[patch].mean() > 0.9
    assert np.abs(restored[patch].astype(int) - clean[patch]).mean() < np.abs(marked[patch].astype(int) - clean[patch]).mean() - 10
    assert not changed[60, 160:170].any() and (restored[60, 160:170] == 255).all()


def test_the_letters_read_over_the_repeats_keep_faint_edges_and_drop_the_halo_and_a_row_that_is_not_there():
    # A detector's mask is the letters plus a halo two pixels wide; the photo is noisy (sigma 6), so a halo pixel's
    # own alpha often reads as a faint letter (18 % of them), which the average over the repeats does not; the
    # tiling's last row is cut off (not drawn), so averaging over the repeats alone would put letters there.
    rng = np.random.default_rng(3)
    weave = cv2.GaussianBlur(rng.normal(0, 6, (200, 260)).astype(np.float32), (0, 0), 1.5)
    clean = np.clip(np.full((200, 260, 3), (120, 90, 70), np.float32) + weave[..., None], 0, 255).astype(np.uint8)
    full = tiled()
    layer = full.copy()
    layer[162:200] = 0  # the row whose baseline is at y 180 is not drawn
    missing = (full > 0) & (layer == 0)
    alpha = layer[..., None] * 0.45
    seen = np.clip(clean * (1 - alpha) + 255 * alpha + rng.normal(0, 6, clean.shape) + 0.5, 0, 255).astype(np.uint8)
    letters = layer > 0
    mask = cv2.dilate(letters.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    lattice = repeat_lattice(full)
    found = letters_over_repeats(seen, mask, lattice)
    assert found[letters].mean() > 0.9
    faint = letters & (layer < 0.3)  # anti-aliased edges: a change of at most 0.3 x 0.45 x 135 = 18 grey levels
    assert faint.sum() > 500 and found[faint].mean() > 0.6
    halo = mask & ~letters
    assert found[halo].mean() < 0.05
    assert found[missing].mean() < 0.05
    # without repeats to read them over, a flat map has no overlay to estimate: the mask comes back as it was
    flat = np.full((64, 64, 3), 128, np.uint8)
    square = np.zeros((64, 64), bool)
    square[20:30, 20:30] = True
    assert letters_over_repeats(flat, square, ((0, 16), (16, 0))) is square
