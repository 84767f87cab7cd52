"""The text detector (PP-OCRv4 DBNet + our post-processing) finds drawn words and nothing on plain garments."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from productstudio.errors import DataError, MissingInput
from productstudio.models.pretrained import weights_dir
from productstudio.models.text_detector import load_text_detector, network_size

# Verified by eye and by the detector: no text on these garments (test split of clothing-dataset-small).
PLAIN = ["test/outwear/2edb1db6-cd17-41d2-88e0-ba34801b656d.jpg", "test/dress/50d248fe-de40-4bb6-9bff-3e8babecba31.jpg"]
FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf"


@pytest.fixture(scope="module")
def detector():
    try:
        return load_text_detector(weights_dir("ppocr-det"), threads=1)
    except MissingInput as error:
        pytest.fail(f"{error} (the tests need the installed weights)")


def font(size: int):
    try:
        return ImageFont.truetype(FONT, size)
    except OSError:
        return ImageFont.load_default(size)


@pytest.mark.parametrize("name", PLAIN)
def test_plain_garment_has_no_text_and_drawn_text_is_found_where_it_is(detector, clothing_dir, name):
    photo = Image.open(clothing_dir / name).convert("RGB")
    assert detector.detect(np.asarray(photo)) == []
    draw = ImageDraw.Draw(photo)
    where = (30, photo.height // 2)
    draw.text(where, "SALE 50% OFF", fill=(0, 0, 0), font=font(36))
    tx0, ty0, tx1, ty1 = draw.textbbox(where, "SALE 50% OFF", font=font(36))
    boxes = detector.detect(np.asarray(photo))
    assert len(boxes) == 1 and boxes[0].score >= 0.9
    box = boxes[0]
    overlap = max(0, min(box.x1, tx1) - max(box.x0, tx0)) * max(0, min(box.y1, ty1) - max(box.y0, ty0))
    union = (box.x1 - box.x0) * (box.y1 - box.y0) + (tx1 - tx0) * (ty1 - ty0) - overlap
    assert overlap / union > 0.7  # the box is the drawn line, in the photo's own pixels


def test_white_text_on_a_dark_image_is_found_and_a_blank_image_is_not(detector):
    blank = np.full((300, 500, 3), 40, np.uint8)
    assert detector.detect(blank) == []
    image = Image.fromarray(blank)
    ImageDraw.Draw(image).text((40, 120), "www.shop.com", fill=(255, 255, 255), font=font(40))
    assert len(detector.detect(np.asarray(image))) >= 1


def test_network_size_is_a_multiple_of_the_stride_near_the_limit():
    assert network_size(533, 400, 640) == (640, 480)
    assert network_size(4000, 6000, 640) == (416, 640)
    assert network_size(10, 10, 640) == (640, 640)
    assert network_size(5, 1000, 640) == (32, 640)


def test_input_must_be_rgb_uint8(detector):
    with pytest.raises(ValueError, match="uint8 RGB"):
        detector.detect(np.zeros((64, 64), np.uint8))


def test_loading_refuses_a_missing_or_foreign_model_directory(tmp_path):
    with pytest.raises(MissingInput):
        load_text_detector(tmp_path)
    (tmp_path / "model.onnx").write_bytes(b"")
    (tmp_path / "config.json").write_text(json.dumps({"kind": "u2netp-onnx"}))
    with pytest.raises(DataError, match="ppocr-det-onnx"):
        load_text_detector(tmp_path)
