"""The restorer's gate: noise and JPEG compression read from the pixels of real catalogue photos, so a clean photo
is left exactly as it is and a damaged one still goes through the restorer."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from productstudio.config import RestoreGateSettings
from productstudio.editing.restore_gate import dc_step_for_quality, gated_restore, inspect, jpeg_dc_step, noise_sigma
from productstudio.models.restorer import Restorer, restore

GATE = RestoreGateSettings()


@pytest.fixture(scope="module")
def crops(clothing_dir):
    """Six 256 px centre crops of catalogue photos from three categories (the photos are JPEGs of quality 70)."""
    out = []
    for category in ("t-shirt", "pants", "dress"):
        for path in sorted((clothing_dir / "test" / category).glob("*.jpg"))[:2]:
            photo = np.asarray(Image.open(path).convert("RGB"))
            top, left = (photo.shape[0] - 256) // 2, (photo.shape[1] - 256) // 2
            out.append(np.ascontiguousarray(photo[top:top + 256, left:left + 256]))
    return out


def reencoded(photo: np.ndarray, quality: int) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(photo).save(buffer, format="JPEG", quality=quality)
    return np.asarray(Image.open(buffer).convert("RGB"))


def noisy(photo: np.ndarray, sigma: float, seed: int) -> np.ndarray:
    noise = np.random.default_rng(seed).normal(0, sigma, photo.shape)
    return np.clip(photo + noise, 0, 255).round().astype(np.uint8)


def test_the_dc_step_follows_the_ijg_quality_scaling():
    assert [dc_step_for_quality(q) for q in (10, 20, 30, 40, 50, 70, 90)] == [80, 40, 27, 20, 16, 10, 3]


def test_the_jpeg_step_is_read_back_from_decoded_pixels(crops):
    for crop in crops:
        assert jpeg_dc_step(reencoded(crop, 30)) in (27, 54)  # the step, or a multiple when few blocks differ
        assert jpeg_dc_step(reencoded(crop, 10)) >= 79
        found = jpeg_dc_step(crop)  # the catalogue's own quality-70 grid, or none where the crop cut across it
        assert found is None or found < dc_step_for_quality(GATE.jpeg_quality)


def test_noise_reads_about_its_sigma_and_clean_photos_read_low(crops):
    for i, crop in enumerate(crops):
        assert noise_sigma(crop) < 4.3
        # about sigma, a little less where the noise is clipped at black or white; above the gate's threshold
        assert GATE.noise_sigma < noise_sigma(noisy(crop, 15, i)) < 19
        assert 15 < noise_sigma(noisy(crop, 25, i)) < 30


def test_clean_photos_are_left_alone_and_damaged_ones_restored(crops):
    torch.manual_seed(0)
    model = Restorer(width=8, depth=2)
    torch.nn.init.normal_(model.tail.weight, std=0.02)  # a model that changes every photo it sees
    for i, crop in enumerate(crops):
        out, verdict = gated_restore(model, crop, GATE)
        assert not verdict.restore and verdict.reason.startswith("clean") and np.array_equal(out, crop)
        for damaged in (noisy(crop, 15, i), reencoded(crop, 30)):
            out, verdict = gated_restore(model, damaged, GATE)
            assert verdict.restore and np.array_equal(out, restore(model, damaged))
    off = RestoreGateSettings(enabled=False)
    assert inspect(crops[0], off).restore and "gate off" in inspect(crops[0], off).reason


def test_small_and_flat_photos_do_not_break_it():
    assert not inspect(np.full((5, 7, 3), 128, np.uint8), GATE).restore
    assert not inspect(np.zeros((64, 64, 3), np.uint8), GATE).restore  # every pixel clipped: nothing to read


def test_large_flat_areas_do_not_fake_a_jpeg_grid():
    """Equal block means fall on the multiples of some step by chance: a photo that is 70 % one flat grey (block
    mean 8 x 29 after JPEG's level shift) and 30 % texture, never JPEG-compressed, shows no grid. Counting blocks
    alone read a step (that is how one clean catalogue crop of 60 read 29)."""
    rng = np.random.default_rng(0)
    photo = np.full((256, 256, 3), 128 + 29, np.uint8)
    photo[180:] = rng.integers(20, 236, (76, 256, 3), dtype=np.uint8)
    assert jpeg_dc_step(photo) is None
    assert jpeg_dc_step(reencoded(photo, 10)) >= 79  # the same photo after a real JPEG at quality 10 still reads it
