"""Watermark removal, for the merchant's *own* images only (a photo they shot and watermarked themselves, or an
old proof): text found by the OCR detector, un-blended (or shrunk to its letters and inpainted).

    text_detector = load_text_detector(weights_dir("ppocr-det"))
    mask = watermark_mask(photo, text_detector)          # (H, W) bool: the letters' pixels
    clean = remove_watermark(photo, text_detector)       # the text boxes un-blended (the letters inpainted if not)
    clean, changed = unblend(photo, mask)                # the same un-blending for any mask (e.g. a learned detector's)

A learned detector (``edit detect-train`` with ``edit.detector.defects: [watermark]``) finds more of the letters
than OCR but also marks fabric; watermarks are usually tiled, so its probabilities are averaged over the tiling's
repeats (``repeat_lattice``: the two shortest independent shifts at which the probability map matches itself)
before thresholding: a letter is found in every tile, a fabric false alarm only in one. What is found is then
read letter by letter from the photo itself (``letters_over_repeats``): each marked pixel's alpha against the
estimated overlay, averaged over the same repeats, keeps the letters' faint anti-aliased edges and drops the halo
the detector draws around them.

    clean = remove_watermark_learned(photo, detector, min_blob=20)

The OCR detector (PP-OCRv4 DBNet, ``models.text_detector``) gives boxes around words; a box is mostly the photo.
Un-blending takes whole boxes (its overlay test picks the letters); inpainting needs the letters themselves:
watermark strokes are thin and either brighter or darker than what is under them, so a morphological top-hat
(bright letters) or black-hat (dark letters: the stronger of the two in the box decides) larger than a stroke,
thresholded, marks them (inpainting whole boxes would repaint a tenth of the photo). ``bench/bench_watermark.py``
measures the mask against the true letters and the fill against inpainting
with them, on the restoration table's watermark crops.

Un-blending: a semi-transparent watermark is the photo mixed with one colour at one opacity,
``seen = photo x (1 - alpha) + colour x alpha``, so where ``alpha`` is known the photo under a letter can be
computed back exactly instead of invented by inpainting. ``estimate_overlay`` finds the colour (white or black)
and the opacity from the marked pixels against an inpainted background (the letters share one opacity, so the
per-pixel alphas pile up at it); ``unblend`` computes the photo back where a pixel's alpha matches that opacity
(the letters' cores), inpaints the pixels that are only partly covered (anti-aliased edges), and leaves the
marked pixels whose colour does not fit the overlay at all as they are (fabric a detector marked by mistake).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from productstudio.models.defect_detector import defect_probability, drop_small_blobs, fill_mask

LIMIT_SIDE = 640  # the text detector's working size (its default; 960 covered 1 % more letter pixels at 2.5x the time)
STROKE_KERNEL = 7  # px: wider than a watermark's stroke, so the hat keeps the strokes and drops the fabric
STROKE_LEVEL = 6  # grey levels above (or below) the surroundings that make a pixel a letter's
# Un-blending (chosen on validation crops, bench/bench_watermark.py --split validation):
OVERLAY_COLOURS = (0.0, 255.0)  # black or white text: what watermarks are made of
EVIDENCE_SPAN = 50  # a pixel tells the opacity only where the background is this far (grey levels) from the colour
NO_EVIDENCE_SPAN = 20  # ... and nothing at all below this: such pixels are left as they are
CORE_TOLERANCE = 0.15  # a pixel whose alpha is within this share of the opacity is a letter's core: un-blended
FAINT_SHARE = 0.1  # alpha below this share of the opacity: not covered, left as it is; between: inpainted
# ... and above this share of the opacity still inpainted: under a thick letter the inpainted background guess is
# off, which inflates the alpha. On 60 validation crops with the learned mask, 1.15 (the core's own bound) left
# 5.4 % of the visible letter pixels alone for an alpha above it (7.9 % of them found but unchanged in all); 1.5 took visible recall from 0.880 to 0.921 and PSNR from 35.2 to 36.4 dB
# (true mask inpainted: 36.2) for 0.04 points more false-positive area; 2.0 and no bound both scored lower PSNR.
EDGE_CEILING = 1.5
# A learned watermark detector's probabilities, averaged over the repeats of a tiled watermark, marked from here
# (chosen on validation crops among 0.3 / 0.4 / 0.5, bench/bench_watermark.py --split validation --tune):
REPEAT_THRESHOLD = 0.4
# The letters read over the repeats: a pixel whose alpha, averaged over the repeats, is at least this share of the
# opacity is a letter's. On 60 validation crops 0.05 kept
# recall 0.883 at 0.98 % false-positive area and un-blended to 36.55 dB; 0.02: 0.893 at 1.10 %, 36.44; 0.1: 0.865
# at 0.85 %, 36.61; 0.2: 0.817, 36.06. About 4 % of the letters' pixels carry less than 0.05 of the opacity (the
# outermost anti-aliased fringe, a change of a few grey levels).
LETTER_LAYER = 0.05
SHORTEST_REPEAT = 8  # px: shorter shifts are the letters' own width, not a repeat
REPEAT_SLACK = 0.001  # correlations this close to the best are ties (an exact tiling)


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


def remove_watermark(rgb: np.ndarray, text_detector, radius: int = 3, fill: str = "unblend") -> np.ndarray:
    """``rgb`` with any text the detector finds removed; unchanged when none is found.

    ``fill="unblend"`` (the default): the text boxes are un-blended, the overlay test picking the letters inside them
    (where no overlay can be estimated, the letters are inpainted). ``fill="inpaint"``: the letters are inpainted."""
    boxes = text_detector.detect(rgb, LIMIT_SIDE)
    letters = letter_mask(rgb, boxes)
    if fill == "inpaint":
        return fill_mask(rgb, letters, radius)
    return unblend(rgb, box_mask(rgb.shape[:2], boxes), radius, fallback=letters)[0]


def unblend_constants() -> str:
    """The constants un-blending depends on, for provenance digests."""
    return f"{OVERLAY_COLOURS}:{EVIDENCE_SPAN}:{NO_EVIDENCE_SPAN}:{CORE_TOLERANCE}:{FAINT_SHARE}:{EDGE_CEILING}"


def box_mask(shape: tuple[int, int], boxes) -> np.ndarray:
    """(H, W) bool: inside any of the text boxes."""
    mask = np.zeros(shape, bool)
    for box in boxes:
        mask[box.y0:box.y1, box.x0:box.x1] = True
    return mask


@dataclass(frozen=True)
class Overlay:
    """What was blended over the photo: the colour (0-255 grey) and its opacity."""

    colour: float
    opacity: float


def pixel_alpha(rgb: np.ndarray, background: np.ndarray, colour: float) -> tuple[np.ndarray, np.ndarray]:
    """Per pixel, the alpha that best explains ``rgb`` as ``background`` mixed with ``colour`` (least squares over
    the channels), and how far the background is from the colour (mean over channels: the alpha's leverage)."""
    span = colour - background
    alpha = ((rgb.astype(np.float32) - background) * span).sum(2) / np.maximum((span ** 2).sum(2), 1.0)
    return alpha, np.abs(span).mean(2)


def estimate_overlay(rgb: np.ndarray, mask: np.ndarray, background: np.ndarray) -> Overlay | None:
    """The overlay's colour and opacity from the marked pixels, or None when too few pixels tell it.

    For each candidate colour the alphas of the marked pixels with a background far from it are collected; the
    letters all share one opacity, so for the right colour they pile up at one value. The candidate whose pile
    holds the largest share of its evidence wins, at the mean of its pile."""
    best = None
    for colour in OVERLAY_COLOURS:
        alpha, span = pixel_alpha(rgb, background, colour)
        evidence = alpha[mask & (span > EVIDENCE_SPAN)]
        values = evidence[(evidence > 0.15) & (evidence < 0.95)]
        if values.size < 30:
            continue
        counts, edges = np.histogram(values, bins=40, range=(0.15, 0.95))
        peak = int(np.argmax(np.convolve(counts, [1, 2, 1], "same")))
        pile = values[np.abs(values - (edges[peak] + edges[peak + 1]) / 2) < 0.05]
        share = pile.size / evidence.size  # a share, not a count: the two colours see different evidence
        if best is None or share > best[0]:
            best = (share, Overlay(colour, float(pile.mean())))
    return best[1] if best else None


def unblend(rgb: np.ndarray, mask: np.ndarray, radius: int = 3,
            fallback: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``rgb`` with a semi-transparent white or black overlay inside ``mask`` undone, and the pixels changed.

    The background under the mask is first guessed by inpainting; with the overlay's colour and opacity estimated
    from it, the letters' cores are computed back (``(seen - colour x opacity) / (1 - opacity)``), their partly
    covered edges are inpainted from the computed-back cores and the untouched surroundings, and marked pixels
    that do not fit the overlay are left alone. When the overlay cannot be estimated, ``fallback`` (default: the
    mask) is inpainted."""
    if not mask.any():
        return rgb, mask
    background = fill_mask(rgb, mask, radius).astype(np.float32)
    overlay = estimate_overlay(rgb, mask, background)
    if overlay is None:
        fallback = mask if fallback is None else fallback
        return fill_mask(rgb, fallback, radius), fallback
    alpha, span = pixel_alpha(rgb, background, overlay.colour)
    evidence = mask & (span > NO_EVIDENCE_SPAN)
    core = evidence & (np.abs(alpha - overlay.opacity) <= CORE_TOLERANCE * overlay.opacity)
    edge = (evidence & ~core & (alpha > FAINT_SHARE * overlay.opacity)
            & (alpha < EDGE_CEILING * overlay.opacity))
    restored = rgb.astype(np.float32)
    restored[core] = (restored[core] - overlay.colour * overlay.opacity) / (1 - overlay.opacity)
    restored = np.clip(np.round(restored), 0, 255).astype(np.uint8)
    return fill_mask(restored, edge, radius), core | edge


def repeat_lattice(probability: np.ndarray, reach: float = 0.6) -> tuple[tuple[int, int], tuple[int, int]] | None:
    """The two shortest independent shifts (dy, dx) under which ``probability`` repeats best, or None.

    From the autocorrelation of the map (by FFT, padded so shifts up to ``reach`` of a side do not wrap), divided by
    the energy of the two overlapping parts: among the local peaks at least ``SHORTEST_REPEAT`` px long, the shortest
    of those nearly as strong as the strongest is the first shift; the same among the peaks not parallel to it
    gives the second."""
    height, width = probability.shape
    most_y, most_x = int(reach * height), int(reach * width)
    x = probability.astype(np.float64) - probability.mean()
    size = (height + most_y + 1, width + most_x + 1)
    spectrum = np.fft.rfft2(x, s=size)
    correlation = np.fft.irfft2(spectrum * np.conj(spectrum), s=size)
    if correlation[0, 0] <= 1e-9:
        return None  # a flat map: nothing repeats
    # shifts dy in [0, most_y], dx in [-most_x, most_x] (the other half-plane mirrors this one)
    window = np.concatenate([correlation[:most_y + 1, size[1] - most_x:], correlation[:most_y + 1, :most_x + 1]], 1)
    dy, dx = np.mgrid[0:most_y + 1, -most_x:most_x + 1]
    # Pearson-like: divided by the energy of the two overlapping parts themselves, so an exact repeat scores 1
    energy = np.zeros((height + 1, width + 1))
    energy[1:, 1:] = np.cumsum(np.cumsum(x * x, 0), 1)

    def rectangle(top, bottom, left, right):
        return energy[bottom, right] - energy[top, right] - energy[bottom, left] + energy[top, left]

    shifted = rectangle(dy, height, np.maximum(dx, 0), width + np.minimum(dx, 0))
    unshifted = rectangle(0, height - dy, np.maximum(-dx, 0), width - np.maximum(dx, 0))
    window = (window / np.sqrt(np.maximum(shifted * unshifted, 1e-12))).astype(np.float32)
    peaks = ((window >= cv2.dilate(window, np.ones((5, 5), np.uint8)))
             & (np.hypot(dy, dx) >= SHORTEST_REPEAT) & ((dy > 0) | (dx > 0)) & (window > 0))
    strength = window[peaks]
    candidates = list(zip(dy[peaks].tolist(), dx[peaks].tolist(), strength.tolist()))
    if not candidates:
        return None
    first = shortest_of_the_best(candidates)
    others = [c for c in candidates
              if abs(first[0] * c[1] - first[1] * c[0]) > 0.3 * np.hypot(*first) * np.hypot(c[0], c[1])]
    return (first, shortest_of_the_best(others)) if others else None


def shortest_of_the_best(candidates: list[tuple[int, int, float]], slack: float = REPEAT_SLACK) -> tuple[int, int]:
    """The shortest shift among those that repeat nearly as well as the best one (an exactly tiled map matches
    itself equally well at every lattice shift: the shortest are the lattice's own steps, not multiples)."""
    best = max(c[2] for c in candidates)
    dy, dx, _ = min((c for c in candidates if c[2] >= best - slack), key=lambda c: c[0] ** 2 + c[1] ** 2)
    return dy, dx


def _repeat_shifts(shape: tuple[int, int], first: tuple[int, int], second: tuple[int, int], repeats: int):
    """(here, there) slice pairs: the pixels ``a x first + b x second`` away (|a|, |b| <= ``repeats``) that fall
    inside an image of ``shape``, the zero shift included."""
    height, width = shape
    for a in range(-repeats, repeats + 1):
        for b in range(-repeats, repeats + 1):
            dy, dx = a * first[0] + b * second[0], a * first[1] + b * second[1]
            if abs(dy) >= height or abs(dx) >= width:
                continue
            yield ((slice(max(0, -dy), min(height, height - dy)), slice(max(0, -dx), min(width, width - dx))),
                   (slice(max(0, dy), min(height, height + dy)), slice(max(0, dx), min(width, width + dx))))


def repeat_mean(values: np.ndarray, first: tuple[int, int], second: tuple[int, int], repeats: int = 8,
                weights: np.ndarray | None = None) -> np.ndarray:
    """Each pixel's mean over the pixels ``a x first + b x second`` away (|a|, |b| <= ``repeats``) inside the
    image, itself included; with ``weights`` (0/1: which pixels count), over those that count (0 where none does)."""
    weights = np.ones(values.shape, np.float64) if weights is None else weights.astype(np.float64)
    weighted = values * weights
    total, count = np.zeros(values.shape, np.float64), np.zeros(values.shape, np.float64)
    for here, there in _repeat_shifts(values.shape, first, second, repeats):
        total[here] += weighted[there]
        count[here] += weights[there]
    return (total / np.maximum(count, 1)).astype(np.float32)


def repeat_median(values: np.ndarray, first: tuple[int, int], second: tuple[int, int], repeats: int = 8,
                  rows: int = 32) -> np.ndarray:
    """Like ``repeat_mean`` but the median: one tile's false alarm, however strong, cannot move it. Computed
    ``rows`` rows at a time so the stack of repeats stays small on a full-size photo."""
    height, width = values.shape
    shifts = list(_repeat_shifts(values.shape, first, second, repeats))
    result = np.empty(values.shape, np.float32)
    for top in range(0, height, rows):
        bottom = min(height, top + rows)
        stack = np.full((len(shifts), bottom - top, width), np.nan, np.float32)
        for layer, (here, there) in zip(stack, shifts):
            start, stop = max(here[0].start, top), min(here[0].stop, bottom)
            if start >= stop:
                continue
            offset = there[0].start - here[0].start
            layer[start - top:stop - top, here[1]] = values[start + offset:stop + offset, there[1]]
        result[top:bottom] = np.nanmedian(stack, axis=0)
    return result


REPEAT_STATISTICS = {"mean": repeat_mean, "median": repeat_median}


def repeat_probability(rgb: np.ndarray, detector, statistic: str = "mean") -> np.ndarray:
    """(H, W) float32: a learned watermark detector's probabilities pooled over the watermark's repeats with
    ``statistic`` (mean or median) when the map repeats; the raw probabilities when it does not."""
    probability = defect_probability(detector, rgb)
    lattice = repeat_lattice(probability)
    return probability if lattice is None else REPEAT_STATISTICS[statistic](probability, *lattice)


def letters_over_repeats(rgb: np.ndarray, mask: np.ndarray, lattice: tuple[tuple[int, int], tuple[int, int]],
                         radius: int = 3) -> np.ndarray:
    """(H, W) bool: the letters of a tiled watermark inside ``mask``, read from the photo itself; ``mask`` when no
    overlay can be estimated.

    Each marked pixel's alpha against the estimated overlay, as a share of its opacity, is averaged over the
    pixels ``lattice`` repeats away wherever the background tells it (far enough from the overlay's colour): the
    letters' layer repeats exactly, the photo's texture and the background guess's errors do not, so the average
    is the letters' coverage, faint anti-aliased edges included, and near 0 on the halo a detector draws around
    them. A pixel is kept where that average reaches ``LETTER_LAYER`` and its own alpha is not 0 or below: the
    repeats alone would extend the tiling into a row the photo does not have (a word cut off at an edge)."""
    background = fill_mask(rgb, mask, radius).astype(np.float32)
    overlay = estimate_overlay(rgb, mask, background)
    if overlay is None:
        return mask
    alpha, span = pixel_alpha(rgb, background, overlay.colour)
    told = span > NO_EVIDENCE_SPAN
    # clipped so one pixel whose background guess is far off cannot outvote its repeats; 0 outside the mask
    share = np.where(mask, np.clip(alpha / overlay.opacity, -0.5, 1.5), 0.0)
    layer = repeat_mean(share, *lattice, weights=told)
    return (layer >= LETTER_LAYER) & (~told | (share > 0))


def learned_watermark_mask(rgb: np.ndarray, detector, threshold: float = REPEAT_THRESHOLD,
                           min_blob: int = 1, radius: int = 3) -> np.ndarray:
    """(H, W) bool: a learned watermark detector's probabilities averaged over the watermark's repeats,
    thresholded, blobs under ``min_blob`` pixels dropped, and the letters read from the photo over the same repeats
    (``letters_over_repeats``); without repeats, the probabilities thresholded."""
    probability = defect_probability(detector, rgb)
    lattice = repeat_lattice(probability)
    if lattice is None:
        return drop_small_blobs(probability >= threshold, min_blob)
    found = drop_small_blobs(repeat_mean(probability, *lattice) >= threshold, min_blob)
    return letters_over_repeats(rgb, found, lattice, radius) if found.any() else found


def load_watermark_detector(directory):
    """The learned watermark detector in ``directory`` and its info; a detector of other defects (dust) is refused
    with one line, since its mask would un-blend specks and fabric instead of letters."""
    from productstudio.errors import ParamsError
    from productstudio.models.defect_detector import load_detector

    model, info = load_detector(directory)
    if "watermark" not in info.get("defects", []):
        raise ParamsError(f"--watermark-detector {directory}: this detector learned {', '.join(info.get('defects', [])) or 'no named defect'}, "
                          "not watermarks; train one with 'productstudio edit watermark-train' "
                          "(or 'dvc repro edit_watermark_detector')")
    return model, info


def remove_watermark_learned(rgb: np.ndarray, detector, radius: int = 3, min_blob: int = 1) -> np.ndarray:
    """``rgb`` with what a learned watermark detector finds (averaged over the repeats, the letters read over them)
    un-blended."""
    return unblend(rgb, learned_watermark_mask(rgb, detector, min_blob=min_blob, radius=radius), radius)[0]
