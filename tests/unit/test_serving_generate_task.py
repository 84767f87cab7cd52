"""The inference API's request checks and image encoding, without TorchServe."""

import base64
import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

from productstudio.config import ServeSettings
from productstudio.models.gan import GANConfig, Generator
from productstudio.serving.tasks import generate as api

CATEGORIES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


def parse(body, accept=None):
    return api.parse_request(body, CATEGORIES, accept=accept, random_seed=lambda: 1000)


def test_good_request_by_name_and_id_with_defaults():
    request = parse({"category": "sneaker", "count": 3, "seed": 7, "format": "webp"})
    assert (request.category, request.seeds, request.format, request.raw) == (7, (7, 8, 9), "webp", False)
    assert parse({"category": 2}) == api.GenerateRequest(2, (1000,), "png", False)  # count 1, drawn seed, png
    assert parse(b'{"category": "Ankle boot", "format": "jpg"}').format == "jpeg"  # raw bytes are decoded


@pytest.mark.parametrize(
    "body, status, reason",
    [
        ({"category": "Hat"}, 400, 'unknown category "Hat"'),
        ({"category": 10}, 400, "category id 10 is out of range 0..9"),
        ({"category": True}, 400, "category must be a name or an id"),
        ({"category": 1, "count": 0}, 400, "count 0 is out of range 1..64"),
        ({"category": 1, "count": 1_000_000}, 400, "count 1000000 is out of range 1..64"),
        ({"category": 1, "count": "4"}, 400, "count must be an integer"),
        ({"category": 1, "count": 2.5}, 400, "count must be an integer"),
        ({"category": 1, "seed": -1}, 400, "seed must be an integer"),
        ({"category": 1, "seed": "x"}, 400, "seed must be an integer"),
        ({"category": 1, "format": "gif"}, 400, "format must be one of png, jpeg, webp"),
        ({"category": 1, "colour": "red"}, 400, "unknown field 'colour'"),
        ({"count": 2}, 400, "missing field 'category'"),
        (b"not json", 400, "the body is not JSON"),
        (b"\xff\xfe", 400, "the body is not JSON"),
        ([1, 2], 400, "expected a JSON object"),
        (None, 400, "expected a JSON object"),
    ],
)
def test_bad_requests_get_a_4xx_and_one_line(body, status, reason):
    with pytest.raises(api.BadRequest) as error:
        parse(body)
    assert error.value.status == status
    assert reason in error.value.message
    assert "\n" not in error.value.message


def test_accept_image_returns_one_raw_image():
    assert parse({"category": 1}, accept="image/png").raw
    request = parse({"category": 1, "format": "png"}, accept="image/webp, application/json")
    assert (request.raw, request.format) == (True, "webp")  # the Accept header decides the media type
    assert parse({"category": 1, "format": "jpeg"}, accept="image/*").format == "jpeg"
    assert not parse({"category": 1}, accept="application/json").raw
    with pytest.raises(api.BadRequest) as error:
        parse({"category": 1, "count": 2}, accept="image/png")
    assert error.value.status == 406


def test_an_image_depends_on_its_seed_not_its_batch():
    torch.manual_seed(0)
    model = Generator(GANConfig(g_width=8, latent_dim=16)).eval()
    alone = api.generate(model, [parse({"category": 3, "seed": 11})], 16)[0]
    together = api.generate(model, [parse({"category": 5, "count": 2, "seed": 40}),
                                    parse({"category": 3, "count": 2, "seed": 10})], 16)
    assert [t.shape for t in together] == [(2, 1, 28, 28), (2, 1, 28, 28)]
    assert torch.allclose(together[1][1], alone[0], atol=1e-5)
    assert not torch.allclose(together[1][0], alone[0])


@pytest.mark.parametrize("fmt, pil_format", [("png", "PNG"), ("jpeg", "JPEG"), ("webp", "WEBP")])
def test_encode_and_answer(fmt, pil_format):
    images = torch.linspace(-1, 1, 2 * 28 * 28).reshape(2, 1, 28, 28)
    files = api.encode(images, fmt)
    decoded = [Image.open(io.BytesIO(data)) for data in files]
    assert [(d.format, d.size) for d in decoded] == [(pil_format, (28, 28))] * 2
    if fmt != "jpeg":  # lossless (WebP stores grey as RGB): exact pixels, -1 -> 0 and 1 -> 255
        pixels = np.stack([np.asarray(d.convert("L")) for d in decoded])
        expected = ((images[:, 0] + 1) * 127.5).round().to(torch.uint8).numpy()
        assert np.array_equal(pixels, expected) and (pixels.min(), pixels.max()) == (0, 255)
    request = parse({"category": "Bag", "count": 2, "seed": 3, "format": fmt})
    body = json.loads(json.dumps(api.answer(request, files, CATEGORIES, "m", "4")))
    assert body["seeds"] == [3, 4] and body["category"] == {"id": 8, "name": "Bag"}
    assert (body["model"], body["version"], body["count"]) == ("m", "4", 2)
    assert base64.b64decode(body["images"][1]) == files[1]


def test_generated_config_binds_localhost_and_restricts_urls(tmp_path):
    from productstudio.serving.archive import build_archive
    from productstudio.serving.server import config_properties

    from productstudio.models.io import save_generator

    save_generator(Generator(GANConfig(g_width=8, latent_dim=16)), tmp_path / "gen", categories=CATEGORIES)
    mar = build_archive(tmp_path / "gen", tmp_path / "store", "tiny", version="3")
    text = config_properties(ServeSettings(batch_size=4, max_batch_delay_ms=15), tmp_path / "store", mar, "tiny")
    props = dict(line.split("=", 1) for line in text.splitlines())
    assert props["inference_address"] == "http://127.0.0.1:8085"
    assert props["management_address"].startswith("http://127.0.0.1:") and props["metrics_address"].startswith("http://127.0.0.1:")
    assert props["enable_model_api"] == "false" and props["max_request_size"] == "65536"
    assert props["token_expiration_min"] == "60"
    assert "disable_token_authorization" not in props
    assert props["allowed_urls"].startswith("file://") and "http" not in props["allowed_urls"]
    models = json.loads(props["models"])
    assert models["tiny"]["3"]["batchSize"] == 4 and models["tiny"]["3"]["maxBatchDelay"] == 15


def _tiny(directory):
    from productstudio.models.io import save_generator

    return save_generator(Generator(GANConfig(g_width=8, latent_dim=16)), directory, categories=CATEGORIES)


def test_archive_holds_handler_weights_and_config_only(tmp_path):
    import zipfile

    from productstudio.serving.archive import build_archive

    mar = build_archive(_tiny(tmp_path / "gen"), tmp_path / "store", "tiny")
    names = sorted(zipfile.ZipFile(mar).namelist())
    assert names == ["MAR-INF/MANIFEST.json", "config.json", "generator.safetensors", "handler.py", "serving.json"]
    manifest = json.loads(zipfile.ZipFile(mar).read("MAR-INF/MANIFEST.json"))
    assert "serializedFile" not in manifest["model"] and manifest["model"]["handler"] == "handler.py"
    with pytest.raises(FileNotFoundError, match="no generator.int8.onnx"):
        build_archive(tmp_path / "gen", tmp_path / "store", "tiny", variant="int8")


def test_archive_from_registry_takes_the_alias_version_and_variant(tmp_path, monkeypatch):
    import zipfile
    from types import SimpleNamespace

    from productstudio.registry import model_registry
    from productstudio.serving.archive import archive_from_registry

    asked = []
    monkeypatch.setattr(model_registry, "resolve", lambda uri: asked.append(uri) or SimpleNamespace(name="m", version=4, run_id="r1"))
    monkeypatch.setattr(model_registry, "download", lambda mv, dst: _tiny(tmp_path / "dl" / "artifacts" / "generator").parent.parent)
    mar = archive_from_registry("models:/m@champion", tmp_path / "store")
    assert asked == ["models:/m@champion"] and mar.name == "m.mar"
    archive = zipfile.ZipFile(mar)
    assert json.loads(archive.read("MAR-INF/MANIFEST.json"))["model"]["modelVersion"] == "4"
    meta = json.loads(archive.read("serving.json"))
    assert (meta["variant"], meta["registry_version"], meta["source"]) == ("fp32", "4", "models:/m@champion")
    with pytest.raises(FileNotFoundError, match="has no int8 variant"):
        archive_from_registry("models:/m@champion", tmp_path / "store", variant="int8")


class _Context:
    """What the handler uses of TorchServe's context, for one batch."""

    def __init__(self, model_dir, headers):
        self.system_properties = {"model_dir": str(model_dir)}
        self.model_name, self.manifest = "tiny", {"model": {"modelVersion": "2"}}
        self.headers, self.status, self.types = headers, {}, {}

    def get_all_request_header(self, idx):
        return self.headers[idx]

    def set_response_status(self, code, phrase, idx):
        self.status[idx] = (code, phrase)

    def set_response_content_type(self, idx, value):
        self.types[idx] = value


def test_handler_answers_each_request_of_a_batch_on_its_own(tmp_path):
    import zipfile

    from productstudio.serving.archive import build_archive
    from productstudio.serving.handler import TaskHandler

    zipfile.ZipFile(build_archive(_tiny(tmp_path / "gen"), tmp_path / "store", "tiny")).extractall(tmp_path / "model")
    rows = [{"body": b'{"category": "Bag", "count": 2, "seed": 1}'}, {"body": b'{"category": "Bag", "count": 65}'},
            {"body": {"category": 1}}, {"body": "just text"}, {"body": b'{"category": 0}'}, {"file": b"x"}]
    json_part = {"body": {"content-type": "application/json"}}
    headers = [{}, {}, json_part, {"body": {"content-type": "text/plain"}}, {"Accept": "image/png"}, {}]
    context = _Context(tmp_path / "model", headers)
    handler = TaskHandler()
    handler.initialize(context)
    out = handler.handle(rows, context)
    assert out[0]["seeds"] == [1, 2] and out[0]["version"] == "2" and out[2]["category"]["id"] == 1
    assert {idx: code for idx, (code, _) in context.status.items()} == {1: 400, 3: 400, 5: 400}
    assert "count 65" in context.status[1][1] and "not JSON" in context.status[3][1] and "JSON body" in context.status[5][1]
    assert out[4][:8] == b"\x89PNG\r\n\x1a\n" and context.types[4] == "image/png"
