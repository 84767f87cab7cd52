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
