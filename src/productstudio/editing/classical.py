"""Classical restoration and enhancement baselines, each with the parameter grid it is tuned over.

    method = METHODS["bilateral"]
    restored = method.run(damaged_rgb, {"d": 9, "sigma_color": 40, "sigma_space": 5}, mask=None)

A learned model earns its place only by beating the best of these, tuned on the train/validation photos and
measured on the test photos in the same run (``restoration_eval``). Every method takes and returns (H, W, 3)
uint8 RGB; the inpainting methods also take the defect mask (the true one, or one a detector found).
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import product
from typing import Callable

import cv2
import numpy as np

from productstudio.editing.defects import to_linear, to_srgb


def grid(**axes) -> list[dict]:
    """Every combination of the axes' values, as parameter dicts."""
    names = list(axes)
    return [dict(zip(names, values)) for values in product(*(axes[n] for n in names))]


def identity(image: np.ndarray, params: dict, mask=None) -> np.ndarray:
    return image.copy()


def gaussian(image, params, mask=None):
    return cv2.GaussianBlur(image, (0, 0), params["sigma"])


def median(image, params, mask=None):
    return cv2.medianBlur(image, params["ksize"])


def bilateral(image, params, mask=None):
    return cv2.bilateralFilter(image, params["d"], params["sigma_color"], params["sigma_space"])


def non_local_means(image, params, mask=None):
    # OpenCV's coloured NLM works on BGR (it filters in Lab); h for luminance, h_color for colour
    bgr = np.ascontiguousarray(image[..., ::-1])
    out = cv2.fastNlMeansDenoisingColored(bgr, None, params["h"], params["h"], 7, 21)
    return np.ascontiguousarray(out[..., ::-1])


def detect_specks(image: np.ndarray, threshold: int) -> np.ndarray:
    """A simple defect detector for inpainting with a *detected* mask: pixels far from their 5x5 median, grown
    by one pixel. (H, W) bool."""
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    far = cv2.absdiff(grey, cv2.medianBlur(grey, 5)) > threshold
    return cv2.dilate(far.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0


def inpaint(flag: int, detected: bool) -> Callable:
    def run(image, params, mask=None):
        if detected:
            mask = detect_specks(image, params["threshold"])
        if mask is None:
            raise ValueError("inpainting with the true mask needs the defect's mask")
        return cv2.inpaint(image, mask.astype(np.uint8) * 255, params["radius"], flag)
    return run


def white_balance(image: np.ndarray, illuminant: np.ndarray) -> np.ndarray:
    """Divide out an estimated illuminant (linear RGB, any scale), keeping the mean brightness."""
    gains = illuminant.mean() / np.maximum(illuminant, 1e-6)
    return to_srgb(to_linear(image) * gains.astype(np.float32))


def gray_world(image, params, mask=None):
    return white_balance(image, to_linear(image).reshape(-1, 3).mean(axis=0))


def white_patch(image, params, mask=None):
    return white_balance(image, np.percentile(to_linear(image).reshape(-1, 3), params["percentile"], axis=0))


def shades_of_gray(image, params, mask=None):
    p = params["p"]
    linear = to_linear(image).reshape(-1, 3).astype(np.float64)
    return white_balance(image, np.power(np.mean(np.power(linear, p), axis=0), 1 / p))


MIN_BACKGROUND = 0.05  # below this share of background pixels, the whole photo estimates the illuminant


def background_white_balance(image: np.ndarray, product: np.ndarray, p: float) -> np.ndarray:
    """Shades-of-gray (Minkowski norm ``p``) over the background only: a red sweater filling half the frame
    makes whole-frame gray-world turn the photo cyan, while the studio wall or table around it is near neutral.
    ``product`` is the product's mask, (H, W) bool; a ring around it (its fringe) is left out too."""
    return white_balance(image, background_illuminant(image, product, p))


def background_illuminant(image: np.ndarray, product: np.ndarray, p: float) -> np.ndarray:
    """The light's colour (linear RGB) estimated from the background around ``product``; see
    ``background_white_balance``."""
    ring = max(1, round(0.02 * max(image.shape[:2])))
    near = cv2.dilate(product.astype(np.uint8), np.ones((2 * ring + 1, 2 * ring + 1), np.uint8)) > 0
    linear = to_linear(image)
    pixels = linear[~near] if (~near).mean() >= MIN_BACKGROUND else linear.reshape(-1, 3)
    return np.power(np.mean(np.power(pixels.astype(np.float64), p), axis=0), 1 / p)


def auto_levels(image, params, mask=None):
    """Stretch the luminance so ``clip`` % of pixels fall outside [0, 255] at each end (colours scaled alike)."""
    linear = to_linear(image)
    luminance = linear @ np.array([0.2126, 0.7152, 0.0722], np.float32)
    low, high = np.percentile(luminance, [params["clip"], 100 - params["clip"]])
    gain = 1.0 / max(high - low, 1e-6)
    return to_srgb((linear - low) * gain)


def exposure_gain(image, params, mask=None):
    """Scale linear light so the ``percentile`` brightest luminance reaches white (a global exposure fix)."""
    linear = to_linear(image)
    luminance = linear @ np.array([0.2126, 0.7152, 0.0722], np.float32)
    return to_srgb(linear / max(float(np.percentile(luminance, params["percentile"])), 1e-6))


def clahe(image, params, mask=None):
    lab = cv2.cvtColor(image, cv2.COLOR_RGB2LAB)
    lab[..., 0] = cv2.createCLAHE(clipLimit=params["clip_limit"], tileGridSize=(8, 8)).apply(lab[..., 0])
    return cv2.cvtColor(lab, cv2.COLOR_LAB2RGB)


def unsharp(image, params, mask=None):
    blurred = cv2.GaussianBlur(image, (0, 0), params["sigma"])
    return cv2.addWeighted(image, 1 + params["amount"], blurred, -params["amount"], 0)


@dataclass(frozen=True)
class Method:
    name: str
    families: tuple[str, ...]  # the defect families it is a baseline for
    run: Callable  # (image, params, mask) -> image
    grid: tuple[dict, ...]  # tuned over these on the train/validation crops
    needs_mask: bool = False  # takes the true defect mask


DENOISE = ("noise", "jpeg")
METHODS: dict[str, Method] = {m.name: m for m in [
    Method("none", ("noise", "jpeg", "dust", "watermark", "cast", "exposure"), identity, ({},)),
    Method("gaussian", DENOISE, gaussian, tuple(grid(sigma=[0.5, 0.8, 1.2, 1.8, 2.5]))),
    Method("median", DENOISE + ("dust",), median, tuple(grid(ksize=[3, 5, 7]))),
    Method("bilateral", DENOISE, bilateral,
           tuple(grid(d=[5, 9], sigma_color=[20, 40, 75, 120], sigma_space=[3, 7]))),
    Method("nl-means", DENOISE, non_local_means, tuple(grid(h=[4, 8, 12, 18, 26]))),
    Method("inpaint-telea-true-mask", ("dust", "watermark"), inpaint(cv2.INPAINT_TELEA, False),
           tuple(grid(radius=[2, 3, 5])), needs_mask=True),
    Method("inpaint-ns-true-mask", ("dust", "watermark"), inpaint(cv2.INPAINT_NS, False),
           tuple(grid(radius=[2, 3, 5])), needs_mask=True),
    Method("inpaint-telea-detected", ("dust",), inpaint(cv2.INPAINT_TELEA, True),
           tuple(grid(radius=[3], threshold=[25, 40, 60]))),
    Method("gray-world", ("cast",), gray_world, ({},)),
    Method("white-patch", ("cast",), white_patch, tuple(grid(percentile=[95, 99, 99.9]))),
    Method("shades-of-gray", ("cast",), shades_of_gray, tuple(grid(p=[2, 4, 6, 8]))),
    Method("auto-levels", ("exposure",), auto_levels, tuple(grid(clip=[0.1, 0.5, 1, 2]))),
    Method("exposure-gain", ("exposure",), exposure_gain, tuple(grid(percentile=[95, 99, 99.5, 99.9]))),
    Method("clahe", ("exposure",), clahe, tuple(grid(clip_limit=[1.0, 2.0, 3.0]))),
    Method("unsharp", ("jpeg",), unsharp, tuple(grid(sigma=[1.0, 2.0], amount=[0.3, 0.6, 1.0]))),
]}


def methods_for(family: str) -> list[Method]:
    return [m for m in METHODS.values() if family in m.families]
