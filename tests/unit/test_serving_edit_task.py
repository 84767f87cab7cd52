"""The served edit task's request checks, free of TorchServe: presets, uploads (hostile ones too), answer kinds."""

import io

import numpy as np
import pytest
from PIL import Image

from productstudio.config import load_params
from productstudio.errors import BadRequest
from productstudio.serving.tasks.edit import decode_photo, parse_presets, wanted_answer, zip_exports
from tests.conftest import REPO_ROOT
from tests.integration.hostile import png_bytes

SETTINGS = load_params(REPO_ROOT / "params.yaml").edit


def _jpeg(width=64, height=48) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(buffer, format="JPEG")
    return buffer.getvalue()


def test_presets_come_from_the_query_or_a_header_else_the_defaults():
    known = SETTINGS.preset_table
    assert parse_presets({"preset": b"amazon-main,instagram-4x5"}, known, ["x"]) == ("amazon-main", "instagram-4x5")
    assert parse_presets({"x-preset": "transparent-png"}, known, ["x"]) == ("transparent-png",)
    assert parse_presets({}, known, SETTINGS.presets) == tuple(SETTINGS.presets)


@pytest.mark.parametrize("options,phrase", [
    ({"preset": "amazon-main,<script>"}, "unknown preset"),
    ({"preset": "amazon-main,amazon-main"}, "named twice"),
    ({"preset": " , "}, "name a preset"),
])
def test_bad_presets_are_a_400_with_the_reason(options, phrase):
    with pytest.raises(BadRequest) as caught:
        parse_presets(options, SETTINGS.preset_table, SETTINGS.presets)
    assert caught.value.status == 400 and phrase in caught.value.message


def test_a_good_upload_decodes_to_upright_rgb():
    photo = decode_photo(_jpeg(64, 48), max_bytes=10_000, max_pixels=10_000)
    assert photo.shape == (48, 64, 3) and photo.dtype == np.uint8


@pytest.mark.parametrize("body,status,phrase", [
    (b"", 400, "empty"),
    ("a text body", 400, "send the photo's bytes"),
    (b"GIF89a not really", 400, "not an image"),
    (_jpeg()[:200], 400, "runcated"),
    (png_bytes(100_000, 100_000), 413, "decompression bomb"),
    (b"\xff" * 20_000, 413, "limit"),
])
def test_hostile_uploads_are_refused_before_decoding_with_a_4xx(body, status, phrase):
    with pytest.raises(BadRequest) as caught:
        decode_photo(body, max_bytes=10_000, max_pixels=1_000_000)
    assert caught.value.status == status and phrase in caught.value.message, caught.value.message


def test_the_pixel_limit_is_checked_from_the_header():
    with pytest.raises(BadRequest) as caught:
        decode_photo(_jpeg(200, 100), max_bytes=10_000, max_pixels=200 * 100 - 1)
    assert caught.value.status == 413 and "200x100" in caught.value.message


def test_answer_kind_follows_accept_and_the_number_of_presets():
    assert wanted_answer(None, ("amazon-main",)) == "image"
    assert wanted_answer("image/*", ("amazon-main", "instagram-4x5")) == "zip"
    assert wanted_answer("application/json", ("amazon-main",)) == "json"
    assert wanted_answer("application/zip; q=1", ("amazon-main",)) == "zip"


def test_zip_holds_one_file_per_export_and_the_report():
    import json
    import zipfile
    from types import SimpleNamespace

    exports = [SimpleNamespace(preset="amazon-main", data=b"jpeg-bytes")]
    data = zip_exports(exports, {"exports": []}, {"amazon-main": "jpg"})
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert sorted(archive.namelist()) == ["amazon-main.jpg", "report.json"]
        assert archive.read("amazon-main.jpg") == b"jpeg-bytes"
        assert json.loads(archive.read("report.json")) == {"exports": []}


def test_operations_an_archive_does_not_hold_are_a_400_that_says_how_to_add_them():
    from productstudio.editing.studio import StudioEditor
    from productstudio.serving.tasks.edit import EditTask

    task = EditTask(StudioEditor.load(SETTINGS, threads=1), "studio-edit", "1.0")  # no look, no style archived
    assert task.parse_operation({}) == ("studio", tuple(SETTINGS.enhance.operations))
    assert task.parse_operation({"x-operation": "Enhance", "x-operations": "exposure, sharpen"}) == \
        ("enhance", ("exposure", "sharpen"))
    assert task.parse_operation({"operation": "watermark-removal"})[0] == "watermark-removal"  # every archive: OCR inside
    for operation, phrase in (("look", "package --task edit --look"), ("paint", "--style-image"),
                              ("restore", "package --task edit --restorer"),
                              ("vintage", "unknown operation")):
        with pytest.raises(BadRequest) as caught:
            task.parse_operation({"operation": operation})
        assert caught.value.status == 400 and phrase in caught.value.message
    request = task.parse(_jpeg(), "application/json", {"x-operation": "enhance"})
    assert (request.operation, request.presets, request.answer) == ("enhance", (), "json")


def test_an_edit_archive_with_a_learned_watermark_detector_removes_watermarks_with_it(tmp_path, clothing_dir):
    """'package --task edit --watermark-detector DIR': the archive holds the detector in its own folder, says so, and
    operation 'watermark-removal' gives what 'edit restore --watermark-detector' gives; a dust detector is refused."""
    import hashlib
    import json
    import zipfile

    import torch

    from productstudio.config import Params
    from productstudio.editing.restoration_eval import damage, load_crops
    from productstudio.editing.watermark import remove_watermark_learned
    from productstudio.errors import ParamsError
    from productstudio.models.defect_detector import DefectDetector, save_detector
    from productstudio.serving.tasks.edit import EditTask, archive_offer
    from productstudio.steps import package

    torch.manual_seed(0)
    detector = DefectDetector(width=8)
    torch.nn.init.normal_(detector.tail.weight, std=3.0)  # a detector that marks part of these photos
    torch.nn.init.zeros_(detector.tail.bias)
    for defects in (["watermark"], ["dust"]):
        save_detector(detector, tmp_path / defects[0], {"width": 8, "threshold": 0.5, "grow": 0, "min_blob": 1,
                                                        "defects": defects})
    params = Params()
    common = dict(alias=None, variant=None, generator=None, int8=None, name=None, store=tmp_path / "store")
    with pytest.raises(ParamsError, match="learned dust, not watermarks"):
        package.run(params, "edit", watermark_detector=tmp_path / "dust", **common)
    with pytest.raises(ParamsError, match="use --task edit"):
        package.run(params, "restore", watermark_detector=tmp_path / "watermark", **common)
    plain = package.run(params, "edit", **common)
    assert plain["watermark_removal"] == archive_offer(plain["mar"])["watermark_removal"] == "OCR text boxes"

    result = package.run(params, "edit", watermark_detector=tmp_path / "watermark", **common)
    assert result["watermark_removal"] == "learned detector" and "watermark-removal by learned detector" in package.format(result)
    with zipfile.ZipFile(result["mar"]) as archive:
        archive.extractall(tmp_path / "unpacked")
    meta = json.loads((tmp_path / "unpacked" / "serving.json").read_text())
    assert meta["watermark_detector_sha256"] == hashlib.sha256((tmp_path / "watermark" / "detector.safetensors").read_bytes()).hexdigest()
    assert not (tmp_path / "unpacked" / "detector.safetensors").exists()  # its own folder: no clash with dust's
    task = EditTask.load(tmp_path / "unpacked", "studio-edit", "1.0", threads=1)
    _, clean = load_crops(clothing_dir, ("test",), 96, 2)
    for photo in damage(clean, "watermark", 0)[0]:
        served = task.apply(task.parse(_png(photo), None, {"operation": "watermark-removal"}))
        expected = remove_watermark_learned(photo, detector, params.edit.dust_fill_radius, 1)
        assert not np.array_equal(expected, photo)  # the detector marked something: the test can fail
        assert np.array_equal(served, expected)


def _png(photo: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(photo).save(buffer, format="PNG")
    return buffer.getvalue()
