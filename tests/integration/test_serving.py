"""Real TorchServe serving a tiny generator: good requests, every kind of bad request, auth, batching, stop."""

import base64
import io
import json
import re
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone

import pytest
from PIL import Image

from productstudio.serving.server import free_ports as _free_ports
from productstudio.config import ServeSettings
from productstudio.models.io import save_generator
from productstudio.models.gan import GANConfig, Generator
from productstudio.serving import server
from productstudio.serving.archive import build_archive
from productstudio.cli import main
from productstudio.editing.provenance import read_provenance

pytestmark = pytest.mark.slow
CATEGORIES = [f"item{i}" for i in range(10)]



def _settings(**overrides) -> ServeSettings:
    """Free ports for every listener (gRPC included: TorchServe always opens it), so tests run beside other servers."""
    names = ("inference_port", "management_port", "metrics_port", "grpc_inference_port", "grpc_management_port")
    return ServeSettings(**dict(zip(names, _free_ports(len(names)))), **overrides)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve")
    save_generator(Generator(GANConfig(g_width=8, latent_dim=16)), root / "gen", categories=CATEGORIES)
    mar = build_archive(root / "gen", root / "store", "tiny", version="7")
    # A long batch delay so that concurrent requests share a batch.
    settings = _settings(batch_size=8, max_batch_delay_ms=300, max_request_size=4096, token_expiration_min=7)
    handle = server.start(settings, mar, root / "state", wait_s=180)  # slow when the 2 cores are busy
    yield handle
    server.stop(root / "state")


def post(handle, body, headers=None, key=True):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"Content-Type": "application/json", **(headers or {})}
    if key:
        headers["Authorization"] = f"Bearer {handle.inference_key}"
    request = urllib.request.Request(handle.predict_url, data=data, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.headers.get("Content-Type"), response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers.get("Content-Type"), error.read()


def assert_good(handle, count=2, seed=5):
    status, _, body = post(handle, {"category": "item3", "count": count, "seed": seed})
    assert status == 200, body
    answer = json.loads(body)
    assert answer["seeds"] == list(range(seed, seed + count))
    assert (answer["model"], answer["version"], answer["category"]) == ("tiny", "7", {"id": 3, "name": "item3"})
    images = [Image.open(io.BytesIO(base64.b64decode(data))) for data in answer["images"]]
    assert [(i.format, i.size) for i in images] == [("PNG", (28, 28))] * count
    return answer


def pixels(encoded):
    """The decoded pixels: the PNG's bytes also hold the XMP creation time, which differs per call."""
    return Image.open(io.BytesIO(base64.b64decode(encoded))).tobytes()


def test_good_request_returns_count_pngs_with_seeds(served):
    first = assert_good(served, count=3, seed=11)
    again = assert_good(served, count=3, seed=11)
    assert [pixels(i) for i in first["images"]] == [pixels(i) for i in again["images"]]  # a seed makes the same image
    assert len({pixels(i) for i in first["images"]}) == 3  # and different seeds different images
    status, _, body = post(served, {"category": 3, "count": 1, "seed": 12})
    assert status == 200 and pixels(json.loads(body)["images"][0]) == pixels(first["images"][1])  # image i is seed + i


def test_accept_png_returns_the_image_itself(served):
    status, content_type, body = post(served, {"category": "item1", "seed": 1}, {"Accept": "image/png"})
    assert (status, content_type) == (200, "image/png")
    image = Image.open(io.BytesIO(body))
    assert (image.format, image.size) == ("PNG", (28, 28))
    provenance = read_provenance(body)  # a generated image says so, and which model made it
    assert provenance["digital_source_type"].endswith("/trainedAlgorithmicMedia")
    assert (provenance["model_name"], provenance["model_version"]) == ("tiny", "7")
    assert provenance["extra"] == {"category": "item1", "seed": "1"}


BAD = [
    ({"category": "hat"}, {}, 400, 'unknown category "hat"'),
    ({"category": 1, "count": 0}, {}, 400, "count 0 is out of range 1..64"),
    ({"category": 1, "count": 1_000_000}, {}, 400, "count 1000000 is out of range 1..64"),
    ({"category": 1, "count": "two"}, {}, 400, "count must be an integer"),
    ({"category": [1]}, {}, 400, "category must be a name or an id"),
    ({"category": 1, "format": "bmp"}, {}, 400, "format must be one of png, jpeg, webp"),
    (b"{not json", {}, 400, "the body is not JSON"),
    (b"category=1", {"Content-Type": "text/plain"}, 400, "the body is not JSON"),
    (b'"just a string"', {}, 400, "expected a JSON object"),
    ({"category": 1, "count": 2}, {"Accept": "image/png"}, 406, "returns one image"),
]


@pytest.mark.parametrize("body, headers, status, reason", BAD, ids=[b[3][:24] for b in BAD])
def test_bad_request_gets_4xx_with_reason_and_server_keeps_serving(served, body, headers, status, reason):
    got, _, answer = post(served, body, headers)
    assert got == status, answer
    message = json.loads(answer)["message"]
    assert reason in message and "\n" not in message
    assert_good(served)


def test_oversized_body_gets_413(served):
    # The frontend refuses on Content-Length alone (the helper asks first, so the answer is read, not a reset).
    from tests.integration.photo_client import status_of_an_oversized_post

    assert status_of_an_oversized_post(served, 10_000) == 413
    assert_good(served)


def test_an_image_body_is_not_a_generate_request(served, clothing_dir):
    """The generate endpoint takes JSON only: a hostile image (issue 13) is never decoded, it is "not JSON" (400),
    or over max_request_size (413, from the frontend)."""
    from tests.integration.hostile import hostile_uploads

    photo = sorted((clothing_dir / "test" / "t-shirt").glob("*.jpg"))[0].read_bytes()
    small = {case: upload for case, upload in hostile_uploads(photo).items() if len(upload[0]) < 4096}
    assert len(small) >= 5  # the bombs, the PDF, the text, the 1x1 and the strip
    for case, (body, content_type) in small.items():
        got, _, answer = post(served, body, {"Content-Type": content_type})
        assert got == 400 and "the body is not JSON" in json.loads(answer)["message"], (case, got, answer[:200])
    assert_good(served)


def test_no_token_is_refused(served):
    got, _, answer = post(served, {"category": 1}, key=False)
    # TorchServe 0.12 answers a missing or wrong token with 400 (InvalidKeyException), not 401.
    assert got == 400 and "Token Authorization failed" in json.loads(answer)["message"]
    got, _, _ = post(served, {"category": 1}, {"Authorization": "Bearer wrong"}, key=False)
    assert got == 400
    expires = json.loads(served.key_file.read_text())["inference"]["expiration time"]
    # Measured from when TorchServe wrote the key (not from now: earlier tests on a busy machine take minutes).
    written = datetime.fromtimestamp(served.key_file.stat().st_mtime, timezone.utc)
    lifetime = datetime.fromisoformat(expires[:19]).replace(tzinfo=timezone.utc) - written
    assert timedelta(minutes=6) < lifetime <= timedelta(minutes=7)  # serve.token_expiration_min reached TorchServe
    assert_good(served)


def test_model_registration_over_the_management_api_is_off(served):
    request = urllib.request.Request(f"{served.management_url}/models?url=tiny.mar&model_name=again", method="POST",
                                     headers={"Authorization": f"Bearer {served.keys()['management']}"})
    with pytest.raises(urllib.error.HTTPError) as error:
        urllib.request.urlopen(request, timeout=30)
    assert error.value.code == 405  # "model API disabled"


def test_bad_request_in_a_batch_does_not_fail_the_others(served):
    bodies = [{"category": 2, "seed": 100 + i} if i % 2 == 0 else {"category": "nope"} for i in range(6)]
    with ThreadPoolExecutor(len(bodies)) as pool:
        results = list(pool.map(lambda body: post(served, body), bodies))
    assert [status for status, _, _ in results] == [200, 400] * 3
    batches = re.findall(r"batch of (\d+) request\(s\), (\d+) valid", (served.state_dir / "logs" / "model_log.log").read_text())
    assert any(int(size) > int(valid) > 0 for size, valid in batches)  # good and bad requests did share a batch
    for body, (status, _, answer) in zip(bodies, results):
        if status == 200:
            assert json.loads(answer)["seeds"] == [body["seed"]]


def test_renewed_keys_replace_the_old_ones(served, capsys):
    old = served.keys()
    assert main(["serve", "renew-keys", "--state", str(served.state_dir)]) == 0
    assert "new inference and management keys" in capsys.readouterr().out
    new = served.keys()
    assert new["inference"] != old["inference"] and new["management"] != old["management"] and new["API"] == old["API"]
    assert post(served, {"category": 1}, {"Authorization": f"Bearer {old['inference']}"}, key=False)[0] == 400
    assert_good(served)  # with the new key (post reads the key file)
    assert server.model_ready(served)  # the new management key works too


def test_stop_leaves_no_process(served):
    import psutil

    pid = server._pid(served.state_dir)
    family = [pid] + [child.pid for child in psutil.Process(pid).children(recursive=True)]
    assert len(family) >= 2  # the frontend and at least one worker
    assert server.stop(served.state_dir)
    assert not any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE for p in family)
    assert server.status(served.state_dir)["running"] is False
    assert not served.key_file.exists()


def test_int8_archive_serves_through_torchserve(tmp_path):
    """The int8 variant: an ONNX QDQ archive loaded with load_quantized in the worker."""
    from productstudio.config import QuantizeSettings
    from productstudio.quantization.quantize import INT8_FILE
    from productstudio.quantization.int8 import quantize_onnx
    from productstudio.quantization.onnx_model import export_onnx

    generator = Generator(GANConfig(g_width=8, latent_dim=16)).eval()
    save_generator(generator, tmp_path / "int8", categories=CATEGORIES)
    export_onnx(generator, tmp_path / "fp32.onnx")  # about 17 s on 2 cores
    quantize_onnx(tmp_path / "fp32.onnx", tmp_path / "int8" / INT8_FILE, generator.config, QuantizeSettings(calibration_samples=16))
    mar = build_archive(tmp_path / "int8", tmp_path / "store", "tiny8", variant="int8")
    handle = server.start(_settings(), mar, tmp_path / "state", wait_s=180)
    try:
        assert "(int8," in (handle.state_dir / "logs" / "model_log.log").read_text()
        status, content_type, body = post(handle, {"category": 4, "seed": 3}, {"Accept": "image/png"})
        assert (status, content_type) == (200, "image/png")
        assert Image.open(io.BytesIO(body)).size == (28, 28)
        status, _, body = post(handle, {"category": 4, "count": 0})
        assert status == 400
    finally:
        assert server.stop(tmp_path / "state")


def test_package_from_a_registry_alias(tmp_path, monkeypatch, capsys):
    """productstudio package --alias: the registered version's own weights, versioned as in the registry."""
    import zipfile

    import yaml

    from productstudio.cli import main
    from productstudio.registry.model_registry import client

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.chdir(tmp_path)
    save_generator(Generator(GANConfig(g_width=8, latent_dim=16)), tmp_path / "gen", categories=CATEGORIES)
    (tmp_path / "processed").mkdir()
    (tmp_path / "processed" / "manifest.json").write_text(json.dumps({"kind": "processed-dataset"}))  # data.version hashes its content fields
    (tmp_path / "evaluation").mkdir()
    (tmp_path / "evaluation" / "metrics.json").write_text(json.dumps({"fid30_test": 400.0}))
    (tmp_path / "evaluation" / "evaluation.json").write_text(json.dumps({"metrics": []}))
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"register": {"model_name": "pkg-test"}}))
    params = ["--params", str(tmp_path / "params.yaml")]
    assert main(["register", *params, "--generator", str(tmp_path / "gen"), "--evaluation", str(tmp_path / "evaluation"),
                 "--processed", str(tmp_path / "processed")]) == 0
    assert main(["package", *params, "--alias", "challenger", "--store", str(tmp_path / "store")]) == 0
    archive = zipfile.ZipFile(tmp_path / "store" / "pkg-test.mar")
    assert json.loads(archive.read("MAR-INF/MANIFEST.json"))["model"]["modelVersion"] == "1"
    assert archive.read("generator.safetensors") == (tmp_path / "gen" / "generator.safetensors").read_bytes()
    assert json.loads(archive.read("serving.json"))["registry_uri"] == "models:/pkg-test@challenger"
    capsys.readouterr()
    # No champion yet, and no int8 variant registered: one-line errors, exit 2.
    assert main(["package", *params, "--store", str(tmp_path / "store")]) == 2
    assert "no version has the alias 'champion'" in capsys.readouterr().err
    client().set_registered_model_alias("pkg-test", "champion", "1")
    assert main(["package", *params, "--variant", "int8", "--store", str(tmp_path / "store")]) == 2
    assert "has no int8 variant" in capsys.readouterr().err
    # Version 2 with an int8 variant logged from a folder named like the pipeline's (models/quantized): MLflow
    # names the artifact folder after it, so the archive must follow the MLmodel's map, not the key.
    quantized = tmp_path / "quantized"
    quantized.mkdir()
    (quantized / "generator.int8.onnx").write_bytes(b"stand-in ONNX bytes")  # only packaged here, never run
    (quantized / "config.json").write_text((tmp_path / "gen" / "config.json").read_text())
    assert main(["register", *params, "--generator", str(tmp_path / "gen"), "--evaluation", str(tmp_path / "evaluation"),
                 "--processed", str(tmp_path / "processed"), "--int8", str(quantized)]) == 0
    assert main(["package", *params, "--alias", "challenger", "--variant", "int8", "--store", str(tmp_path / "store")]) == 0
    archive = zipfile.ZipFile(tmp_path / "store" / "pkg-test.mar")
    assert json.loads(archive.read("MAR-INF/MANIFEST.json"))["model"]["modelVersion"] == "2"
    assert archive.read("generator.int8.onnx") == b"stand-in ONNX bytes"
    assert json.loads(archive.read("serving.json"))["variant"] == "int8"
