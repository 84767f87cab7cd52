"""Real TorchServe serving the restore task: a photo in, the same-size PNG out with provenance, the model's own
pixels; hostile uploads answered with a 4xx while the server keeps serving."""

import base64
import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

from productstudio.config import RestoreGateSettings
from productstudio.editing.provenance import read_provenance
from productstudio.models.restorer import Restorer, restore, save_restorer
from productstudio.serving import server
from productstudio.serving.archive import archive_task, build_archive
from tests.integration.hostile import png_bytes
from tests.integration.photo_client import post_photo, start_served

pytestmark = pytest.mark.slow
MAX_UPLOAD = 3_000_000


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    torch.manual_seed(0)
    model = Restorer(width=8, depth=2)
    torch.nn.init.normal_(model.tail.weight, std=0.02)  # a model that visibly changes the photo
    directory = tmp_path_factory.mktemp("restorer")
    save_restorer(model, directory, {"kind": "restorer", "width": 8, "depth": 2})
    return directory


@pytest.fixture(scope="module")
def served(tmp_path_factory, model_dir):
    root = tmp_path_factory.mktemp("serve-restore")
    mar = build_archive(model_dir, root / "store", "studio-restore", task="restore",
                        provenance={"max_upload_bytes": MAX_UPLOAD, "max_pixels": 40_000_000,
                                    "restore_gate": RestoreGateSettings().model_dump()})
    assert archive_task(mar) == "restore"
    yield start_served(mar, root / "state", MAX_UPLOAD + 1024)
    server.stop(root / "state")


def post(handle, body: bytes, accept: str = ""):
    return post_photo(handle, body, {"Accept": accept} if accept else None)


def _photo(clothing_dir, index=0) -> bytes:
    return sorted((clothing_dir / "test" / "t-shirt").glob("*.jpg"))[index].read_bytes()


def _noisy_png(clothing_dir) -> bytes:
    pixels = np.asarray(Image.open(io.BytesIO(_photo(clothing_dir))).convert("RGB")).astype(float)
    noisy = np.clip(pixels + np.random.default_rng(0).normal(0, 15, pixels.shape), 0, 255).round().astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noisy).save(buffer, format="PNG")
    return buffer.getvalue()


def test_a_photo_comes_back_restored_at_its_size_with_provenance(served, model_dir, clothing_dir):
    from productstudio.models.restorer import load_restorer

    body = _noisy_png(clothing_dir)  # noisy: the archived gate sends it to the restorer
    status, content_type, answer = post(served, body)
    assert (status, content_type) == (200, "image/png"), answer[:300]
    source = np.asarray(Image.open(io.BytesIO(body)).convert("RGB"))
    served_pixels = np.asarray(Image.open(io.BytesIO(answer)))
    assert served_pixels.shape == source.shape and not np.array_equal(served_pixels, source)
    assert np.array_equal(served_pixels, restore(load_restorer(model_dir), source))  # the library's own answer
    provenance = read_provenance(answer)
    assert "compositeWithTrainedAlgorithmicMedia" in json.dumps(provenance)
    assert provenance["model_name"] == "product-studio-restorer"
    status, content_type, answer = post(served, body, accept="application/json")
    assert (status, content_type) == (200, "application/json")
    report = json.loads(answer)
    assert 20 < report["change_db"] < 100 and base64.b64decode(report["image"])[:8] == b"\x89PNG\r\n\x1a\n"
    assert report["restorer"]["restore"] and report["restorer"]["noise_sigma"] > 8


def test_a_clean_photo_comes_back_unchanged_and_the_answer_says_why(served, clothing_dir):
    body = _photo(clothing_dir)  # a catalogue JPEG of quality 70, no noise: the gate leaves it alone
    status, content_type, answer = post(served, body, accept="application/json")
    assert (status, content_type) == (200, "application/json"), answer[:300]
    report = json.loads(answer)
    assert report["change_db"] == 100.0 and not report["restorer"]["restore"]
    assert report["restorer"]["reason"].startswith("clean")
    source = np.asarray(Image.open(io.BytesIO(body)).convert("RGB"))
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(base64.b64decode(report["image"])))), source)


@pytest.mark.parametrize("body,status,phrase", [
    (b"", 400, "empty"),
    (b"not an image at all", 400, "not an image"),
    (png_bytes(100_000, 100_000), 413, "decompression bomb"),
    (b"\xff\xd8\xff" + b"\0" * 64, 400, ""),
])
def test_hostile_uploads_get_a_4xx_and_the_server_keeps_serving(served, clothing_dir, body, status, phrase):
    got, _, answer = post(served, body)
    assert got == status and phrase in answer.decode(errors="replace"), answer[:300]
    assert post(served, _photo(clothing_dir, index=1))[0] == 200
