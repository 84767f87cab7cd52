"""TorchServe handler: one generic adapter for every served task (``serving/tasks/``).

The .mar holds this file, the task's files (for ``generate``: the weights, ``generator.safetensors`` or
``generator.int8.onnx``, and ``config.json``) and ``serving.json`` (task, variant and provenance, written by
``archive.py``). The task loads its model with the library's own loader (safetensors / ONNX protobuf):
nothing in the archive is unpickled. TorchServe runs this file with the Python it was started with, where
``productstudio`` is installed.

Each request of a batch gets its own status: a bad one answers 4xx with a one-line reason (through
``context.set_response_status``) and the others in the same batch are still served.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from productstudio.errors import BadRequest
from productstudio.serving.tasks.registry import DEFAULT_TASK, task_class

log = logging.getLogger(__name__)


def _header(context, idx: int, name: str) -> str | None:
    for key, value in context.get_all_request_header(idx).items():
        if key.lower() == name and isinstance(value, str):
            return value
    return None


def _body(row: dict, context, idx: int):
    """The raw request body, for the task's parser. The server sets TS_DECODE_INPUT_REQUEST=false so bodies
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
    raise BadRequest('send the request as a JSON body, e.g. {"category": "Sneaker", "count": 4}')


def _options(row: dict, context, idx: int) -> dict:
    """Form fields (a multipart upload's parts beside the file) and X- headers. TorchServe 0.12 does not hand
    the query string of a POST to the worker, so options travel as headers or form fields."""
    options = {key.lower(): value for key, value in row.items() if key not in ("body", "data")}
    for key, value in context.get_all_request_header(idx).items():
        if key.lower().startswith("x-") and isinstance(value, str):
            options.setdefault(key.lower(), value)
    return options


def _reject(context, idx: int, error: BadRequest) -> dict:
    context.set_response_status(error.status, error.message, idx)
    context.set_response_content_type(idx, "application/json")
    return error_body(error)


def error_body(error: BadRequest) -> dict:
    return {"code": error.status, "type": "BadRequest", "message": error.message}


class TaskHandler:
    def __init__(self):
        self.initialized = False

    def initialize(self, context) -> None:
        import torch

        model_dir = Path(context.system_properties["model_dir"])
        meta = json.loads((model_dir / "serving.json").read_text())
        threads = int(os.environ.get("PRODUCTSTUDIO_SERVE_THREADS", "1"))  # one worker per core by default
        torch.set_num_threads(threads)
        version = str(meta.get("registry_version") or context.manifest["model"].get("modelVersion"))
        self.task = task_class(meta.get("task", DEFAULT_TASK)).load(model_dir, context.model_name, version,
                                                                    variant=meta["variant"], threads=threads)
        self.initialized = True
        log.info("loaded %s %s (%s, %d thread(s), task %s) from %s", context.model_name, version, meta["variant"],
                 threads, self.task.name, model_dir)

    def handle(self, data: list, context) -> list:
        responses: list = [None] * len(data)
        valid = []
        for idx, row in enumerate(data):
            try:
                valid.append((idx, self.task.parse(_body(row, context, idx), _header(context, idx, "accept"),
                                                   _options(row, context, idx))))
            except BadRequest as error:
                responses[idx] = _reject(context, idx, error)
        log.info("batch of %d request(s), %d valid", len(data), len(valid))
        outputs = self.task.run([request for _, request in valid])
        for (idx, request), output in zip(valid, outputs):
            try:  # a task may refuse a well-formed request once it has run (edit: a bad cut-out is a 422)
                media_type, responses[idx] = self.task.respond(request, output)
            except BadRequest as error:
                responses[idx] = _reject(context, idx, error)
                continue
            context.set_response_content_type(idx, media_type)
        return responses
