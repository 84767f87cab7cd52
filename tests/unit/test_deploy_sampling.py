"""`deploy analyze` samples served images over the served model's own categories (not a fixed 10)."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace

import pytest
import torch

from productstudio.deploy.local_canary import sample_images, served_categories
from productstudio.errors import BadRequest
from productstudio.models.gan import GANConfig, Generator
from productstudio.models.io import save_generator
from productstudio.serving.tasks.generate import GenerateTask


def _model_dir(directory, num_classes: int):
    torch.manual_seed(0)
    generator = Generator(GANConfig(num_classes=num_classes, g_width=8, latent_dim=16))
    return save_generator(generator, directory, categories=[f"c{i}" for i in range(num_classes)])


class _Served:
    """A stand-in for TorchServe: the generate task behind plain HTTP, recording the categories asked for."""

    def __init__(self, model_dir):
        self.task = GenerateTask.load(model_dir, "tiny", "1")
        self.asked, self.statuses = [], []
        served = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                served.asked.append(json.loads(body)["category"])
                try:
                    request = served.task.parse(body, self.headers.get("Accept"))
                    _, answer = served.task.respond(request, served.task.run([request])[0])
                    status, data = 200, json.dumps(answer).encode()
                except BadRequest as error:
                    status, data = error.status, json.dumps({"message": error.message}).encode()
                served.statuses.append(status)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        port = self.server.server_address[1]
        return SimpleNamespace(predict_url=f"http://127.0.0.1:{port}/predictions/tiny", inference_key="k")

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize("num_classes", [3, 12])
def test_analyze_samples_every_category_of_the_served_model(tmp_path, num_classes):
    from productstudio.serving.archive import build_archive

    model_dir = _model_dir(tmp_path / "gen", num_classes)
    state = tmp_path / "stable"
    mar = build_archive(model_dir, state / "model-store", "tiny")
    (state / "server.json").write_text(json.dumps({"model": "tiny", "archive": str(mar)}))
    categories = served_categories(state)
    assert categories == num_classes

    served = _Served(model_dir)
    with served as handle:
        images = sample_images(handle, count=2 * num_classes * 2, categories=categories, per_request=2)
    assert images.shape == (4 * num_classes, 1, 28, 28) and images.dtype.name == "uint8"
    assert set(served.statuses) == {200}, "no request may ask for a category the model lacks"
    assert sorted(set(served.asked)) == list(range(num_classes)), "every category is sampled"


def test_served_categories_of_a_server_started_before_archives_were_recorded(tmp_path):
    from productstudio.serving.archive import build_archive

    state = tmp_path / "canary"
    build_archive(_model_dir(tmp_path / "gen", 3), state / "model-store", "tiny")
    (state / "server.json").write_text(json.dumps({"model": "tiny"}))  # no "archive": the one in the store
    assert served_categories(state) == 3
