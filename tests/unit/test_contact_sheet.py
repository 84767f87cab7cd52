"""The before/after picture and the HTML contact sheet, with hostile file names in the report."""

from __future__ import annotations

import shutil
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pytest
from PIL import Image

from productstudio.editing.contact_sheet import before_after_png, write_contact_sheet

HOSTILE = "<script>x.jpg"


class Links(HTMLParser):
    """Every src/href in the page, and every tag name (to look for script or iframe tags)."""

    def __init__(self):
        super().__init__()
        self.urls, self.tags = [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.urls += [value for name, value in attrs if name in ("src", "href")]


@pytest.fixture(scope="module")
def garment(clothing_dir) -> Path:
    return sorted((clothing_dir / "test" / "pants").glob("*.jpg"))[0]


def checks(ok_fill: bool) -> dict:
    return {"white_background": {"ok": True, "value": 1.0, "rule": "border pixels are RGB 255"},
            "fill": {"ok": ok_fill, "value": 0.91 if ok_fill else 0.62, "rule": "product fills >= 0.85"}}


@pytest.fixture()
def batch(tmp_path, garment):
    """A batch's folders and report: an exported photo with a hostile name, a refused one, a quarantined one
    (a valid image, so opening it would show), and one whose report paths try to leave the output folder."""
    photos, out = tmp_path / "in", tmp_path / "out"
    (photos / "sub").mkdir(parents=True)
    shutil.copy(garment, photos / "sub" / HOSTILE)
    shutil.copy(garment, photos / "refused.jpg")
    shutil.copy(garment, photos / "quarantined.jpg")
    export = out / "amazon-main" / "sub" / HOSTILE
    export.parent.mkdir(parents=True)
    with Image.open(garment) as image:
        image.convert("RGB").resize((300, 300)).save(export, format="JPEG")
    outside = tmp_path / "secret.jpg"
    shutil.copy(garment, outside)
    report = {
        "presets": ["amazon-main", "instagram-4x5"], "weights": "u2netp sha256:abc",
        "summary": {"photos": 4, "exported": 1, "refused": 2, "quarantined": 1,
                    "presets": {"amazon-main": {"exported": 1, "passed": 1, "refused": 1},
                                "instagram-4x5": {"exported": 0, "passed": 0, "refused": 2}}},
        "photos": [
            {"source": f"sub/{HOSTILE}", "status": "exported", "reason": None,
             "cutout": {"foreground_fraction": 0.41, "edges_touched": 0, "uncertain_fraction": 0.02},
             "exports": [{"preset": "amazon-main", "file": f"amazon-main/sub/{HOSTILE}", "upscale": 1.0,
                          "passed": True, "checks": checks(True)},
                         {"preset": "instagram-4x5", "file": None, "upscale": 1.2, "passed": False,
                          "reason": "fails fill", "checks": checks(False)}]},
            {"source": "refused.jpg", "status": "refused", "reason": "foreground 3.1 % < 5 % <of the photo>",
             "cutout": {"foreground_fraction": 0.031, "edges_touched": 2, "uncertain_fraction": 0.4}, "exports": []},
            {"source": "quarantined.jpg", "status": "quarantined", "reason": "not an image: no known format",
             "cutout": None, "exports": []},
            {"source": "../secret.jpg", "status": "exported", "reason": None, "cutout": None,
             "exports": [{"preset": "amazon-main", "file": "../secret.jpg", "upscale": 1.0, "passed": True,
                          "checks": {}},
                         {"preset": "amazon-main", "file": str(outside), "thumb": str(outside), "upscale": 1.0,
                          "passed": True, "checks": {}}]},
        ]}
    return report, photos, out


def test_sheet_escapes_names_and_links_only_files_inside_the_output(batch):
    report, photos, out = batch
    index = write_contact_sheet(report, out, photos)
    page = index.read_text(encoding="utf-8")
    parser = Links()
    parser.feed(page)
    assert "script" not in parser.tags and "iframe" not in parser.tags
    assert "&lt;script&gt;x.jpg" in page and "<script>" not in page
    assert parser.urls, "the sheet shows thumbnails and links the export"
    for url in parser.urls:
        path = unquote(url)
        assert ":" not in url and not url.startswith("/") and ".." not in Path(path).parts, url
        assert (out / path).resolve().is_relative_to(out.resolve()) and (out / path).is_file(), url
    assert f"amazon-main/sub/{HOSTILE}" in map(unquote, parser.urls)  # the export is linked
    assert "secret" not in "".join(parser.urls)


def test_sheet_shows_reasons_checks_and_pass_rates(batch):
    report, photos, out = batch
    page = write_contact_sheet(report, out, photos).read_text(encoding="utf-8")
    assert "foreground 3.1 % &lt; 5 % &lt;of the photo&gt;" in page  # a refused photo's reason, escaped
    assert "not an image: no known format" in page
    assert "fails fill" in page
    assert '<li class="fail" title="product fills &gt;= 0.85">✗ fill' in page
    assert '<li class="ok" title="border pixels are RGB 255">✓ white_background' in page
    assert "33.3 %" in page and "0.0 %" in page  # 1 of 3 usable photos passed amazon-main, none instagram-4x5


def test_thumbnails_are_small_jpegs_and_quarantined_files_are_never_opened(batch):
    report, photos, out = batch
    write_contact_sheet(report, out, photos)
    thumbs = sorted((out / "thumbs").rglob("*.jpg"))
    # hostile source, its export, the refused source; not the quarantined file, nothing from outside
    assert len(thumbs) == 3
    for thumb in thumbs:
        with Image.open(thumb) as image:
            assert image.format == "JPEG" and max(image.size) <= 256


def test_sheet_uses_the_batch_thumbnails_when_they_exist(batch):
    report, photos, out = batch
    made = out / "thumbs" / "source" / "refused.jpg.jpg"
    made.parent.mkdir(parents=True)
    Image.new("RGB", (40, 30), "red").save(made)
    report["photos"][1]["thumb"] = "thumbs/source/refused.jpg.jpg"
    page = write_contact_sheet(report, out, photos).read_text(encoding="utf-8")
    assert 'src="thumbs/source/refused.jpg.jpg"' in page


def test_before_after_places_each_image_in_its_labelled_cell(garment, tmp_path):
    with Image.open(garment) as image:
        before = image.convert("RGB")
    white = Image.new("RGB", (500, 500), (255, 255, 255))
    white.paste((20, 40, 200), (100, 100, 400, 400))  # a blue "product" on white
    transparent = Image.new("RGBA", (400, 200), (0, 0, 0, 0))
    cell = 96
    path = before_after_png(before, [("amazon-main", white), ("transparent", transparent)], tmp_path / "ba.png",
                            cell=cell)
    sheet = np.asarray(Image.open(path).convert("RGB")).astype(int)
    pad = 4
    assert sheet.shape[1] == pad + 3 * (cell + pad)
    centre = lambda i: sheet[pad + cell // 2, pad + i * (cell + pad) + cell // 2]  # noqa: E731
    assert np.abs(centre(1) - (20, 40, 200)).max() <= 2
    third = sheet[pad + cell // 2 - 10:pad + cell // 2 + 10, pad + 2 * (cell + pad):pad + 3 * (cell + pad) - pad]
    assert {204, 255} <= set(np.unique(third))  # transparency shown as a checkerboard
    labels = sheet[pad + cell:, :]
    assert (labels.sum(axis=2) < 200).sum() > 50  # dark label text under the cells
    source_cell = sheet[pad:pad + cell, pad:pad + cell]
    assert source_cell.std() > 10  # the real photo, not a blank cell
