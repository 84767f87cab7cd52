"""Background removal: the u2netp segmenter and ``cut_out`` on real clothing photos and on synthetic photos
whose true mask is known, the guided-filter refinement, edge-colour decontamination and the Cutout's stats."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from productstudio.config import CutoutSettings
from productstudio.editing.cutout import (Cutout, clean_mask, cut_out, decontaminated, guided_coefficients,
                                          mask_stats, plain_settings)
from productstudio.editing.evalset import list_photos, read_photo, threshold_mask
from productstudio.metrics.mask_quality import mask_iou


@pytest.fixture(scope="module")
def segmenter():
    from productstudio.models.pretrained import weights_dir
    from productstudio.models.salient import load_segmenter

    return load_segmenter(weights_dir("u2netp"), threads=1)


@pytest.fixture(scope="module")
def plain_background_photos(clothing_dir):
    """The first 3 validation photos (sorted) on a plain background, with their threshold masks."""
    found = []
    for path in list_photos(clothing_dir, ("validation",)):
        photo = read_photo(path)
        mask, _ = threshold_mask(photo)
        if mask is not None:
            found.append((path.name, photo, mask))
        if len(found) == 3:
            return found
    pytest.fail("fewer than 3 validation photos on a plain background")


def ellipse_photo(height=300, width=400, seed=0):
    """A saturated ellipse (the product) on a grey, noisy, blotchy background; and its true mask."""
    rng = np.random.default_rng(seed)
    blotches = rng.normal(0, 1, (height // 20, width // 20)).repeat(20, 0).repeat(20, 1)
    background = 150 + 25 * blotches[..., None] + rng.normal(0, 8, (height, width, 3))
    ys, xs = np.mgrid[0:height, 0:width]
    inside = ((xs - 210) / 110) ** 2 + ((ys - 140) / 80) ** 2 <= 1
    photo = background.copy()
    photo[inside] = (200, 40, 60) + rng.normal(0, 6, (np.count_nonzero(inside), 3))
    return np.clip(photo, 0, 255).astype(np.uint8), inside


def test_segmenter_maps_any_photo_to_a_unit_probability_map(segmenter, plain_background_photos):
    _, photo, _ = plain_background_photos[0]
    probability = segmenter.predict(photo)
    assert probability.shape == (320, 320) and probability.dtype == np.float32
    assert probability.min() == 0.0 and probability.max() == pytest.approx(1.0)
    pair = segmenter.predict_batch([photo, photo[:, ::-1].copy()])
    assert pair.shape == (2, 320, 320)
    np.testing.assert_allclose(pair[0], probability, atol=1e-4)  # a batch of two gives the single run's map


def test_garments_on_plain_backgrounds_match_their_threshold_masks(segmenter, plain_background_photos):
    for name, photo, mask in plain_background_photos:
        cutout = cut_out(photo, segmenter, CutoutSettings(refine_radius=4))
        assert isinstance(cutout, Cutout)
        assert cutout.alpha.shape == photo.shape[:2] and cutout.alpha.dtype == np.float32
        assert cutout.foreground.shape == photo.shape and cutout.foreground.dtype == np.uint8
        assert mask_iou(cutout.alpha, mask.astype(np.float32)) > 0.9, name
        assert cutout.edges_touched == 0, name  # threshold masks never touch the border


def test_cut_out_recovers_a_shape_on_a_textured_background(segmenter):
    photo, truth = ellipse_photo()
    cutout = cut_out(photo, segmenter, CutoutSettings(refine_radius=4))
    assert mask_iou(cutout.alpha, truth.astype(np.float32)) > 0.95
    x0, y0, x1, y1 = cutout.box
    assert abs(x0 - 100) <= 4 and abs(x1 - 321) <= 4 and abs(y0 - 60) <= 4 and abs(y1 - 221) <= 4
    assert cutout.foreground_fraction == pytest.approx(truth.mean(), abs=0.01)
    assert cutout.uncertain_fraction < 0.05  # a clean edge: few semi-transparent pixels


def test_plain_settings_skip_every_clean_up_step(segmenter):
    photo, _ = ellipse_photo(seed=1)
    plain = cut_out(photo, segmenter, plain_settings())
    assert np.array_equal(plain.foreground, photo)  # no decontamination
    # without margin, mirror or refinement the alpha is the net's map, only upsampled
    expected = segmenter.predict(photo)
    upsampled = np.clip(cv2.resize(expected, (photo.shape[1], photo.shape[0]), interpolation=cv2.INTER_LINEAR), 0, 1)
    np.testing.assert_allclose(plain.alpha, upsampled, atol=1e-6)


def test_a_large_photo_keeps_its_size(segmenter):
    photo, truth = ellipse_photo()
    big = cv2.resize(photo, (2000, 1500), interpolation=cv2.INTER_LINEAR)  # refined through the fast guided filter
    big_truth = cv2.resize(truth.astype(np.uint8), (2000, 1500), interpolation=cv2.INTER_NEAREST)
    cutout = cut_out(big, segmenter, CutoutSettings(refine_radius=8))
    assert cutout.alpha.shape == (1500, 2000)
    assert mask_iou(cutout.alpha, big_truth.astype(np.float32)) > 0.95


def test_cut_out_refuses_what_is_not_an_rgb_photo(segmenter):
    with pytest.raises(ValueError, match="uint8 RGB"):
        cut_out(np.zeros((10, 10), np.uint8), segmenter)
    with pytest.raises(ValueError, match="uint8 RGB"):
        cut_out(np.zeros((10, 10, 3), np.float32), segmenter)


def test_guided_filter_snaps_a_blurred_mask_to_the_guide_edge():
    guide = np.zeros((40, 40), np.float32)
    guide[:, 20:] = 1.0  # a sharp step in the photo
    blurred = np.clip((np.arange(40, dtype=np.float32) - 14) / 12, 0, 1)[None].repeat(40, 0)  # a soft mask ramp
    a, b = guided_coefficients(guide, blurred, radius=4, eps=1e-4)
    refined = a * guide + b
    # the ramp (1/12 per column) gained a jump of about 0.4 where the photo has its edge, and only there
    jumps = np.diff(refined[20])
    assert int(np.argmax(jumps)) == 19 and jumps[19] > 0.3
    assert np.abs(np.delete(jumps, 19)).max() < 0.1


def test_decontamination_takes_edge_colours_from_the_product():
    photo = np.zeros((60, 60, 3), np.uint8)
    photo[:] = (0, 200, 0)  # green background
    photo[15:45, 15:45] = (200, 0, 0)  # red product
    alpha = np.zeros((60, 60), np.float32)
    alpha[15:45, 15:45] = 1.0
    alpha[12:15, 15:45] = 0.5  # a soft edge above the product, over green pixels
    foreground = decontaminated(photo, alpha, radius=4)
    edge = foreground[12:15, 20:40].reshape(-1, 3).astype(int)
    assert (edge[:, 0] > 150).all() and (edge[:, 1] < 50).all()  # red, not green
    assert np.array_equal(foreground[alpha == 1], photo[alpha == 1])  # opaque pixels untouched
    assert np.array_equal(foreground[alpha == 0], photo[alpha == 0])


def test_stats_of_hand_made_alphas():
    alpha = np.zeros((10, 20), np.float32)
    alpha[2:6, 0:8] = 1.0  # touches the left edge only
    alpha[6, 0:8] = 0.5  # half: inside the >= 0.5 mask, and uncertain
    alpha[7, 0:8] = 0.05  # below 0.1: neither product nor uncertain
    stats = mask_stats(alpha)
    assert stats["box"] == (0, 2, 8, 7)
    assert stats["foreground_fraction"] == pytest.approx(40 / 200)
    assert stats["edges_touched"] == 1
    assert stats["uncertain_fraction"] == pytest.approx(8 / 40)


def test_stats_of_empty_and_full_alphas():
    empty = mask_stats(np.zeros((5, 7), np.float32))
    assert empty == {"box": (0, 0, 0, 0), "foreground_fraction": 0.0, "edges_touched": 0, "uncertain_fraction": 0.0}
    full = mask_stats(np.ones((5, 7), np.float32))
    assert full["box"] == (0, 0, 7, 5) and full["foreground_fraction"] == 1.0 and full["edges_touched"] == 4
    corner = np.zeros((5, 7), np.float32)
    corner[0, 0] = 0.95
    assert mask_stats(corner)["edges_touched"] == 2  # top and left


def test_clutter_cut_by_the_frame_loses_to_the_framed_product():
    probability = np.zeros((100, 100), np.float32)
    probability[60:, 50:] = 0.9  # a big garment in the background, cut by the bottom and right edges
    probability[10:40, 10:35] = 1.0  # the product, inside the frame, half the clutter's area
    cleaned = clean_mask(probability)
    assert cleaned[20, 20] == 1.0 and cleaned[80, 80] == 0.0
    # without a framed rival the largest part stays, even touching two edges (a garment filling the frame)
    filling = np.zeros((100, 100), np.float32)
    filling[:, 30:70] = 1.0  # top to bottom
    filling[5:8, 5:8] = 1.0  # a speck, far too small to be the product
    cleaned = clean_mask(filling)
    assert cleaned[50, 50] == 1.0 and cleaned[6, 6] == 0.0


def test_a_half_salient_part_loses_to_the_part_the_net_is_sure_of():
    probability = np.zeros((100, 100), np.float32)
    probability[10:40, 10:40] = 1.0  # the product: every pixel sure
    probability[50:95, 40:95] = 0.7  # a bigger garment in the background, inside the frame but half-salient
    probability[50:95:3, 40:95] = 0.95  # (a third of its pixels sure)
    cleaned = clean_mask(probability)
    assert cleaned[20, 20] == 1.0 and cleaned[80, 80] == 0.0
    # two parts the net is equally sure of both stay (a pair of shoes)
    pair = np.zeros((100, 100), np.float32)
    pair[40:60, 10:45] = 1.0
    pair[40:60, 55:90] = 0.95
    cleaned = clean_mask(pair)
    assert cleaned[50, 20] == 1.0 and cleaned[50, 70] == 0.95


def test_clutter_joined_to_the_product_is_split_off_at_higher_confidence():
    probability = np.zeros((100, 100), np.float32)
    probability[:30, :30] = 0.92  # a white shoe cut by the top and left edges: sure in places, unsure where
    probability[:20, :20] = 1.0  # it meets the product
    probability[10:70, 30:75] = 1.0  # the product, touching the shoe: one part at 0.5
    cleaned = clean_mask(probability)
    assert cleaned[40, 50] == 1.0 and cleaned[5, 5] == 0.0 and cleaned[25, 10] == 0.0
    assert cleaned[12, 31] == 1.0  # the product's own pixels next to the shoe stay
    # the same scene without the split (the shoe as sure as the product) cannot be told apart: left whole
    joined = np.where(probability > 0, 1.0, 0.0).astype(np.float32)
    assert (clean_mask(joined) == joined).all()
    # a garment filling the frame whose sure core splits (a sleeve in a corner) keeps every piece: its largest
    # piece's share already reaches two edges, so nothing is clutter
    filling = np.full((100, 100), 0.92, np.float32)
    filling[:, 40:60] = 1.0
    filling[:20, :20] = 1.0
    cleaned = clean_mask(filling)
    assert (cleaned > 0.9).all()
