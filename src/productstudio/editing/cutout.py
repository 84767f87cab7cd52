"""Background removal: a salient-object net's mask, cleaned up into a product cut-out.

    cutout = cut_out(photo_rgb, segmenter, settings.edit.cutout)
    cutout.alpha, cutout.foreground          # composite as foreground * alpha + canvas * (1 - alpha)

Recipe (every step measured on the labelled set, ``editing.segmentation_eval``):

1. The photo is shrunk to the net's input (``work_size``). When that first map is nearly empty (u2netp's
   known failure on garments that fill the frame), the net runs again with a margin of ``pad_fraction`` of the
   longer side around the photo, filled by repeating its border pixels: a product that fills the frame is not
   a salient *object* to u2netp until it has a surround. Only then: with the margin on every photo, touching-edge
   composites gained (worst IoU 0.50 -> 0.95) but a garment lying at the edge of the background became salient
   too and held-out photos lost (mean IoU 0.981 -> 0.956 on a validation-only set); retrying whenever the first
   map reached the frame lost as well (0.971). A constant grey margin is much worse: the net then segments the
   whole photo as one framed object.
2. Optionally (``flip_average``, off by default: it doubles the cost) the net also runs on the mirror image and
   the two maps are combined by their minimum (salient in both views). The mean was measured worse than no
   mirror at all (a distractor salient in one view survives at 0.5).
3. At that low resolution: keep the largest connected part and any part at least ``MIN_PART`` of its area (a
   pair of shoes is two parts; a quarter kept a garment lying in the background), drop the rest, fill holes
   that do not reach the photo's border. Parts touching two or more of the photo's edges (clutter cut by the
   frame) are not candidates when a part touching at most one edge has ``FRAMED_PART`` of the largest's area,
   nor are parts with under ``UNSURE_PART`` of the surest part's share of sure pixels (a garment in the
   background is half-salient: 35 % sure pixels beside the product's 97 %). Found on the labelled set's three
   worst composites (IoU 0.44-0.50 -> 0.98-0.99); they changed no image of a validation-only set, whose worst
   composite (0.67: a background sweater touching the skirt, one connected part) they cannot mend. The same
   frame rule then runs inside the kept part at rising confidence (``SPLIT_LEVELS``): a white shoe joined to
   the shorts, touching two edges, came apart from them at 0.95 (IoU 0.67 -> 0.91; no other composite of
   either set changed). The sweater above is as sure as the skirt at every level and stays.
4. The low-resolution mask is upsampled and its edges snapped to the photo's edges with a guided filter
   (He et al. 2010) on the photo's grey levels, at ``refine_radius`` pixels per 1024 px, its slope around 0.5
   steepened (``EDGE_CONTRAST``: a product's edge is about a pixel wide, the filter's ramp is wider). Photos larger than
   ``REFINE_SIDE`` are refined at that size and the filter's linear coefficients upsampled (the fast guided
   filter), so a 24 MP photo costs a few full-size float32 planes, never a full-size filter.
5. Edge pixels (0 < alpha < 0.9) take their colour from the nearby opaque product (a normalised blur of the
   photo over the opaque mask), so the old background does not show as a halo on the new one.

Memory: everything but the final alpha, the foreground and two coefficient planes lives at <= 1024 px.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from productstudio.config import CutoutSettings

NEARLY_EMPTY = 0.02  # a first map with less product than this gets the margin (u2netp's frame-filling failure)
FRAMED_PART = 0.2  # a part touching at most one edge and this share of the largest beats parts touching 2+ edges
SPLIT_LEVELS = (0.7, 0.8, 0.9, 0.95, 0.98)  # confidence levels at which a mask touching 2+ edges is re-split
SURE = 0.9  # a pixel the net is sure of
UNSURE_PART = 0.5  # a big part with under this share of the surest big part's sure pixels is not a candidate
MIN_PART = 0.5  # parts at least this share of the largest part's area are kept (a pair of shoes is two parts)
REFINE_SIDE = 1024  # the guided filter and the colour decontamination run at most at this longer side
GUIDED_EPS = 1e-3  # guided-filter regularisation (grey levels in [0, 1]); smaller follows the photo's edges more
EDGE_CONTRAST = 2.0  # the refined alpha's slope around 0.5 (1: as filtered; 2: half as wide a soft edge)
OPAQUE = 0.9  # alpha from which a pixel counts as product for the edge-colour estimate


@dataclass
class Cutout:
    """A product cut out of one photo, at the photo's own size (H, W)."""

    alpha: np.ndarray  # (H, W) float32 in [0, 1]: 1 product, 0 background
    foreground: np.ndarray  # (H, W, 3) uint8: the photo with edge colours decontaminated (use with alpha)
    box: tuple[int, int, int, int]  # (x0, y0, x1, y1), x1/y1 exclusive: the bounding box of alpha >= 0.5
    foreground_fraction: float  # mean of (alpha >= 0.5) over the photo
    edges_touched: int  # how many of the photo's 4 edges the mask (alpha >= 0.5) touches
    uncertain_fraction: float  # share of the product's pixels (alpha >= 0.1) with 0.1 < alpha < 0.9


def plain_settings(work_size: int = 320) -> CutoutSettings:
    """The off-the-shelf model as rembg runs it: the net's upsampled map, none of our clean-up."""
    return CutoutSettings(work_size=work_size, pad_fraction=0.0, flip_average=False, keep_largest=False,
                          refine_radius=0, decontaminate=False)


def needs_margin(probability: np.ndarray) -> bool:
    """Step 1's test: hardly anything is salient in the first map (u2netp's failure on frame-filling products)."""
    return bool((probability >= 0.5).mean() < NEARLY_EMPTY)


def low_res_mask(photo: np.ndarray, segmenter, settings: CutoutSettings) -> np.ndarray:
    """The net's probability map of the photo (steps 1-2), at the photo's aspect and about ``work_size``: first
    as the photo is, then, when that map is nearly empty, again with the margin."""
    probability = framed_mask(photo, segmenter, settings, 0.0)
    if settings.pad_fraction > 0 and needs_margin(probability):
        probability = framed_mask(photo, segmenter, settings, settings.pad_fraction)
    return probability


def framed_mask(photo: np.ndarray, segmenter, settings: CutoutSettings, pad_fraction: float) -> np.ndarray:
    height, width = photo.shape[:2]
    size = settings.work_size
    pad = pad_fraction * max(height, width)
    inner_w = max(1, round(width * size / (width + 2 * pad)))
    inner_h = max(1, round(height * size / (height + 2 * pad)))
    left, top = (size - inner_w) // 2, (size - inner_h) // 2
    small = cv2.resize(photo, (inner_w, inner_h), interpolation=cv2.INTER_AREA)
    framed = cv2.copyMakeBorder(small, top, size - inner_h - top, left, size - inner_w - left, cv2.BORDER_REPLICATE)
    if settings.flip_average:
        # two single runs: measured faster than one batch of two on one core
        mirrored = segmenter.predict(framed[:, ::-1].copy(), size)[:, ::-1]
        direct = segmenter.predict(framed, size)
        probability = np.minimum(direct, mirrored)  # salient in both views: a distractor rarely is
    else:
        probability = segmenter.predict(framed, size)
    return np.ascontiguousarray(probability[top:top + inner_h, left:left + inner_w], dtype=np.float32)


def edges_of_box(box, shape: tuple[int, int]) -> int:
    """How many of an (H, W) image's 4 edges a box (x, y, width, height) reaches."""
    x, y, width, height = (int(v) for v in box)
    return int(x == 0) + int(y == 0) + int(x + width == shape[1]) + int(y + height == shape[0])


def clean_mask(probability: np.ndarray) -> np.ndarray:
    """Step 3: drop small parts away from the product, fill holes enclosed by it. Returns a new map."""
    solid = (probability >= 0.5).astype(np.uint8)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(solid, connectivity=8)
    if count <= 1:
        return probability.copy()
    areas = stats[1:, cv2.CC_STAT_AREA]
    sure = np.bincount(labels.ravel(), weights=(probability > SURE).ravel(), minlength=count)[1:] / areas
    big = areas >= FRAMED_PART * areas.max()
    # a part the net is unsure of (a garment in the background, half-salient) loses to one it is sure of
    areas = np.where(sure >= UNSURE_PART * sure[big].max(), areas, 0)
    framed = np.array([edges_of_box(box, solid.shape) <= 1 for box in stats[1:, :4]])
    candidates = framed & (areas >= FRAMED_PART * areas.max())
    if candidates.any():
        # background clutter cut by the photo's frame (touching 2+ edges) loses to a substantial product the
        # frame holds; a product filling the frame has no such rival and stays
        areas = np.where(candidates, areas, 0)
    kept_labels = 1 + np.flatnonzero(areas >= MIN_PART * areas.max())
    kept = np.isin(labels, kept_labels).astype(np.uint8)
    kept = without_framed_clutter(probability, kept)
    # soft pixels next to a kept part stay (its fuzzy edge); anything further away goes
    near = cv2.dilate(kept, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5)))
    cleaned = probability * near
    # holes: background regions that do not reach the border
    background = 1 - kept
    count, labels = cv2.connectedComponents(background, connectivity=4)
    border = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    holes = (labels > 0) & ~np.isin(labels, border)
    cleaned[holes] = 1.0
    return cleaned


def without_framed_clutter(probability: np.ndarray, kept: np.ndarray) -> np.ndarray:
    """Step 3's frame rule inside one part: a kept mask touching 2+ edges may be the product *joined* to clutter
    cut by the frame (a white shoe lying against the shorts). At rising confidence the two come apart. Every
    pixel of the mask goes with its nearest piece at that level; at the first level where the largest piece's
    share touches at most one edge while the rest touches 2+, the rest goes, but for pieces of at least
    ``MIN_PART`` of the largest's area touching at most one edge (the second shoe). A product that fills the
    frame keeps its edges at every level and stays whole."""
    if edges_of_box(cv2.boundingRect(kept), kept.shape) < 2:
        return kept
    for level in SPLIT_LEVELS:
        core = ((probability >= level) & (kept > 0)).astype(np.uint8)
        count, labels, stats, _ = cv2.connectedComponentsWithStats(core, connectivity=8)
        if count <= 2:
            continue
        _, nearest = cv2.distanceTransformWithLabels(1 - core, cv2.DIST_L2, 5, labelType=cv2.DIST_LABEL_PIXEL)
        piece_of_seed = np.zeros(nearest.max() + 1, np.int32)
        piece_of_seed[nearest[core > 0]] = labels[core > 0]
        share = np.where(kept > 0, piece_of_seed[nearest], 0)  # which piece each pixel of the mask goes with
        areas = stats[1:, cv2.CC_STAT_AREA]
        largest = 1 + int(np.argmax(areas))
        keep = [largest] + [piece for piece in range(1, count) if piece != largest
                            and areas[piece - 1] >= MIN_PART * areas.max()
                            and edges_of_box(cv2.boundingRect((share == piece).astype(np.uint8)), kept.shape) <= 1]
        product = np.isin(share, keep).astype(np.uint8)
        rest = (kept > 0) & (product == 0)
        if (edges_of_box(cv2.boundingRect(product), kept.shape) <= 1
                and edges_of_box(cv2.boundingRect(rest.astype(np.uint8)), kept.shape) >= 2):
            return product
    return kept


def guided_coefficients(guide: np.ndarray, source: np.ndarray, radius: int,
                        eps: float) -> tuple[np.ndarray, np.ndarray]:
    """He et al.'s guided filter with a grey guide: the mean coefficients (a, b) with output = a * guide + b."""
    window = (2 * radius + 1, 2 * radius + 1)

    def mean(x):
        return cv2.boxFilter(x, cv2.CV_32F, window, borderType=cv2.BORDER_REFLECT)

    mean_i, mean_p = mean(guide), mean(source)
    var_i = mean(guide * guide) - mean_i * mean_i
    cov_ip = mean(guide * source) - mean_i * mean_p
    a = cov_ip / (var_i + eps)
    b = mean_p - a * mean_i
    return mean(a), mean(b)


def refine(photo: np.ndarray, probability: np.ndarray, radius: int) -> np.ndarray:
    """Step 4: the low-resolution map at the photo's size, edges snapped to the photo's. (H, W) float32."""
    height, width = photo.shape[:2]
    scale = min(1.0, REFINE_SIDE / max(height, width))
    work_w, work_h = max(1, round(width * scale)), max(1, round(height * scale))
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    grey = cv2.cvtColor(cv2.resize(photo, (work_w, work_h), interpolation=interpolation), cv2.COLOR_RGB2GRAY)
    guide = grey.astype(np.float32) / 255
    source = cv2.resize(probability, (work_w, work_h), interpolation=cv2.INTER_LINEAR)
    a, b = guided_coefficients(guide, source, max(1, round(radius * max(work_w, work_h) / 1024)), GUIDED_EPS)
    if scale == 1:
        alpha = a * guide + b
    else:  # the fast guided filter: coefficients are smooth, so upsampling them loses little
        alpha = cv2.resize(a, (width, height), interpolation=cv2.INTER_LINEAR)
        b = cv2.resize(b, (width, height), interpolation=cv2.INTER_LINEAR)
        full_grey = cv2.cvtColor(photo, cv2.COLOR_RGB2GRAY)
        for start in range(0, height, 1024):  # row blocks: no extra full-size float planes
            rows = slice(start, start + 1024)
            alpha[rows] *= full_grey[rows].astype(np.float32) / 255
            alpha[rows] += b[rows]
        del b
    if EDGE_CONTRAST != 1:
        alpha -= 0.5
        alpha *= EDGE_CONTRAST
        alpha += 0.5
    np.clip(alpha, 0, 1, out=alpha)
    return alpha


def decontaminated(photo: np.ndarray, alpha: np.ndarray, radius: int) -> np.ndarray:
    """Step 5: the photo with its edge pixels (0 < alpha < OPAQUE) recoloured from the nearby opaque product."""
    height, width = photo.shape[:2]
    scale = min(1.0, REFINE_SIDE / max(height, width))
    work_w, work_h = max(1, round(width * scale)), max(1, round(height * scale))
    small = cv2.resize(photo, (work_w, work_h), interpolation=cv2.INTER_AREA).astype(np.float32)
    opaque = (cv2.resize(alpha, (work_w, work_h), interpolation=cv2.INTER_AREA) >= OPAQUE).astype(np.float32)
    radius = max(2, round(radius * max(work_w, work_h) / 1024))
    window = (4 * radius + 1, 4 * radius + 1)  # wide enough to reach across the edge band into the product
    weight = cv2.boxFilter(opaque, -1, window, borderType=cv2.BORDER_REFLECT)
    colour = cv2.boxFilter(small * opaque[..., None], -1, window, borderType=cv2.BORDER_REFLECT)
    reached = weight > 1e-3
    estimate = small.copy()
    estimate[reached] = colour[reached] / weight[reached, None]
    estimate = np.clip(estimate + 0.5, 0, 255).astype(np.uint8)
    if scale < 1:
        estimate = cv2.resize(estimate, (width, height), interpolation=cv2.INTER_LINEAR)
    foreground = photo.copy()
    edge = (alpha > 0) & (alpha < OPAQUE)
    foreground[edge] = estimate[edge]
    return foreground


def mask_stats(alpha: np.ndarray) -> dict:
    """The Cutout's statistics of an alpha map (see the dataclass)."""
    solid = alpha >= 0.5
    rows, cols = np.flatnonzero(solid.any(axis=1)), np.flatnonzero(solid.any(axis=0))
    box = (int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1) if rows.size else (0, 0, 0, 0)
    edges = int(solid[0].any()) + int(solid[-1].any()) + int(solid[:, 0].any()) + int(solid[:, -1].any())
    product = int(np.count_nonzero(alpha >= 0.1))
    uncertain = int(np.count_nonzero((alpha > 0.1) & (alpha < 0.9)))
    return {"box": box, "foreground_fraction": float(solid.mean()), "edges_touched": edges,
            "uncertain_fraction": uncertain / product if product else 0.0}


def cut_out(photo: np.ndarray, segmenter, settings: CutoutSettings = CutoutSettings()) -> Cutout:
    """(H, W, 3) uint8 RGB photo -> its Cutout. ``segmenter`` is a loaded ``models.salient.SalientSegmenter``."""
    if photo.ndim != 3 or photo.shape[2] != 3 or photo.dtype != np.uint8:
        raise ValueError(f"expected an (H, W, 3) uint8 RGB photo, got {photo.shape} {photo.dtype}")
    height, width = photo.shape[:2]
    probability = low_res_mask(photo, segmenter, settings)
    if settings.keep_largest:
        probability = clean_mask(probability)
    radius = settings.refine_radius
    if radius > 0:
        alpha = refine(photo, probability, radius)
    else:
        alpha = cv2.resize(probability, (width, height), interpolation=cv2.INTER_LINEAR)
        np.clip(alpha, 0, 1, out=alpha)
    foreground = decontaminated(photo, alpha, max(radius, 4)) if settings.decontaminate else photo.copy()
    return Cutout(alpha=alpha, foreground=foreground, **mask_stats(alpha))
