"""Batched per-image PSNR and SSIM in torch (float64), matching scikit-image's conventions exactly.

- ``psnr``: ``10 log10(data_range^2 / MSE)`` with the MSE of each image over all its pixels and
  channels (skimage's ``peak_signal_noise_ratio``; inf for identical images). Not pooled over the batch
  (torchmetrics' default pools; per-image needs its ``dim`` argument).
- ``ssim``: ``skimage.metrics.structural_similarity(..., gaussian_weights=True, sigma=1.5,
  use_sample_covariance=False, data_range=R)``: an 11-tap Gaussian window (sigma 1.5, truncated at 3.5
  sigma), K1 = 0.01, K2 = 0.03, the SSIM map averaged over the interior only (skimage drops a border of
  ``(11 - 1) // 2 = 5`` pixels, the pixels whose window would reach past the edge) and, for several
  channels, the per-channel means averaged. Since only interior pixels count, the filtering here is a
  "valid" convolution with no padding at all, which is exactly the interior of skimage's reflect-padded
  filtering. (torchmetrics' SSIM averages over its padded border instead: up to 0.35 apart on 28x28.)

Inputs: arrays or tensors (N, C, H, W) or (N, H, W), any numeric dtype, compared as float64;
``data_range`` is required (the distance between the smallest and largest possible values: 255 for
uint8, 2 for [-1, 1]). Results are float64 tensors of shape (N,) on the inputs' device.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

SSIM_K1 = 0.01
SSIM_K2 = 0.03
SSIM_SIGMA = 1.5
SSIM_TRUNCATE = 3.5  # scipy.ndimage.gaussian_filter's default, used by skimage
SSIM_WIN_SIZE = 2 * int(SSIM_TRUNCATE * SSIM_SIGMA + 0.5) + 1  # 11


def _as_nchw(images) -> torch.Tensor:
    if isinstance(images, torch.Tensor):
        x = images.to(torch.float64)
    else:  # a copy: the input may be a read-only buffer (np.frombuffer)
        x = torch.from_numpy(np.array(images, dtype=np.float64))
    if x.ndim == 3:
        x = x.unsqueeze(1)
    if x.ndim != 4:
        raise ValueError(f"images must be (N, C, H, W) or (N, H, W); got {tuple(x.shape)}")
    return x


def _pair(a, b) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = _as_nchw(a), _as_nchw(b)
    if x.shape != y.shape:
        raise ValueError(f"image batches differ in shape: {tuple(x.shape)} vs {tuple(y.shape)}")
    return x, y.to(x.device)


def _check_range(data_range: float) -> float:
    if data_range is None or not data_range > 0:
        raise ValueError("data_range must be given and > 0 (255 for uint8 images, 2 for [-1, 1], 1 for [0, 1])")
    return float(data_range)


def psnr(images_a, images_b, data_range: float) -> torch.Tensor:
    """Per-image PSNR in dB, shape (N,)."""
    data_range = _check_range(data_range)
    x, y = _pair(images_a, images_b)
    mse = (x - y).pow(2).flatten(1).mean(dim=1)
    return 10.0 * torch.log10(data_range**2 / mse)  # mse == 0 -> inf, as skimage


def gaussian_window(win_size: int = SSIM_WIN_SIZE, sigma: float = SSIM_SIGMA) -> torch.Tensor:
    """The normalised 1-D Gaussian taps scipy.ndimage.gaussian_filter uses (float64)."""
    radius = win_size // 2
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64)
    taps = torch.exp(-0.5 * (offsets / sigma) ** 2)
    return taps / taps.sum()


def _filter_valid(planes: torch.Tensor, taps: torch.Tensor) -> torch.Tensor:
    """The separable Gaussian filter of (M, 1, H, W) planes, interior ("valid") pixels only."""
    win_size = len(taps)
    if planes.device.type == "cpu":
        # scipy's separable correlation: about 5x faster than torch's float64 conv2d on CPU, and the interior
        # (the only pixels kept) is the same sum
        from scipy.ndimage import correlate1d

        half = win_size // 2
        kernel = taps.numpy()
        filtered = correlate1d(planes.numpy(), kernel, axis=2, mode="constant")
        filtered = correlate1d(filtered, kernel, axis=3, mode="constant")
        return torch.from_numpy(np.ascontiguousarray(filtered[:, :, half:-half, half:-half]))
    filtered = F.conv2d(planes, taps.view(1, 1, win_size, 1))
    return F.conv2d(filtered, taps.view(1, 1, 1, win_size))


def ssim(
    images_a,
    images_b,
    data_range: float,
    *,
    sigma: float = SSIM_SIGMA,
    k1: float = SSIM_K1,
    k2: float = SSIM_K2,
) -> torch.Tensor:
    """Per-image SSIM, shape (N,), as skimage's Gaussian-weighted structural_similarity."""
    data_range = _check_range(data_range)
    x, y = _pair(images_a, images_b)
    win_size = 2 * int(SSIM_TRUNCATE * sigma + 0.5) + 1
    n, c, h, w = x.shape
    if h < win_size or w < win_size:
        raise ValueError(f"images of {h}x{w} are smaller than the {win_size}x{win_size} SSIM window")
    taps = gaussian_window(win_size, sigma).to(x.device)
    # Five maps per channel, filtered together: x, y, x^2, y^2, xy.
    planes = torch.stack([x, y, x * x, y * y, x * y], dim=2).reshape(n * c * 5, 1, h, w)
    filtered = _filter_valid(planes, taps)
    mu_x, mu_y, e_xx, e_yy, e_xy = filtered.reshape(n, c, 5, h - win_size + 1, w - win_size + 1).unbind(dim=2)
    var_x = e_xx - mu_x * mu_x
    var_y = e_yy - mu_y * mu_y
    cov_xy = e_xy - mu_x * mu_y
    c1 = (k1 * data_range) ** 2
    c2 = (k2 * data_range) ** 2
    numerator = (2 * mu_x * mu_y + c1) * (2 * cov_xy + c2)
    denominator = (mu_x * mu_x + mu_y * mu_y + c1) * (var_x + var_y + c2)
    ssim_map = numerator / denominator
    return ssim_map.mean(dim=(2, 3)).mean(dim=1)

