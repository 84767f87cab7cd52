"""Studio composition: placement, exact white, shadows, transparency, no dark fringes, encoding keeps white white."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from productstudio.config import PresetSettings
from productstudio.editing.compliance import near_product
from productstudio.editing.compose import compose, encode_export, upscale_needed
from productstudio.editing.cutout import Cutout

RED = (200, 20, 30)


def red_disc(height: int = 240, width: int = 180, radius: int = 60, centre: tuple[int, int] | None = None) -> Cutout:
    """A red disc with a 2 px soft edge; the photo is black where alpha is 0 (so a resize that ignores alpha
    would pull black into the edge)."""
    cy, cx = centre or (height / 2, width / 2)
    yy, xx = np.mgrid[:height, :width]
    alpha = np.clip(0.5 - (np.hypot(xx - cx, yy - cy) - radius) / 2, 0, 1).astype(np.float32)
    foreground = np.zeros((height, width, 3), np.uint8)
    foreground[alpha > 0] = RED
    solid = alpha >= 0.5
    ys, xs = np.nonzero(solid)
    return Cutout(alpha, foreground, (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1),
                  float(solid.mean()), 0, 0.0)


def preset(**overrides) -> PresetSettings:
    return PresetSettings(**{"width": 400, "height": 400, "fill": 0.8, **overrides})


def test_white_canvas_is_exactly_white_outside_and_product_fills_as_asked():
    composed = compose(red_disc(), preset(width=400, height=300, fill=0.8))
    pixels = np.asarray(composed.image)
    assert composed.image.mode == "RGB" and composed.image.size == (400, 300)
    outside = composed.product_alpha == 0
    assert outside.mean() > 0.5 and (pixels[outside] == 255).all()
    x0, y0, x1, y1 = composed.product_box
    # The tighter side (height) takes 80 %: within one source pixel (about 2 canvas pixels here), since the box
    # counts whole pixels while the resampled edge sits where the soft alpha crosses 0.5.
    assert abs(max((x1 - x0) / 400, (y1 - y0) / 300) - 0.8) <= 2.5 / 300
    assert abs((x0 + x1) / 2 - 200) <= 1 and abs((y0 + y1) / 2 - 150) <= 1  # centred
    assert tuple(pixels[150, 200]) == RED


def test_soft_edge_has_no_dark_fringe():
    composed = compose(red_disc(), preset(fill=0.9))  # about 3.4x enlarged: resampling reaches the black
    pixels = np.asarray(composed.image).astype(int)
    edge = (composed.product_alpha > 0) & (composed.product_alpha < 1)
    assert edge.sum() > 100
    # Red over white only moves every channel towards 255: nothing darker than the product itself.
    assert (pixels[edge] >= np.array(RED) - 2).all()


def test_shadow_only_when_asked_and_corners_stay_white():
    cutout = red_disc()
    plain = compose(cutout, preset(role="secondary", fill=0.6))
    assert plain.shadow_alpha is None
    shaded = compose(cutout, preset(role="secondary", fill=0.6, shadow=True))
    pixels = np.asarray(shaded.image)
    below = pixels[shaded.product_box[3]:, :][shaded.product_alpha[shaded.product_box[3]:, :] == 0]
    plain_below = np.asarray(plain.image)[plain.product_box[3]:][plain.product_alpha[plain.product_box[3]:] == 0]
    assert (plain_below == 255).all()
    assert below.min() < 240  # a visible shadow under the product
    border = np.ones(pixels.shape[:2], bool)
    border[4:-4, 4:-4] = False
    assert (pixels[border] == 255).all()
    assert (pixels[(shaded.product_alpha == 0) & (shaded.shadow_alpha == 0)] == 255).all()


def test_a_main_image_never_gets_a_shadow():
    with pytest.raises(ValueError, match="never gets a shadow"):
        preset(role="main", shadow=True)


def test_transparent_canvas_has_alpha_zero_outside():
    composed = compose(red_disc(), preset(background="transparent", format="png"))
    rgba = np.asarray(composed.image)
    assert composed.image.mode == "RGBA"
    assert (rgba[..., 3][composed.product_alpha == 0] == 0).all()
    assert (rgba[..., 3][composed.product_alpha == 1] == 255).all()
    # Straight colour on the soft edge is the product's red, not darkened towards the black around it (8-bit
    # premultiplied resampling: at alpha 0.2 one level of rounding is 5 levels of straight colour).
    edge = (composed.product_alpha > 0.2) & (composed.product_alpha < 0.8)
    assert edge.sum() > 100
    assert np.abs(rgba[edge][:, :3].astype(int) - RED).max() <= 6


def test_upscale_needed_says_how_much_the_product_is_enlarged():
    cutout = red_disc()  # a 121 px wide disc
    width = cutout.box[2] - cutout.box[0]
    assert upscale_needed(cutout, preset(width=1000, height=1000, fill=0.85)) == pytest.approx(850 / width)
    assert compose(cutout, preset(width=1000, height=1000, fill=0.85)).upscale == pytest.approx(850 / width)
    assert upscale_needed(cutout, preset(width=64, height=64, fill=0.5)) == 1.0  # shrunk: not an upscale


def test_product_near_the_photo_edge_is_placed_whole():
    cutout = red_disc(centre=(60, 60))  # the disc touches the photo's top and left edges
    composed = compose(cutout, preset(fill=0.7))
    x0, y0, x1, y1 = composed.product_box
    assert abs((x1 - x0) - 280) <= 3 and abs((x0 + x1) / 2 - 200) <= 1


@pytest.mark.parametrize("fmt,background", [("jpeg", "white"), ("png", "white"), ("webp", "white"),
                                            ("png", "transparent"), ("webp", "transparent")])
def test_encoding_keeps_the_background_and_carries_xmp(fmt, background):
    settings = preset(format=fmt, background=background, quality=90, fill=0.6)
    composed = compose(red_disc(), settings)
    packet = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF/></x:xmpmeta>'
    data = encode_export(composed, settings, xmp=packet)
    assert packet in data
    decoded = Image.open(io.BytesIO(data))
    assert decoded.format == fmt.upper() and decoded.size == (400, 400)
    outside = ~near_product(composed, settings)
    assert outside.mean() > 0.4
    if background == "white":
        assert (np.asarray(decoded.convert("RGB"))[outside] == 255).all()
    else:
        assert (np.asarray(decoded.getchannel("A"))[outside] == 0).all()


def test_jpeg_export_uses_full_chroma_so_white_survives_next_to_the_product():
    settings = preset(format="jpeg", quality=92)
    composed = compose(red_disc(), settings)
    decoded = Image.open(io.BytesIO(encode_export(composed, settings)))
    assert decoded.layer[0][1:3] == decoded.layer[1][1:3] == (1, 1)  # 4:4:4: no chroma subsampling
