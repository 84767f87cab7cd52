"""Mask quality against an exact mask: IoU, MAE and the boundary F-measure, plus a summary over many images.

    mask_iou(pred, truth)              # both thresholded at 0.5: |P & T| / |P | T|  (1.0 when both are empty)
    mask_mae(pred, truth)              # mean |pred - truth| of the soft alphas (U^2-Net on DUTS-TE: about 0.044)
    boundary_f_measure(pred, truth)    # DAVIS F: boundary pixels matched within a tolerance (0.0075 of the diagonal)
    summarise(rows)                    # {"iou": {"mean", "min", "p10", "median"}, ...} over per-image rows

Masks are (H, W) arrays: float alphas in [0, 1], bool masks, or uint8 masks in 0..255 (scaled to [0, 1]).
Pure numpy and OpenCV.
"""

from __future__ import annotations

from collections.abc import Iterable

import cv2
import numpy as np

BOUNDARY_TOLERANCE = 0.0075  # of the image diagonal, as in the DAVIS boundary measure (Perazzi et al. 2016)


def as_alpha(mask: np.ndarray) -> np.ndarray:
    """A mask as float32 in [0, 1] (uint8 masks are 0..255)."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"expected an (H, W) mask, got shape {mask.shape}")
    if mask.dtype == np.uint8:
        return mask.astype(np.float32) / 255
    return mask.astype(np.float32)


def _check_pair(pred: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred, truth = as_alpha(pred), as_alpha(truth)
    if pred.shape != truth.shape:
        raise ValueError(f"masks differ in shape: {pred.shape} vs {truth.shape}")
    return pred, truth


def mask_iou(pred: np.ndarray, truth: np.ndarray, threshold: float = 0.5) -> float:
    """Intersection over union of the two masks thresholded at ``threshold`` (1.0 when both are empty)."""
    pred, truth = _check_pair(pred, truth)
    p, t = pred >= threshold, truth >= threshold
    union = np.count_nonzero(p | t)
    return float(np.count_nonzero(p & t) / union) if union else 1.0


def mask_mae(pred: np.ndarray, truth: np.ndarray) -> float:
    """Mean absolute difference of the soft alphas, in [0, 1]."""
    pred, truth = _check_pair(pred, truth)
    return float(np.abs(pred - truth).mean())


def boundary(mask: np.ndarray) -> np.ndarray:
    """The mask's boundary pixels: mask pixels with a 4-neighbour outside it (bool (H, W))."""
    mask = mask.astype(np.uint8)
    eroded = cv2.erode(mask, cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3)), borderType=cv2.BORDER_REPLICATE)
    return (mask > 0) & (eroded == 0)


def boundary_f_measure(pred: np.ndarray, truth: np.ndarray, tolerance: float | None = None,
                       threshold: float = 0.5) -> float:
    """F-measure of boundary pixels: a predicted boundary pixel is right when a true one lies within
    ``tolerance`` pixels (default ``BOUNDARY_TOLERANCE`` of the diagonal, at least 1), and vice versa.
    1.0 when neither mask has a boundary, 0.0 when only one has."""
    pred, truth = _check_pair(pred, truth)
    if tolerance is None:
        tolerance = max(1.0, BOUNDARY_TOLERANCE * float(np.hypot(*pred.shape)))
    pred_edge, true_edge = boundary(pred >= threshold), boundary(truth >= threshold)
    n_pred, n_true = np.count_nonzero(pred_edge), np.count_nonzero(true_edge)
    if n_pred == 0 and n_true == 0:
        return 1.0
    if n_pred == 0 or n_true == 0:
        return 0.0
    # distance from every pixel to the nearest boundary pixel of the other mask
    to_true = cv2.distanceTransform((~true_edge).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    to_pred = cv2.distanceTransform((~pred_edge).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    precision = np.count_nonzero(to_true[pred_edge] <= tolerance) / n_pred
    recall = np.count_nonzero(to_pred[true_edge] <= tolerance) / n_true
    return float(2 * precision * recall / (precision + recall)) if precision + recall else 0.0


def summarise(rows: Iterable[dict], keys: tuple[str, ...] = ("iou", "mae", "boundary_f")) -> dict:
    """Per metric: mean, min, max, p10, median and count over the rows that have it."""
    rows = list(rows)
    summary = {}
    for key in keys:
        values = np.array([row[key] for row in rows if key in row], dtype=np.float64)
        if values.size == 0:
            continue
        summary[key] = {"mean": float(values.mean()), "min": float(values.min()), "max": float(values.max()),
                        "p10": float(np.percentile(values, 10)), "median": float(np.median(values)),
                        "count": int(values.size)}
    return summary
