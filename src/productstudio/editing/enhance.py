"""Enhancement of a real product photo: white balance from the background, exposure, sharpening; each optional.

    photo = enhance(photo, EnhanceSettings(operations=["white-balance", "exposure"]), segmenter)

The operations run in a fixed order (white balance, then exposure, then sharpening: a sharpened colour cast is
harder to undo), with the parameters of ``edit.enhance``. White balance finds the product with the studio
cut-out and estimates the light from everything else (``classical.background_white_balance``), so the
product's own colour does not fool it. The evaluation table (``restoration_eval``) measures each operation's
gain on a damaged crop and its harm on a clean one.
"""

from __future__ import annotations

import numpy as np

from productstudio.config import CutoutSettings, EnhanceSettings
from productstudio.editing.classical import background_white_balance, exposure_gain, unsharp

OPERATIONS = ("white-balance", "exposure", "sharpen")


def product_mask(photo: np.ndarray, segmenter, cutout_settings: CutoutSettings) -> np.ndarray:
    from productstudio.editing.cutout import cut_out

    return cut_out(photo, segmenter, cutout_settings).alpha >= 0.5


def enhance(photo: np.ndarray, settings: EnhanceSettings, segmenter, cutout_settings: CutoutSettings) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> the same shape, with ``settings.operations`` applied in OPERATIONS' order."""
    if "white-balance" in settings.operations:
        photo = background_white_balance(photo, product_mask(photo, segmenter, cutout_settings),
                                         settings.white_balance_p)
    if "exposure" in settings.operations:
        photo = exposure_gain(photo, {"percentile": settings.exposure_percentile})
    if "sharpen" in settings.operations:
        photo = unsharp(photo, {"sigma": settings.sharpen_sigma, "amount": settings.sharpen_amount})
    return photo
