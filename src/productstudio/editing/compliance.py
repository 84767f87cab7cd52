"""Gates and checks: which cut-outs are refused, and whether an exported file meets its preset's rules.

    reasons = gate_cutout(cutout, gates)        # [] or one-line reasons: the photo is refused for every preset
    reason = gate_upscale(upscale, gates)       # None or a one-line reason: refused for this preset
    checks = check_export(data, preset, composed, text_boxes)   # {rule: {"ok", "value", "rule"}}
    passed(checks)                              # every rule ok

``check_export`` judges the *file*: it decodes the bytes and measures what a marketplace would see (format, exact
size, longest side, aspect, file size, the background's pixels). The product's own extent comes from
``composed.product_alpha`` (the alpha >= 0.5 box), since on a decoded white canvas a white product and its
background cannot be told apart.

"Background exactly white" is checked on every pixel outside the product (and outside its shadow, on a preset that
has one). The pixels next to the product that the encoding itself may touch are not "outside": for JPEG the 8x8
blocks the product (or shadow) reaches, for lossy WebP the 16x16 macroblocks it reaches and their neighbours (its
loop filter and prediction cross block edges), for lossless files one pixel. Everywhere else a decoded pixel that
is not exactly (255, 255, 255) fails the check; a transparent background must have alpha exactly 0 there.

Fill is measured the way Amazon states it: the product's longest extent over the frame's, i.e.
``max(box_w / W, box_h / H)``, with one pixel of slack for the rounding of the placement.
"""

from __future__ import annotations

import io

import cv2
import numpy as np
from PIL import Image

from productstudio.config import GateSettings, PresetSettings
from productstudio.editing.compose import Composed
from productstudio.editing.cutout import Cutout

PIL_FORMATS = {"jpeg": "JPEG", "png": "PNG", "webp": "WEBP"}
ASPECT_TOLERANCE = 0.005  # relative: 1080x1350 and 1081x1350 are the same aspect for a marketplace
FILL_SLACK_PX = 1  # the product's box is placed on whole pixels


def gate_cutout(cutout: Cutout, gates: GateSettings) -> list[str]:
    """One-line reasons to refuse the photo's cut-out (empty when it may be exported)."""
    reasons = []
    fraction = cutout.foreground_fraction
    if fraction < gates.min_foreground:
        reasons.append(f"the product covers {fraction:.1%} of the photo (minimum {gates.min_foreground:.0%}): "
                       "the cut-out missed it or it is too small in the frame")
    if fraction > gates.max_foreground:
        reasons.append(f"the cut-out covers {fraction:.1%} of the photo (maximum {gates.max_foreground:.0%}): "
                       "the background was not removed")
    if cutout.edges_touched > gates.max_edges_touched:
        reasons.append(f"the mask touches {cutout.edges_touched} of the photo's 4 edges (at most "
                       f"{gates.max_edges_touched}): the product is cut off by the frame or the background was kept")
    if cutout.uncertain_fraction > gates.max_uncertain:
        reasons.append(f"{cutout.uncertain_fraction:.1%} of the product's pixels are uncertain (0.1 < alpha < 0.9; "
                       f"at most {gates.max_uncertain:.0%}): the mask is unsure where the product ends")
    return reasons


def gate_upscale(upscale: float, gates: GateSettings) -> str | None:
    """A one-line reason when the preset would enlarge the product's pixels more than ``gates.max_upscale``."""
    if upscale > gates.max_upscale:
        return (f"needs {upscale:.2f}x upscaling (at most {gates.max_upscale:g}x, {upscale / gates.max_upscale:.2f}x "
                "too much): the photo is too small for this preset")
    return None


def _blocks_reached(mask: np.ndarray, block: int, neighbours: int = 0) -> np.ndarray:
    """Every pixel of each ``block`` x ``block`` tile (on the codec's grid from the top left) that holds a mask
    pixel, grown by ``neighbours`` tiles."""
    height, width = mask.shape
    kernel = np.ones((block, block), np.uint8)
    # max over each tile: a dilation whose window starts at the pixel, sampled at the tiles' top-left corners
    tiles = cv2.dilate(mask.view(np.uint8), kernel, anchor=(0, 0))[::block, ::block]
    if neighbours:
        size = 2 * neighbours + 1
        tiles = cv2.dilate(tiles, np.ones((size, size), np.uint8))
    rows, cols = tiles.shape
    return cv2.resize(tiles, (cols * block, rows * block), interpolation=cv2.INTER_NEAREST)[:height, :width] > 0


def near_product(composed: Composed, preset: PresetSettings) -> np.ndarray:
    """(H, W) bool: the product, its shadow, and the pixels next to them the encoding may legitimately change."""
    drawn = composed.product_alpha > 0
    if composed.shadow_alpha is not None:
        drawn |= composed.shadow_alpha > 0
    if preset.format == "jpeg":
        return _blocks_reached(drawn, 8)
    if preset.format == "webp" and preset.quality < 100:
        return _blocks_reached(drawn, 16, neighbours=1)
    return cv2.dilate(drawn.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0


def _check(ok: bool, value, rule: str) -> dict:
    return {"ok": bool(ok), "value": value, "rule": rule}


def check_export(data: bytes, preset: PresetSettings, composed: Composed,
                 text_boxes: list | None = None) -> dict[str, dict]:
    """Each of ``preset``'s rules, judged on the decoded ``data``: {rule: {"ok", "value", "rule"}} (module doc).
    ``text_boxes`` are the text detector's boxes on the product; None when text detection did not run (a preset
    with ``check_text`` then fails its ``no_text`` rule: an unchecked rule is not a passed one)."""
    checks: dict[str, dict] = {}
    wanted = PIL_FORMATS[preset.format]
    try:
        decoded = Image.open(io.BytesIO(data))
        decoded.load()
    except Exception as error:  # noqa: BLE001 - whatever the decoder says, the file is unusable
        return {"format": _check(False, f"not decodable ({type(error).__name__})", f"a readable {wanted} file")}
    checks["format"] = _check(decoded.format == wanted, decoded.format, f"{wanted}")
    width, height = decoded.size
    checks["size"] = _check((width, height) == (preset.width, preset.height), f"{width}x{height}",
                            f"exactly {preset.width}x{preset.height}")
    checks["min_long_side"] = _check(max(width, height) >= preset.min_long_side, max(width, height),
                                     f"longest side >= {preset.min_long_side}")
    aspect, target = width / height, preset.width / preset.height
    checks["aspect"] = _check(abs(aspect - target) <= ASPECT_TOLERANCE * target, round(aspect, 4),
                              f"width/height = {target:.4f} (within {ASPECT_TOLERANCE:.1%})")
    checks["file_bytes"] = _check(len(data) <= preset.max_file_bytes, len(data), f"<= {preset.max_file_bytes} bytes")

    same_canvas = composed.product_alpha.shape == (height, width)
    outside = np.logical_not(near_product(composed, preset)) if same_canvas else None
    if preset.background == "white":
        rule = "every pixel outside the product (and its shadow) is exactly (255, 255, 255)"
        if outside is None:
            checks["background_white"] = _check(False, "file size differs from the composed canvas", rule)
        else:
            # (cv2 counts on whole planes: boolean indexing of 1600x1600x3 costs more than the decode)
            white = cv2.inRange(np.asarray(decoded.convert("RGB")), (255, 255, 255), (255, 255, 255))
            not_white = cv2.bitwise_not(white)
            off = cv2.countNonZero(cv2.bitwise_and(not_white, not_white, mask=outside.view(np.uint8)))
            checks["background_white"] = _check(off == 0, off, rule + " (value: pixels that are not)")
    else:
        rule = "every pixel outside the product (and its shadow) has alpha 0"
        if outside is None or "A" not in decoded.getbands():
            value = "no alpha channel" if "A" not in decoded.getbands() else "file size differs from the canvas"
            checks["background_transparent"] = _check(False, value, rule)
        else:
            alpha = np.asarray(decoded.getchannel("A"))
            opaque = cv2.countNonZero(cv2.bitwise_and(alpha, alpha, mask=outside.view(np.uint8)))
            checks["background_transparent"] = _check(opaque == 0, opaque, rule + " (value: pixels that are not)")

    x0, y0, x1, y1 = composed.product_box
    canvas_h, canvas_w = composed.product_alpha.shape  # the frame the product was placed in
    fill = max((x1 - x0) / canvas_w, (y1 - y0) / canvas_h)
    slack = FILL_SLACK_PX / max(canvas_w, canvas_h)
    checks["fill"] = _check(fill + slack >= preset.min_fill, round(fill, 4),
                            f"the product's longest extent over the frame's >= {preset.min_fill:.0%}")
    if preset.check_text:
        rule = "no text or watermark detected on the product"
        if text_boxes is None:
            checks["no_text"] = _check(False, "not checked", rule)
        else:
            scores = [round(float(box.score), 3) for box in text_boxes]
            checks["no_text"] = _check(not text_boxes, {"boxes": len(text_boxes), "scores": scores[:5]}, rule)
    return checks


def passed(checks: dict[str, dict]) -> bool:
    """Every rule ok (and at least one rule checked)."""
    return bool(checks) and all(check["ok"] for check in checks.values())
