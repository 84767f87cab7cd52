"""Mask metrics on hand-made masks whose IoU, MAE and boundary F are known exactly."""

from __future__ import annotations

import numpy as np
import pytest

from productstudio.metrics.mask_quality import boundary, boundary_f_measure, mask_iou, mask_mae, summarise


def square(shape=(60, 80), top=10, left=10, side=20) -> np.ndarray:
    mask = np.zeros(shape, np.float32)
    mask[top:top + side, left:left + side] = 1
    return mask


def test_iou_of_offset_squares_is_a_third():
    # two 20x20 squares shifted by 10 columns: intersection 200, union 600
    assert mask_iou(square(left=10), square(left=20)) == pytest.approx(1 / 3)
    assert mask_iou(square(), square()) == 1.0
    assert mask_iou(square(left=10), square(left=40)) == 0.0


def test_iou_thresholds_soft_masks_and_reads_uint8():
    soft = square() * 0.6  # above 0.5: counts as the square
    assert mask_iou(soft, square()) == 1.0
    assert mask_iou(soft, square(), threshold=0.7) == 0.0
    assert mask_iou((square() * 255).astype(np.uint8), square()) == 1.0
    empty = np.zeros((60, 80), np.float32)
    assert mask_iou(empty, empty) == 1.0


def test_mae_of_soft_and_uint8_masks():
    truth = square()
    assert mask_mae(truth, truth) == 0.0
    half = np.full_like(truth, 0.5)
    assert mask_mae(half, truth) == pytest.approx(0.5)
    # uint8 masks are 0..255: 128/255 everywhere against 0 everywhere
    assert mask_mae(np.full((4, 4), 128, np.uint8), np.zeros((4, 4), np.uint8)) == pytest.approx(128 / 255)


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="shape"):
        mask_iou(np.zeros((4, 4)), np.zeros((4, 5)))


def test_boundary_is_the_inner_ring():
    ring = boundary(square(side=20) > 0)
    assert np.count_nonzero(ring) == 4 * 20 - 4


def test_boundary_f_within_and_beyond_tolerance():
    inner = square(shape=(60, 60), top=20, left=20, side=20)  # edges 5 px inside the outer square's
    outer = square(shape=(60, 60), top=15, left=15, side=30)
    assert boundary_f_measure(inner, inner) == 1.0
    assert boundary_f_measure(inner, outer, tolerance=4) == 0.0
    assert boundary_f_measure(inner, outer, tolerance=8) == 1.0  # the outer corners are 7.07 px away
    # a one-pixel shift is within the default tolerance (0.0075 of the 85 px diagonal, at least 1 px)
    assert boundary_f_measure(square(shape=(60, 60), left=11), square(shape=(60, 60))) == 1.0


def test_boundary_f_partial_match_is_between_precision_and_recall():
    truth = square(shape=(60, 60), top=10, left=10, side=30)
    pred = truth.copy()
    pred[10:40, 25:40] = 0  # the right half is missing: half the boundary is wrong
    f = boundary_f_measure(pred, truth, tolerance=1)
    assert 0.4 < f < 0.8


def test_boundary_f_empty_masks():
    empty = np.zeros((30, 30), np.float32)
    assert boundary_f_measure(empty, empty) == 1.0
    assert boundary_f_measure(empty, square(shape=(30, 30), side=10)) == 0.0


def test_summarise_gives_mean_min_and_p10():
    rows = [{"iou": value, "mae": 0.1} for value in (0.5, 0.9, 1.0, 1.0)]
    summary = summarise(rows)
    assert summary["iou"]["mean"] == pytest.approx(0.85)
    assert summary["iou"]["min"] == 0.5 and summary["iou"]["max"] == 1.0
    assert summary["iou"]["p10"] == pytest.approx(np.percentile([0.5, 0.9, 1.0, 1.0], 10))
    assert summary["iou"]["count"] == 4
    assert summary["mae"]["mean"] == pytest.approx(0.1)
    assert "boundary_f" not in summary  # no row has it
