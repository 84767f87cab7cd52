"""Enhancement: white balance from the background is not fooled by a strongly coloured product (whole-frame
gray-world is), falls back to the whole frame when there is no background, and 'edit enhance' edits a folder
with provenance, quarantines bad files, leaves sources untouched and refuses unknown operations."""

from __future__ import annotations

import hashlib
import shutil

import numpy as np
import pytest

from productstudio.config import Params
from productstudio.editing.classical import background_white_balance, gray_world, shades_of_gray
from productstudio.editing.defects import to_linear, to_srgb
from productstudio.editing.provenance import read_provenance
from productstudio.errors import ParamsError
from productstudio.steps import edit_enhance


def scene() -> tuple[np.ndarray, np.ndarray]:
    """A red sweater (half the frame) on a light grey wall, and its mask."""
    image = np.full((120, 160, 3), 200, np.uint8)
    product = np.zeros((120, 160), bool)
    product[20:100, 40:120] = True
    image[product] = (190, 30, 40)
    return image, product


def cast(image: np.ndarray, gains) -> np.ndarray:
    return to_srgb(to_linear(image) * np.asarray(gains, np.float32))


def test_the_background_tells_the_light_and_the_product_does_not_fool_it():
    clean, product = scene()
    damaged = cast(clean, (1.15, 1.0, 0.8))
    fixed = background_white_balance(damaged, product, p=4)
    wall = fixed[~product].astype(int)
    assert np.ptp(wall.mean(axis=0)) <= 2  # the wall is grey again
    assert np.abs(fixed[product].astype(int) - clean[product].astype(int)).mean() < 6  # the sweater is red again
    whole_frame = gray_world(damaged, {})
    assert np.ptp(whole_frame[~product].astype(int).mean(axis=0)) > 20  # the sweater pulled the wall to cyan


def test_without_background_it_is_whole_frame_shades_of_gray():
    clean, _ = scene()
    damaged = cast(clean, (1.1, 1.0, 0.9))
    everything = np.ones(clean.shape[:2], bool)
    assert np.array_equal(background_white_balance(damaged, everything, p=4), shades_of_gray(damaged, {"p": 4}))


@pytest.fixture
def folder(tmp_path, clothing_dir):
    photos = tmp_path / "photos"
    photos.mkdir()
    for source in sorted((clothing_dir / "test" / "t-shirt").glob("*.jpg"))[:2]:
        shutil.copyfile(source, photos / source.name)
    (photos / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not a photo")
    return photos


def test_a_folder_is_enhanced_with_provenance_and_sources_untouched(folder, tmp_path):
    before = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()}
    report = edit_enhance.run(Params(), in_dir=folder, out=tmp_path / "out", operations="white-balance,sharpen",
                              limit=None)
    assert {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()} == before
    summary = report["summary"]
    assert (summary["files"], summary["edited"], summary["quarantined"]) == (3, 2, 1)
    assert report["settings"]["operations"] == ["white-balance", "sharpen"]
    for row in (r for r in report["photos"] if r["status"] == "edited"):
        provenance = read_provenance((tmp_path / "out" / row["file"]).read_bytes())
        assert provenance["model_name"] == edit_enhance.RECIPE_NAME and row["change_db"] < 100
    assert "2 enhanced, 1 quarantined" in edit_enhance.format(report)
    # other operations are another edit: nothing is resumed from the first run's records
    other = edit_enhance.run(Params(), in_dir=folder, out=tmp_path / "out", operations="exposure", limit=None)
    assert other["summary"]["resumed"] == 0


def test_unknown_operations_are_refused(folder, tmp_path):
    with pytest.raises(ParamsError, match="white-balance, exposure, sharpen"):
        edit_enhance.run(Params(), in_dir=folder, out=tmp_path / "out", operations="vivid", limit=None)
