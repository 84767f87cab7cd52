"""Gates refuse bad cut-outs with a reason; every export rule fails on a file crafted to break it."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from PIL import Image

from productstudio.config import GateSettings, PresetSettings
from productstudio.editing.compliance import check_export, gate_cutout, gate_upscale, passed
from productstudio.editing.compose import compose, encode_export
from productstudio.models.text_detector import TextBox
from tests.unit.test_compose import red_disc

MAIN = PresetSettings(width=320, height=320, fill=0.88, min_fill=0.85, min_long_side=300, format="jpeg",
                      max_file_bytes=1_000_000)
GATES = GateSettings()


def export(settings: PresetSettings = MAIN, cutout=None):
    composed = compose(cutout or red_disc(), settings)
    return encode_export(composed, settings), composed


def failed(checks: dict) -> set[str]:
    return {rule for rule, check in checks.items() if not check["ok"]}


@pytest.mark.parametrize("settings", [
    MAIN,
    MAIN.model_copy(update={"format": "png"}),
    PresetSettings(width=300, height=375, fill=0.75, role="secondary", shadow=True, format="jpeg"),
    PresetSettings(width=256, height=256, background="transparent", format="png", check_text=False),
    PresetSettings(width=256, height=256, background="transparent", format="webp", quality=80, check_text=False),
    PresetSettings(width=256, height=256, format="webp", quality=80),
])
def test_a_good_export_passes_every_rule(settings):
    data, composed = export(settings)
    checks = check_export(data, settings, composed, text_boxes=[])
    assert passed(checks), {rule: check for rule, check in checks.items() if not check["ok"]}
    expected = {"format", "size", "min_long_side", "aspect", "file_bytes", "fill",
                "background_white" if settings.background == "white" else "background_transparent"}
    assert expected <= set(checks)
    assert ("no_text" in checks) == settings.check_text


def test_wrong_size_and_aspect_fail():
    data, composed = export(MAIN.model_copy(update={"width": 320, "height": 240}))
    checks = check_export(data, MAIN, composed, text_boxes=[])
    assert failed(checks) == {"size", "aspect"}
    assert checks["size"]["value"] == "320x240"


def test_too_short_long_side_fails():
    data, composed = export()
    stricter = MAIN.model_copy(update={"min_long_side": 1000})
    checks = check_export(data, stricter, composed, text_boxes=[])
    assert failed(checks) == {"min_long_side"} and checks["min_long_side"]["value"] == 320


def test_one_grey_background_pixel_fails_background_white():
    composed = compose(red_disc(), MAIN.model_copy(update={"format": "png"}))
    pixels = np.asarray(composed.image).copy()
    pixels[2, 3] = (254, 254, 254)
    composed.image = Image.fromarray(pixels)
    settings = MAIN.model_copy(update={"format": "png"})
    checks = check_export(encode_export(composed, settings), settings, composed, text_boxes=[])
    assert failed(checks) == {"background_white"} and checks["background_white"]["value"] == 1


def test_a_grey_block_in_a_jpeg_fails_background_white():
    composed = compose(red_disc(), MAIN)
    pixels = np.asarray(composed.image).copy()
    pixels[300:316, 8:24] = 250
    composed.image = Image.fromarray(pixels)
    checks = check_export(encode_export(composed, MAIN), MAIN, composed, text_boxes=[])
    assert failed(checks) == {"background_white"} and checks["background_white"]["value"] >= 200


def test_transparent_background_with_an_opaque_corner_fails():
    settings = PresetSettings(width=256, height=256, background="transparent", format="png", check_text=False)
    composed = compose(red_disc(), settings)
    rgba = np.asarray(composed.image).copy()
    rgba[:3, :3, 3] = 40
    composed.image = Image.fromarray(rgba, "RGBA")
    checks = check_export(encode_export(composed, settings), settings, composed)
    assert failed(checks) == {"background_transparent"} and checks["background_transparent"]["value"] == 9
    flat = encode_export(dataclasses.replace(composed, image=composed.image.convert("RGB")), settings)
    assert checks_fail_on(flat, settings, composed) == {"background_transparent"}


def checks_fail_on(data: bytes, settings: PresetSettings, composed) -> set[str]:
    return failed(check_export(data, settings, composed))


def test_too_small_fill_fails():
    data, composed = export(MAIN.model_copy(update={"fill": 0.6}))
    checks = check_export(data, MAIN, composed, text_boxes=[])
    assert failed(checks) == {"fill"} and checks["fill"]["value"] == pytest.approx(0.6, abs=0.01)


def test_too_many_bytes_fails():
    data, composed = export()
    tight = MAIN.model_copy(update={"max_file_bytes": len(data) - 1})
    assert failed(check_export(data, tight, composed, text_boxes=[])) == {"file_bytes"}


def test_text_fails_and_an_unchecked_text_rule_is_not_a_pass():
    data, composed = export()
    boxes = [TextBox(10, 10, 90, 30, 0.97)]
    checks = check_export(data, MAIN, composed, text_boxes=boxes)
    assert failed(checks) == {"no_text"} and checks["no_text"]["value"]["boxes"] == 1
    assert failed(check_export(data, MAIN, composed, text_boxes=None)) == {"no_text"}
    no_text_rule = MAIN.model_copy(update={"check_text": False})
    assert passed(check_export(data, no_text_rule, composed, text_boxes=boxes))


def test_wrong_format_and_undecodable_bytes_fail():
    png = MAIN.model_copy(update={"format": "png"})
    data, composed = export(png)
    assert failed(check_export(data, MAIN, composed, text_boxes=[])) == {"format"}
    checks = check_export(b"not an image", MAIN, composed, text_boxes=[])
    assert not passed(checks) and failed(checks) == {"format"}


def cutout_with(**changes):
    return dataclasses.replace(red_disc(), **changes)


def test_gates_pass_a_good_cutout_and_refuse_each_bad_case_with_a_reason():
    assert gate_cutout(cutout_with(foreground_fraction=0.3, edges_touched=1, uncertain_fraction=0.05), GATES) == []
    cases = {"covers 2.0%": {"foreground_fraction": 0.02}, "covers 97.0%": {"foreground_fraction": 0.97},
             "touches 2 of the photo's 4 edges": {"edges_touched": 2, "foreground_fraction": 0.3},
             "20.0% of the product's pixels are uncertain": {"uncertain_fraction": 0.2, "foreground_fraction": 0.3}}
    for words, changes in cases.items():
        reasons = gate_cutout(cutout_with(**changes), GATES)
        assert len(reasons) == 1 and words in reasons[0], reasons
        assert "\n" not in reasons[0]
    several = gate_cutout(cutout_with(foreground_fraction=0.99, edges_touched=4, uncertain_fraction=0.5), GATES)
    assert len(several) == 3


def test_upscale_gate_says_by_how_much():
    assert gate_upscale(1.0, GATES) is None and gate_upscale(4.0, GATES) is None
    reason = gate_upscale(5.0, GATES)
    assert "5.00x" in reason and "at most 4x" in reason and "1.25x too much" in reason
