"""Every kind of hostile image (issue 13) through the edit task's parser, the code a served upload meets first:
refused with a 4xx and a one-line reason before any pixel is decoded, or decoded to a plain RGB photo."""

from __future__ import annotations

import numpy as np
import pytest

from productstudio.errors import BadRequest
from productstudio.serving.tasks.edit import decode_photo
from tests.integration.hostile import REFUSED_ANSWERS, hostile_uploads

MAX_BYTES, MAX_PIXELS = 3_000_000, 40_000_000
# Pillow warns once per skipped EXIF tag (thousands here) and goes on: the warning is expected.
pytestmark = pytest.mark.filterwarnings("ignore:Tag data larger than file")

REFUSED = REFUSED_ANSWERS  # case -> (status, phrase of the reason)
DECODED = {  # case -> (height, width) of the upright RGB photo
    "20,000 x 1 strip": (1, 20_000),
    "EXIF IFD loop": (400, 533),  # its orientation tag (6) is still applied
    "EXIF with 4 GB tags": (533, 400),
    "16-bit grey PNG": (533, 400),
    "16-bit RGB PNG": (533, 400),
    "CMYK JPEG": (533, 400),
    "1x1 PNG": (1, 1),
}


@pytest.fixture(scope="module")
def uploads(clothing_dir):
    photo = sorted((clothing_dir / "test" / "t-shirt").glob("*.jpg"))[0].read_bytes()
    return photo, hostile_uploads(photo)


def test_every_case_is_listed(uploads):
    assert set(uploads[1]) == set(REFUSED) | set(DECODED)


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_refused_before_decoding(uploads, case):
    status, phrase = REFUSED[case]
    with pytest.raises(BadRequest) as refused:
        decode_photo(uploads[1][case][0], MAX_BYTES, MAX_PIXELS)
    assert refused.value.status == status and phrase in refused.value.message
    assert "\n" not in refused.value.message


@pytest.mark.parametrize("case", sorted(DECODED))
def test_decoded_as_a_plain_rgb_photo(uploads, case):
    photo = decode_photo(uploads[1][case][0], MAX_BYTES, MAX_PIXELS)
    assert photo.dtype == np.uint8 and photo.shape == (*DECODED[case], 3)
    if photo.shape[0] > 1 and "EXIF IFD" not in case:
        original = decode_photo(uploads[0], MAX_BYTES, MAX_PIXELS).astype(np.float64)
        if "grey" in case:
            original = original.mean(axis=2, keepdims=True)
        # 16-bit and CMYK are scaled, not clipped: the picture is the photo's (JPEG/CMYK rounding aside).
        assert np.abs(photo.astype(np.float64) - original).mean() < 6, case
