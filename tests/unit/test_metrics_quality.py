"""PSNR and SSIM against scikit-image, on real Fashion-MNIST images with noise and on RGB images."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from productstudio.data.fashion_mnist import load_split
from productstudio.metrics.image_quality import psnr, ssim


def sk_ssim(a, b, data_range, channel_axis=None):
    return structural_similarity(
        a,
        b,
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
        data_range=data_range,
        channel_axis=channel_axis,
    )


@pytest.fixture(scope="module")
def fashion_pairs(fashion_dir):
    images, _ = load_split(fashion_dir, "test", limit=48)
    rng = np.random.default_rng(0)
    # Three noise levels, so the comparison covers low and high similarity.
    sigma = np.repeat([5.0, 25.0, 70.0], 16)[:, None, None]
    noisy = np.clip(images + rng.normal(0.0, 1.0, images.shape) * sigma, 0, 255).astype(np.uint8)
    return images, noisy


def test_psnr_matches_skimage_per_image_on_fashion_mnist(fashion_pairs):
    clean, noisy = fashion_pairs
    ours = psnr(clean, noisy, data_range=255)
    reference = np.array([peak_signal_noise_ratio(a, b, data_range=255) for a, b in zip(clean, noisy)])
    assert ours.shape == (len(clean),) and ours.dtype == torch.float64
    np.testing.assert_allclose(ours.numpy(), reference, rtol=0, atol=1e-4)
    # Per image, not pooled over the batch: the three noise levels stay apart.
    assert ours[:16].min() > ours[16:32].max() > ours[32:].max()


def test_ssim_matches_skimage_per_image_on_fashion_mnist(fashion_pairs):
    clean, noisy = fashion_pairs
    ours = ssim(clean, noisy, data_range=255)
    reference = np.array([sk_ssim(a, b, 255) for a, b in zip(clean, noisy)])
    np.testing.assert_allclose(ours.numpy(), reference, rtol=0, atol=1e-4)
    assert reference.min() < 0.5 < reference.max()  # the test covers a real spread of values


def test_ssim_matches_skimage_on_float_images_in_minus_one_one(fashion_pairs):
    clean, noisy = fashion_pairs
    a = clean[:8].astype(np.float64) / 127.5 - 1
    b = noisy[:8].astype(np.float64) / 127.5 - 1
    ours = ssim(torch.from_numpy(a)[:, None], torch.from_numpy(b)[:, None], data_range=2.0)
    reference = np.array([sk_ssim(x, y, 2.0) for x, y in zip(a, b)])
    np.testing.assert_allclose(ours.numpy(), reference, rtol=0, atol=1e-4)


def test_psnr_and_ssim_match_skimage_on_rgb_images(clothing_dir):
    from PIL import Image

    paths = sorted((clothing_dir / "test").rglob("*.jpg"))[:3]
    assert len(paths) == 3
    rng = np.random.default_rng(1)
    clean = np.stack([np.asarray(Image.open(p).convert("RGB").resize((64, 48))) for p in paths])  # (N, H, W, 3)
    noisy = np.clip(clean + rng.normal(0, 12, clean.shape), 0, 255).astype(np.uint8)
    chw_clean, chw_noisy = clean.transpose(0, 3, 1, 2), noisy.transpose(0, 3, 1, 2)
    ours_ssim = ssim(chw_clean, chw_noisy, data_range=255).numpy()
    ours_psnr = psnr(chw_clean, chw_noisy, data_range=255).numpy()
    ref_ssim = [sk_ssim(a, b, 255, channel_axis=-1) for a, b in zip(clean, noisy)]
    ref_psnr = [peak_signal_noise_ratio(a, b, data_range=255) for a, b in zip(clean, noisy)]
    np.testing.assert_allclose(ours_ssim, ref_ssim, rtol=0, atol=1e-4)
    np.testing.assert_allclose(ours_psnr, ref_psnr, rtol=0, atol=1e-4)


def test_identical_images_and_argument_checks(fashion_pairs):
    clean, _ = fashion_pairs
    assert torch.isinf(psnr(clean[:2], clean[:2], data_range=255)).all()
    np.testing.assert_allclose(ssim(clean[:2], clean[:2], data_range=255).numpy(), 1.0, atol=1e-12)
    with pytest.raises(ValueError, match="data_range"):
        ssim(clean[:2], clean[:2], data_range=None)
    with pytest.raises(ValueError, match="shape"):
        psnr(clean[:2], clean[:3], data_range=255)
    with pytest.raises(ValueError, match="smaller than"):
        ssim(clean[:2, :8, :8], clean[:2, :8, :8], data_range=255)
