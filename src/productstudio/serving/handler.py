"""TorchServe handler: a thin adapter over ``productstudio.serving.tasks.generate``.

The .mar holds this file, the weights (``generator.safetensors`` or ``generator.int8.onnx``), ``config.json``
and ``serving.json`` (variant and provenance, written by ``archive.py``). Weights are loaded with the
library's own loaders (safetensors / ONNX protobuf): nothing in the archive is unpickled. TorchServe runs
this file with the Python it was started with, where ``productstudio`` is installed.

Each request of a batch gets its own status: a bad one answers 4xx with a one-line reason (through
``context.set_response_status``) and the others in the same batch are still served.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from productstudio.serving.tasks import generate as api

log = logging.getLogger(__name__)


def _header(context, idx: int, name: str) -> str | None:
    for key, value in context.get_all_request_header(idx).items():
        if key.lower() == name and isinstance(value, str):
            return value
    return None


def _body(row: dict, context, idx: int):
    """The raw request body for ``api.decode_body``. The server sets TS_DECODE_INPUT_REQUEST=false so bodies
    arrive as bytes; should a worker decode JSON anyway, it is encoded back (a decoded JSON string would
    otherwise look like a text body)."""
    for key in ("body", "data"):
        if key in row:
            value = row[key]
            part = context.get_all_request_header(idx).get(key)
            decoded_json = isinstance(part, dict) and part.get("content-type") == "application/json"
            if decoded_json and not isinstance(value, (bytes, bytearray)):
                value = json.dumps(value)
            return value
    raise api.BadRequest('send the request as a JSON body, e.g. {"category": "Sneaker", "count": 4}')


class GeneratorHandler:
    def __init__(self):
        self.initialized = False

    def initialize(self, context) -> None:
        import torch

        model_dir = Path(context.system_properties["model_dir"])
        meta = json.loads((model_dir / "serving.json").read_text())
        threads = int(os.environ.get("PRODUCTSTUDIO_SERVE_THREADS", "1"))  # one worker per core by default
        torch.set_num_threads(threads)
        if meta["variant"] == "int8":
            from productstudio.quantization.quantize import load_quantized

            self.model = load_quantized(model_dir, threads=threads)
            info = self.model.info
        else:
            from productstudio.models.io import load_generator

            self.model, info = load_generator(model_dir, "cpu")
        self.latent_dim = int(info["model"]["latent_dim"])
        self.categories = list(info.get("categories") or [str(i) for i in range(info["model"]["num_classes"])])
        self.name = context.model_name
        self.version = str(meta.get("registry_version") or context.manifest["model"].get("modelVersion"))
        self.initialized = True
        log.info("loaded %s %s (%s, %d thread(s)) from %s", self.name, self.version, meta["variant"], threads, model_dir)

    def handle(self, data: list, context) -> list:
        responses: list = [None] * len(data)
        valid = []
        for idx, row in enumerate(data):
            try:
                request = api.parse_request(_body(row, context, idx), self.categories, accept=_header(context, idx, "accept"))
                valid.append((idx, request))
            except api.BadRequest as error:
                context.set_response_status(error.status, error.message, idx)
                context.set_response_content_type(idx, "application/json")
                responses[idx] = api.error_body(error)
        log.info("batch of %d request(s), %d valid", len(data), len(valid))
        images = api.generate(self.model, [request for _, request in valid], self.latent_dim)
        for (idx, request), batch in zip(valid, images):
            files = api.encode(batch, request.format)
            if request.raw:
                context.set_response_content_type(idx, api.FORMATS[request.format])
                responses[idx] = files[0]
            else:
                context.set_response_content_type(idx, "application/json")
                responses[idx] = api.answer(request, files, self.categories, self.name, self.version)
        return responses
