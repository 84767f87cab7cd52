"""One way to load any saved model: ``load(directory)`` reads its config.json, finds its kind and calls
that kind's loader.

    from productstudio.models.loader import load
    model, info = load("models/train/generator")      # a Generator; info["kind"] == "gan"
    model, info = load("models/quantized", threads=1)  # an OnnxGenerator, same (z, y) -> images contract

Kinds (``model_kind``): "u2netp-onnx" and "ppocr-det-onnx" (the pretrained editing nets that
``models.pretrained`` installs: a salient-object segmenter and a text detector), "gan" and "cvae" (safetensors; a CVAE's decoder generates, its encoder is saved
beside it: ``models.io.load_encoder``), and "int8-onnx" (the quantize step's directory: a generator's
config.json plus a ``quantization`` entry, which keeps the architecture's "kind"). Configs saved before
kinds were written are inferred: a named encoder means "cvae", else "gan".

A new kind (restorer, segmenter, stylizer, ...) is one loader function and one entry in ``LOADERS``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import torch

from productstudio.errors import DataError, MissingInput
from productstudio.imaging import resolve_device
from productstudio.models.io import CONFIG, load_generator
from productstudio.models.onnx_generator import load_quantized

INT8_ONNX = "int8-onnx"


def _torch_generator(directory: Path, device: torch.device, threads: int):
    return load_generator(directory, device)[0]


def _onnx_generator(directory: Path, device: torch.device, threads: int):
    return load_quantized(directory, threads=threads)  # runs on the CPU; answers on the input's device


def _salient_segmenter(directory: Path, device: torch.device, threads: int):
    from productstudio.models.salient import load_segmenter

    return load_segmenter(directory, threads=threads)  # ONNX Runtime on the CPU


def _text_detector(directory: Path, device: torch.device, threads: int):
    from productstudio.models.text_detector import load_text_detector

    return load_text_detector(directory, threads=threads)


# kind -> loader(directory, device, threads) -> a model with the kind's contract
LOADERS: dict[str, Callable[[Path, torch.device, int], object]] = {
    "gan": _torch_generator,
    "cvae": _torch_generator,
    INT8_ONNX: _onnx_generator,
    "u2netp-onnx": _salient_segmenter,  # pretrained, from a pinned wheel (models.pretrained)
    "ppocr-det-onnx": _text_detector,
}


def read_config(directory: str | Path) -> dict:
    """A saved model's config.json; ``MissingInput`` when the directory holds none."""
    path = Path(directory) / CONFIG
    if not path.is_file():
        raise MissingInput(f"{directory}: no {CONFIG}; not a saved model")
    return json.loads(path.read_text())


def model_kind(info: dict) -> str:
    """The loader kind of a saved model's config (see the module doc)."""
    if "quantization" in info:
        return INT8_ONNX
    return info.get("kind") or ("cvae" if info.get("encoder") else "gan")


def load(directory: str | Path, device: str | torch.device = "cpu", threads: int = 0,
         kind: str | None = None) -> tuple[object, dict]:
    """Load the model saved in ``directory`` in eval mode: (model, config dict). ``threads`` is for
    ONNX Runtime kinds (0: all cores); torch kinds use the process's torch threads. ``kind`` overrides
    the config's, for a caller that knows what the directory holds (a served archive names its variant)."""
    info = read_config(directory)
    kind = kind or model_kind(info)
    if kind not in LOADERS:
        raise DataError(f"{directory}: unknown model kind {kind!r} (known: {', '.join(LOADERS)})")
    return LOADERS[kind](Path(directory), resolve_device(device), threads), info
