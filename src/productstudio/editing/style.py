"""Style, as a merchant means it: a consistent *catalogue look* matched to a few reference photos, and
*painterly* looks for ad creatives.

    look = fit_look(reference_photos, segmenter, cutout_settings)     # measured, saved as look.json
    styled = apply_look(photo, look, segmenter, cutout_settings, tone_strength=0.5).image
    painted = paint(photo, stylizer, stylizer.style_code(style_rgb), "colour", 1.0, segmenter, cutout_settings)

A catalogue look is what a photographer keeps constant across a catalogue, measured on the references:

- background: the colour around the product (median of the pixels the cut-out calls background);
- framing: the frame's aspect ratio and how much of it the product's box fills along its tighter side;
- tone: the product's luminance at five quantiles (how bright and how contrasty the products are shot).

Applying it: the light's colour is estimated from the photo's own background and divided out (white balance
that the product's colour cannot fool), the product's tone is moved ``tone_strength`` of the way to the look's
(a monotone curve on luminance, applied as a gain in linear light, so hues stay), and the cut-out product is
framed on the look's background at the look's aspect and fill. Tone is the risky part: the references' products
are not this product (a black shirt is darker than a white one), so full matching changes the product's colour;
``bench/bench_style.py`` measures KID to the references against DeltaE2000 drift inside the product for each
strength, and the default follows it.

Painterly styles use Magenta's arbitrary-style network (``models.stylizer``). A full-frame style changes the
product's colours (a red sweater turned blue), which a shop cannot sell, so by default only the luminance is
painted and the photo's own colour is kept ("colour"); "background" paints only the background and keeps the
product untouched; "none" is the full-frame style, for backdrops.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from productstudio.config import CutoutSettings
from productstudio.editing.classical import background_illuminant, white_balance
from productstudio.editing.defects import to_linear, to_srgb
from productstudio.errors import DataError, MissingInput

QUANTILES = (0.02, 0.25, 0.5, 0.75, 0.98)
GAMMA = 2.2  # perceptual luminance = 255 * linear ** (1 / GAMMA): where quantiles are compared
PRESERVE = ("colour", "background", "none")
LOOK_FILE = "look.json"
MIN_PRODUCT = 0.01  # a photo whose product covers less than this share of the frame cannot be styled or measured


@dataclass(frozen=True)
class CatalogueLook:
    background: tuple[int, int, int]  # sRGB around the product
    tone: tuple[float, ...]  # the product's perceptual luminance (0-255) at QUANTILES
    fill: float  # the product's box over the frame, along the frame's tighter side
    aspect: float  # frame width / height
    references: int  # how many photos it was measured on

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps({"quantiles": QUANTILES, **asdict(self)}, indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> "CatalogueLook":
        path = Path(path)
        if not path.is_file():
            raise MissingInput(f"{path}: no catalogue look (write one with 'productstudio edit style --references DIR')")
        data = json.loads(path.read_text())
        if tuple(data.pop("quantiles", ())) != QUANTILES:
            raise DataError(f"{path}: measured at other luminance quantiles than {QUANTILES}")
        return cls.from_dict(data)

    @classmethod
    def from_dict(cls, data: dict) -> "CatalogueLook":
        """The look from its JSON form (look.json, or the served archive's serving.json)."""
        return cls(background=tuple(data["background"]), tone=tuple(data["tone"]), fill=float(data["fill"]),
                   aspect=float(data["aspect"]), references=int(data["references"]))


@dataclass
class Styled:
    image: np.ndarray  # the styled photo (its own size: a catalogue look reframes it)
    recoloured: np.ndarray  # the photo's colours after the look, before reframing (same geometry as the photo)
    product: np.ndarray  # (H, W) bool: the product in the photo, where colour drift is measured


def perceptual_luminance(rgb: np.ndarray) -> np.ndarray:
    """(H, W) float32 in [0, 255]: linear-light luminance (Rec. 709) raised to 1 / GAMMA."""
    linear = to_linear(rgb) @ np.array([0.2126, 0.7152, 0.0722], np.float32)
    return 255 * np.power(np.clip(linear, 0, 1), 1 / GAMMA)


def photo_measures(photo: np.ndarray, alpha: np.ndarray) -> dict:
    """One reference photo's background colour, framing and product tone (see the module doc)."""
    product = alpha >= 0.5
    if product.mean() < MIN_PRODUCT:
        raise DataError("no product found (the cut-out is nearly empty)")
    rows, cols = np.flatnonzero(product.any(axis=1)), np.flatnonzero(product.any(axis=0))
    height, width = product.shape
    box_h, box_w = rows[-1] + 1 - rows[0], cols[-1] + 1 - cols[0]
    background = alpha < 0.1
    colour = np.median(photo[background], axis=0) if background.mean() >= 0.05 else np.full(3, 255.0)
    return {"background": colour, "tone": np.quantile(perceptual_luminance(photo)[product], QUANTILES),
            "fill": max(box_h / height, box_w / width), "aspect": width / height}


def fit_look(photos: list[np.ndarray], segmenter, cutout_settings: CutoutSettings) -> CatalogueLook:
    """The catalogue look of ``photos`` (their medians): at least 3 photos with a product each."""
    from productstudio.editing.cutout import cut_out

    if len(photos) < 3:
        raise DataError(f"a catalogue look needs at least 3 reference photos, got {len(photos)}")
    rows = [photo_measures(photo, cut_out(photo, segmenter, cutout_settings).alpha) for photo in photos]
    median = {key: np.median(np.array([row[key] for row in rows]), axis=0) for key in rows[0]}
    return CatalogueLook(background=tuple(int(round(v)) for v in median["background"]),
                         tone=tuple(round(float(v), 2) for v in median["tone"]),
                         fill=round(float(median["fill"]), 4), aspect=round(float(median["aspect"]), 4),
                         references=len(photos))


def tone_gain(rgb: np.ndarray, product: np.ndarray, target: tuple[float, ...], strength: float) -> np.ndarray:
    """``rgb`` with its product's luminance quantiles moved ``strength`` of the way to ``target``: a monotone
    piecewise-linear curve on perceptual luminance (0 and 255 fixed), applied as one gain per pixel in linear
    light, so every pixel keeps its chromaticity (its hue) unless a channel clips."""
    if strength == 0:
        return rgb
    luminance = perceptual_luminance(rgb)
    source = np.quantile(luminance[product], QUANTILES)
    goal = source + strength * (np.asarray(target) - source)
    xs = np.maximum.accumulate(np.concatenate([[0.0], source, [255.0]]))
    ys = np.maximum.accumulate(np.clip(np.concatenate([[0.0], goal, [255.0]]), 0, 255))
    xs = xs + np.arange(xs.size) * 1e-3  # strictly increasing for np.interp
    mapped = np.interp(luminance, xs, ys)
    gain = np.power(mapped / np.maximum(luminance, 1e-3), GAMMA).astype(np.float32)
    return to_srgb(to_linear(rgb) * gain[..., None])


def frame(foreground: np.ndarray, alpha: np.ndarray, box: tuple[int, int, int, int], look: CatalogueLook) -> np.ndarray:
    """The product (``foreground`` with ``alpha``) on the look's background, in a frame of the look's aspect that
    its box fills to the look's fill, centred; the product keeps its pixel size (never resampled)."""
    x0, y0, x1, y1 = box
    box_w, box_h = x1 - x0, y1 - y0
    height = max(box_h / look.fill, box_w / (look.fill * look.aspect))
    width = max(1, round(look.aspect * height))
    height = max(1, round(height))
    top, left = round((y0 + y1) / 2 - height / 2), round((x0 + x1) / 2 - width / 2)
    canvas = np.empty((height, width, 3), np.float32)
    canvas[:] = np.asarray(look.background, np.float32)
    # the part of the photo inside the frame
    src_top, src_left = max(0, top), max(0, left)
    src_bottom, src_right = min(alpha.shape[0], top + height), min(alpha.shape[1], left + width)
    a = alpha[src_top:src_bottom, src_left:src_right, None]
    region = canvas[src_top - top:src_bottom - top, src_left - left:src_right - left]
    region[:] = a * foreground[src_top:src_bottom, src_left:src_right] + (1 - a) * region
    return np.clip(canvas + 0.5, 0, 255).astype(np.uint8)


def apply_look(photo: np.ndarray, look: CatalogueLook, segmenter, cutout_settings: CutoutSettings,
               tone_strength: float, balance: bool = True, white_balance_p: float = 4.0) -> Styled:
    """``photo`` in the catalogue look (see the module doc); ``balance`` False keeps the photo's light."""
    from productstudio.editing.cutout import cut_out

    if not 0 <= tone_strength <= 1:
        raise ValueError(f"tone strength {tone_strength} is outside [0, 1]")
    cutout = cut_out(photo, segmenter, cutout_settings)
    product = cutout.alpha >= 0.5
    if product.mean() < MIN_PRODUCT:
        raise DataError("no product found (the cut-out is nearly empty): nothing to frame")
    recoloured = cutout.foreground
    if balance:
        recoloured = white_balance(recoloured, background_illuminant(photo, product, white_balance_p))
    recoloured = tone_gain(recoloured, product, look.tone, tone_strength)
    return Styled(frame(recoloured, cutout.alpha, cutout.box, look), recoloured, product)


def chroma_shift(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    """Mean CIELAB chroma difference (a*, b* only: lightness ignored) over ``mask``: how far the hues moved."""
    from skimage.color import rgb2lab

    if not mask.any():
        mask = np.ones(mask.shape, bool)
    lab_a, lab_b = rgb2lab(a[mask][None])[0], rgb2lab(b[mask][None])[0]
    return float(np.linalg.norm(lab_a[:, 1:] - lab_b[:, 1:], axis=1).mean())


def style_image_code(stylizer, path: Path, max_pixels: int) -> tuple[np.ndarray, str]:
    """The style code of the picture at ``path`` and the file's sha256 (what 'edit style --style-image' and
    'package --task edit --style-image' record); a one-line error for a missing or unusable picture."""
    import hashlib

    from productstudio.data.images import BadImage
    from productstudio.editing.studio import read_photo
    from productstudio.errors import ParamsError

    path = Path(path)
    if not path.is_file():
        raise MissingInput(f"{path}: no such style image")
    try:
        rgb = read_photo(path, max_pixels)
    except BadImage as error:
        raise ParamsError(f"--style-image {path}: {error}") from None
    return stylizer.style_code(rgb), hashlib.sha256(path.read_bytes()).hexdigest()


def keep_colour(photo: np.ndarray, painted: np.ndarray) -> np.ndarray:
    """The painted luminance (matched to the photo's mean and spread) with the photo's own chroma (YCrCb)."""
    original = cv2.cvtColor(photo, cv2.COLOR_RGB2YCrCb).astype(np.float32)
    luma = cv2.cvtColor(painted, cv2.COLOR_RGB2YCrCb)[..., 0].astype(np.float32)
    luma = (luma - luma.mean()) / max(float(luma.std()), 1e-3) * original[..., 0].std() + original[..., 0].mean()
    original[..., 0] = luma
    return cv2.cvtColor(np.clip(original + 0.5, 0, 255).astype(np.uint8), cv2.COLOR_YCrCb2RGB)


def paint(photo: np.ndarray, stylizer, code: np.ndarray, preserve: str, strength: float, segmenter,
          cutout_settings: CutoutSettings) -> Styled:
    """``photo`` painted with the style ``code``; ``preserve`` is one of PRESERVE (see the module doc)."""
    from productstudio.editing.cutout import cut_out

    if preserve not in PRESERVE:
        raise ValueError(f"preserve {preserve!r}: choose one of {', '.join(PRESERVE)}")
    cutout = cut_out(photo, segmenter, cutout_settings)
    product = cutout.alpha >= 0.5
    painted = stylizer.paint(photo, code, strength)
    if preserve == "colour":
        painted = keep_colour(photo, painted)
    elif preserve == "background":
        alpha = cutout.alpha[..., None]
        painted = np.clip(alpha * cutout.foreground + (1 - alpha) * painted + 0.5, 0, 255).astype(np.uint8)
    return Styled(painted, painted, product)
