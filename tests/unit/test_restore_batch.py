"""'edit restore' over a folder: every photo restored at its own size with provenance, bad files quarantined with a
reason, sources untouched, 1:1 samples, and a rerun resumes instead of redoing."""

from __future__ import annotations

import hashlib
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from productstudio.config import Params
from productstudio.editing.provenance import EDITED, read_provenance
from productstudio.errors import ParamsError
from productstudio.models.restorer import Restorer, save_restorer
from productstudio.steps import edit_restore


@pytest.fixture
def folder(tmp_path, clothing_dir):
    photos = tmp_path / "photos"
    (photos / "shirts").mkdir(parents=True)
    for source in sorted((clothing_dir / "test" / "t-shirt").glob("*.jpg"))[:2]:
        shutil.copyfile(source, photos / "shirts" / source.name)
    (photos / "broken.jpg").write_bytes(b"\xff\xd8\xff not a photo")
    torch.manual_seed(0)
    model = Restorer(width=8, depth=2)
    torch.nn.init.normal_(model.tail.weight, std=0.02)  # a model that changes photos a little
    save_restorer(model, tmp_path / "restorer", {"kind": "restorer", "width": 8, "depth": 2})
    return photos, tmp_path / "restorer"


def digests(root):
    return {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def test_a_folder_is_restored_with_provenance_and_bad_files_quarantined(folder, tmp_path):
    photos, restorer = folder
    before = digests(photos)
    out = tmp_path / "out"
    # --always: the gate would leave these clean catalogue photos alone (test below)
    report = edit_restore.run(Params(), in_dir=photos, out=out, restorer=restorer, detector=None, limit=None,
                              always=True)
    assert digests(photos) == before  # sources untouched
    summary = report["summary"]
    assert (summary["files"], summary["edited"], summary["quarantined"]) == (3, 2, 1)
    quarantined = next(r for r in report["photos"] if r["status"] == "quarantined")
    assert quarantined["source"] == "broken.jpg" and quarantined["reason"]
    assert "broken.jpg" in (out / "quarantine.tsv").read_text()
    for row in (r for r in report["photos"] if r["status"] == "edited"):
        data = (out / row["file"]).read_bytes()
        with Image.open(photos / row["source"]) as source, Image.open(out / row["file"]) as restored:
            assert restored.size == source.size and restored.mode == "RGB"
        provenance = read_provenance(data)
        assert provenance["digital_source_type"] == EDITED and provenance["model_name"] == "product-studio-restorer"
        assert provenance["source_sha256"] == row["sha256"]
        assert 20 < row["change_db"] < 100  # changed, but not wrecked
    assert sorted(p.name for p in (out / "samples").iterdir()) == ["00.png", "01.png"]
    assert "2 restored, 1 quarantined" in edit_restore.format(report)
    again = edit_restore.run(Params(), in_dir=photos, out=out, restorer=restorer, detector=None, limit=None,
                             always=True)
    assert again["summary"]["resumed"] == 3 and again["photos"] == report["photos"]


def test_the_gate_leaves_clean_photos_as_they_are_and_restores_noisy_ones(folder, tmp_path):
    photos, restorer = folder
    clean = sorted((photos / "shirts").glob("*.jpg"))[0]
    pixels = np.asarray(Image.open(clean).convert("RGB")).astype(float)
    noise = np.random.default_rng(0).normal(0, 15, pixels.shape)
    Image.fromarray(np.clip(pixels + noise, 0, 255).round().astype(np.uint8)).save(photos / "shirts" / "noisy.png")
    report = edit_restore.run(Params(), in_dir=photos, out=tmp_path / "gated", restorer=restorer, detector=None,
                              limit=None)
    rows = {r["source"]: r for r in report["photos"] if r["status"] == "edited"}
    left = rows[clean.relative_to(photos).as_posix()]
    assert left["change_db"] == 100.0 and not left["notes"]["restorer"]["restore"]
    assert left["notes"]["restorer"]["reason"].startswith("clean")
    restored = rows["shirts/noisy.png"]
    assert restored["notes"]["restorer"]["restore"] and 20 < restored["change_db"] < 100
    assert restored["notes"]["restorer"]["noise_sigma"] > 8
    assert "1 went through the restorer" in edit_restore.format(report) and "2 looked clean" in edit_restore.format(report)
    always = edit_restore.run(Params(), in_dir=photos, out=tmp_path / "gated", restorer=restorer, detector=None,
                              limit=None, always=True)
    assert always["digest"] != report["digest"] and always["summary"]["resumed"] == 0  # other settings: redone
    assert all(r["notes"]["restorer"]["restore"] for r in always["photos"] if r["status"] == "edited")


def test_the_output_folder_may_not_lie_inside_the_sources_and_in_is_required(folder):
    photos, restorer = folder
    with pytest.raises(ParamsError, match="inside the photo folder"):
        edit_restore.run(Params(), in_dir=photos, out=photos / "restored", restorer=restorer, detector=None, limit=None)
    with pytest.raises(ParamsError, match="--in"):
        edit_restore.run(Params(), in_dir=None, out=photos.parent / "x", restorer=restorer, detector=None, limit=None)
    assert not (photos / "restored").exists()


def test_an_untrained_model_gives_back_the_same_pixels(folder, tmp_path):
    photos, _ = folder
    save_restorer(Restorer(width=8, depth=2), tmp_path / "identity", {"kind": "restorer", "width": 8, "depth": 2})
    report = edit_restore.run(Params(), in_dir=photos, out=tmp_path / "same", restorer=tmp_path / "identity", detector=None, limit=2)
    row = report["photos"][1]  # sorted: broken.jpg, then the first shirt
    assert row["change_db"] == 100.0
    with Image.open(photos / row["source"]) as source:
        assert np.array_equal(np.asarray(Image.open(tmp_path / "same" / row["file"])), np.asarray(source.convert("RGB")))


def test_watermarks_are_filled_first_when_asked_and_make_another_edit(tmp_path, clothing_dir):
    import cv2

    from productstudio.editing.defects import watermark

    photos = tmp_path / "own-photos"
    photos.mkdir()
    source = np.asarray(Image.open(sorted((clothing_dir / "test" / "t-shirt").glob("*.jpg"))[0]).convert("RGB"))
    marked, letters, _ = watermark(source, np.random.default_rng(3))
    Image.fromarray(marked).save(photos / "proof.png")
    identity = tmp_path / "identity"  # an untrained restorer gives its input back: only the watermark step acts
    save_restorer(Restorer(width=8, depth=2), identity, {"kind": "restorer", "width": 8, "depth": 2})
    plain = edit_restore.run(Params(), in_dir=photos, out=tmp_path / "plain", restorer=identity, detector=None,
                             limit=None)
    cleaned = edit_restore.run(Params(), in_dir=photos, out=tmp_path / "cleaned", restorer=identity, detector=None,
                               limit=None, watermarks=True)
    assert plain["photos"][0]["change_db"] == 100 and cleaned["digest"] != plain["digest"]
    assert "un-blended" in cleaned["settings"]["watermarks"]
    result = np.asarray(Image.open(tmp_path / "cleaned" / "proof.png").convert("RGB"))
    strong = cv2.erode(letters.astype(np.uint8), np.ones((2, 2), np.uint8)) > 0
    before = np.abs(marked.astype(int) - source.astype(int))[strong].mean()
    after = np.abs(result.astype(int) - source.astype(int))[strong].mean()
    assert after < 0.8 * before  # letters filled towards the photo under them


def test_a_learned_watermark_detector_is_used_when_given_and_must_have_learned_watermarks(tmp_path, clothing_dir,
                                                                                          monkeypatch):
    from productstudio.models.defect_detector import DefectDetector, save_detector

    photos = tmp_path / "own-photos"
    photos.mkdir()
    Image.open(sorted((clothing_dir / "test" / "t-shirt").glob("*.jpg"))[0]).convert("RGB").save(photos / "a.png")
    identity = tmp_path / "identity"
    save_restorer(Restorer(width=8, depth=2), identity, {"kind": "restorer", "width": 8, "depth": 2})
    torch.manual_seed(0)
    for defects in (["dust"], ["watermark"]):
        save_detector(DefectDetector(8), tmp_path / defects[0], {"width": 8, "threshold": 0.5, "grow": 0, "min_blob": 20,
                                                                  "defects": defects})
    with pytest.raises(ParamsError, match="learned dust, not watermarks"):
        edit_restore.run(Params(), in_dir=photos, out=tmp_path / "o1", restorer=identity, detector=None, limit=None,
                         watermark_detector=tmp_path / "dust")
    report = edit_restore.run(Params(), in_dir=photos, out=tmp_path / "o2", restorer=identity, detector=None,
                              limit=None, watermark_detector=tmp_path / "watermark")
    assert "learned detector" in report["settings"]["watermarks"] and "un-blended" in report["settings"]["watermarks"]
    assert report["photos"][0]["file"] == "a.png"
    # how the letters are read and un-blended is part of the edit: a resumed run must not mix the two
    for constant, value in (("LETTER_LAYER", 0.1), ("EDGE_CEILING", 2.0)):
        with monkeypatch.context() as patch:
            patch.setattr(f"productstudio.editing.watermark.{constant}", value)
            other = edit_restore.run(Params(), in_dir=photos, out=tmp_path / constant, restorer=identity, detector=None,
                                     limit=None, watermark_detector=tmp_path / "watermark")
        assert other["digest"] != report["digest"], constant
