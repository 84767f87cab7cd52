"""Style: the tone curve moves lightness and keeps hue, framing gives the look's aspect, fill and background without
resampling the product, a look measured on photos framed by a known look recovers it, painterly styles keep the
product's colour when asked, and 'edit style' styles a folder (quarantining what it cannot take) and resumes."""

from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import pytest
from PIL import Image

from productstudio.config import CutoutSettings, Params
from productstudio.editing.provenance import read_provenance
from productstudio.editing.style import (QUANTILES, CatalogueLook, chroma_shift, fit_look, frame, paint,
                                         perceptual_luminance, tone_gain)
from productstudio.errors import DataError, ParamsError
from productstudio.models.pretrained import weights_dir
from productstudio.steps import edit_style

LOOK = CatalogueLook(background=(244, 240, 236), tone=(40.0, 90.0, 120.0, 150.0, 220.0), fill=0.7, aspect=0.8,
                     references=3)


@pytest.fixture(scope="module")
def segmenter():
    from productstudio.models.salient import load_segmenter

    return load_segmenter(weights_dir("u2netp"), threads=1)


@pytest.fixture(scope="module")
def stylizer():
    from productstudio.models.stylizer import load_stylizer

    return load_stylizer(weights_dir("magenta-style-predict"), weights_dir("magenta-style-transform"), threads=1)


def striped_product() -> tuple[np.ndarray, np.ndarray]:
    """A dark red and blue product (a gradient, so it has a tone range) on a grey wall, and its mask."""
    image = np.full((100, 120, 3), 180, np.uint8)
    product = np.zeros((100, 120), bool)
    product[20:80, 30:90] = True
    ramp = np.linspace(0.3, 1.0, 60)[None, :, None]
    image[20:80, 30:60] = (ramp[:, :30] * np.array([150, 30, 40])).astype(np.uint8)
    image[20:80, 60:90] = (ramp[:, 30:] * np.array([30, 50, 140])).astype(np.uint8)
    return image, product


def test_the_tone_curve_moves_the_products_lightness_and_keeps_its_hue():
    image, product = striped_product()
    target = tuple(float(v) for v in np.quantile(perceptual_luminance(image)[product], QUANTILES) + 40)
    toned = tone_gain(image, product, target, strength=1.0)
    reached = np.quantile(perceptual_luminance(toned)[product], QUANTILES)
    assert np.abs(reached - np.asarray(target)).max() < 4  # the product's tone is the look's
    assert chroma_shift(image, toned, product) > 3  # brighter colours carry more chroma ...
    lab_before, lab_after = (np.degrees(np.arctan2(*_ab(x, product))) for x in (image, toned))
    assert np.abs(lab_after - lab_before).mean() < 3  # ... but their hue stays
    half = tone_gain(image, product, target, strength=0.5)
    assert 0.35 < (perceptual_luminance(half)[product].mean() - perceptual_luminance(image)[product].mean()) / 40 < 0.65
    assert tone_gain(image, product, target, strength=0.0) is image


def _ab(image, mask):
    from skimage.color import rgb2lab

    lab = rgb2lab(image[mask][None])[0]
    return lab[:, 2], lab[:, 1]


def test_framing_gives_the_looks_aspect_fill_and_background_without_resampling():
    image, product = striped_product()
    alpha = product.astype(np.float32)
    framed = frame(image, alpha, (30, 20, 90, 80), LOOK)
    height, width = framed.shape[:2]
    assert abs(width / height - LOOK.aspect) < 0.02
    solid = np.any(framed != np.array(LOOK.background), axis=2)
    rows, cols = np.flatnonzero(solid.any(axis=1)), np.flatnonzero(solid.any(axis=0))
    box_h, box_w = rows[-1] + 1 - rows[0], cols[-1] + 1 - cols[0]
    assert (box_h, box_w) == (60, 60)  # the product's pixels, not resampled
    assert abs(max(box_h / height, box_w / width) - LOOK.fill) < 0.02
    assert tuple(framed[0, 0]) == LOOK.background and tuple(framed[-1, -1]) == LOOK.background
    assert np.array_equal(framed[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1], image[20:80, 30:90])


def test_a_look_measured_on_photos_framed_by_a_known_look_recovers_it(tshirt_photos, segmenter):
    from productstudio.editing.cutout import cut_out
    from productstudio.editing.studio import read_photo

    settings = CutoutSettings()
    references = []
    for path in sorted((tshirt_photos / "train" / "t-shirt").glob("*.jpg")):
        photo = read_photo(path, 40_000_000)
        cutout = cut_out(photo, segmenter, settings)
        references.append(frame(cutout.foreground, cutout.alpha, cutout.box, LOOK))
    measured = fit_look(references, segmenter, settings)
    assert np.abs(np.array(measured.background) - np.array(LOOK.background)).max() <= 3
    assert abs(measured.aspect - LOOK.aspect) < 0.01 and abs(measured.fill - LOOK.fill) < 0.05
    with pytest.raises(DataError, match="at least 3 reference photos"):
        fit_look(references[:2], segmenter, settings)


def test_painterly_styles_keep_the_products_colour_when_asked(tshirt_photos, segmenter, stylizer):
    from productstudio.editing.studio import read_photo

    photo = read_photo(sorted((tshirt_photos / "test" / "t-shirt").glob("*.jpg"))[0], 40_000_000)
    style = np.zeros((64, 64, 3), np.uint8)
    style[..., 2] = 220  # a blue style
    style[::8] = (250, 160, 20)  # with orange stripes
    code = stylizer.style_code(style)
    full = paint(photo, stylizer, code, "none", 1.0, segmenter, CutoutSettings())
    kept = paint(photo, stylizer, code, "colour", 1.0, segmenter, CutoutSettings())
    backdrop = paint(photo, stylizer, code, "background", 1.0, segmenter, CutoutSettings())
    assert full.image.shape == photo.shape
    inside = full.product
    assert chroma_shift(photo, full.image, inside) > 2 * chroma_shift(photo, kept.image, inside)
    assert chroma_shift(photo, backdrop.image, inside) < 2  # the product as shot (but its decontaminated edge)
    assert chroma_shift(photo, backdrop.image, ~inside) > 5  # the backdrop painted
    with pytest.raises(ValueError, match="preserve"):
        paint(photo, stylizer, code, "sepia", 1.0, segmenter, CutoutSettings())


@pytest.fixture
def folder(tmp_path, tshirt_photos):
    photos = tmp_path / "photos"
    photos.mkdir()
    for source in sorted((tshirt_photos / "test" / "t-shirt").glob("*.jpg"))[:2]:
        shutil.copyfile(source, photos / source.name)
    (photos / "broken.jpg").write_bytes(b"\xff\xd8\xff not a photo")
    return photos


def test_a_folder_gets_the_catalogue_look_and_a_rerun_from_the_saved_look_resumes(folder, tshirt_photos, tmp_path):
    before = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()}
    references = tmp_path / "references"
    shutil.copytree(tshirt_photos / "train" / "t-shirt", references)
    (references / "notes.txt").write_text("not a photo")
    out = tmp_path / "out"
    report = edit_style.run(Params(), in_dir=folder, out=out, references=references, look=None, style_image=None,
                            preserve=None, tone_strength=None, strength=None, limit=None)
    assert {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()} == before
    summary = report["summary"]
    assert (summary["files"], summary["edited"], summary["quarantined"]) == (3, 2, 1)
    look = CatalogueLook.load(out / "look.json")
    assert look.references == 3 and report["settings"]["references_refused"][0].startswith("notes.txt: ")
    for row in (r for r in report["photos"] if r["status"] == "edited"):
        styled = Image.open(out / row["file"])
        assert abs(styled.width / styled.height - look.aspect) < 0.02
        assert read_provenance((out / row["file"]).read_bytes())["model_name"] == edit_style.LOOK_RECIPE
    text = edit_style.format(report)
    assert "2 styled, 1 quarantined" in text and "reference not used: notes.txt" in text
    assert len(list((out / "samples").glob("*.png"))) == 2
    saved = tmp_path / "look.json"
    shutil.copyfile(out / "look.json", saved)
    again = edit_style.run(Params(), in_dir=folder, out=out, references=None, look=saved, style_image=None,
                           preserve=None, tone_strength=None, strength=None, limit=None)
    assert again["summary"]["resumed"] == 3  # the same look and settings: nothing is redone
    toned = edit_style.run(Params(), in_dir=folder, out=out, references=None, look=saved, style_image=None,
                           preserve=None, tone_strength=0.5, strength=None, limit=None)
    assert toned["summary"]["resumed"] == 0  # another tone is another edit


def test_a_folder_gets_a_painterly_backdrop(folder, tmp_path):
    style = tmp_path / "style.png"
    Image.fromarray(np.tile(np.array([[[20, 60, 220]], [[250, 160, 20]]], np.uint8), (32, 64, 1))).save(style)
    report = edit_style.run(Params(), in_dir=folder, out=tmp_path / "out", references=None, look=None,
                            style_image=style, preserve="background", tone_strength=None, strength=0.8, limit=1)
    assert report["summary"]["edited"] == 1 and report["settings"]["preserve"] == "background"
    row = report["photos"][0]
    assert row["change_db"] < 40  # the backdrop was painted
    assert read_provenance((tmp_path / "out" / row["file"]).read_bytes())["model_name"] == edit_style.PAINT_MODEL
    assert "painterly style of" in edit_style.format(report)


@pytest.mark.parametrize("kwargs, message", [
    ({"references": None}, "one of --references"),
    ({"style_image": "x.png"}, "one of --references"),
    ({"preserve": "sepia"}, "preserve"),
    ({"tone_strength": 1.5}, "less than or equal to 1"),
])
def test_bad_requests_get_one_line_reasons(folder, tmp_path, kwargs, message):
    arguments = dict(in_dir=folder, out=tmp_path / "out", references=tmp_path, look=None, style_image=None,
                     preserve=None, tone_strength=None, strength=None, limit=None)
    arguments.update({k: (tmp_path / v if isinstance(v, str) else v) for k, v in kwargs.items()})
    with pytest.raises(ParamsError, match=message):
        edit_style.run(Params(), **arguments)
