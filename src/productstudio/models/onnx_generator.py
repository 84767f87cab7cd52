"""A generator saved as an ONNX graph (the int8 model of the quantize step), run with ONNX Runtime behind
``Generator.forward``'s contract. Loading lives here, below quantization, so that every layer that loads
models (serving, registry, promotion, metrics) can load this kind too; writing it is quantization's job.

ONNX files are protobuf: loading one runs no pickle.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from productstudio.errors import MissingInput
from productstudio.models.gan import GANConfig
from productstudio.models.io import CONFIG
from productstudio.models.onnx_session import cpu_session

INT8_FILE = "generator.int8.onnx"


def make_session(path: str | Path, threads: int = 0):
    """An ONNX Runtime CPU session (``models.onnx_session``): not spinning matters here too, where torch shares
    the process and its cores in the benchmark."""
    return cpu_session(path, threads)


class OnnxGenerator:
    """An exported (fp32 or int8) generator with ``Generator.forward``'s contract:
    latents (N, latent_dim) and categories (N,) -> float images (N, C, H, W) in [-1, 1].

    Runs on the CPU with ONNX Runtime; tensors given on another device come back on that device.
    ``config`` is the generator's ``GANConfig`` and ``info`` the full config.json (categories, ...), so
    code written for a ``Generator`` (``models.sampling.generated_batches``, serving) takes it as is.
    """

    def __init__(self, path: str | Path, info: dict, threads: int = 0):
        self.path = Path(path)
        self.info = info
        self.config = GANConfig(**info["model"])
        self.session = make_session(self.path, threads)

    def __call__(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        device = z.device if isinstance(z, torch.Tensor) else torch.device("cpu")
        z_np = torch.as_tensor(z).detach().to("cpu", torch.float32).numpy()
        y_np = torch.as_tensor(y).detach().to("cpu", torch.int64).numpy()
        if z_np.ndim != 2 or z_np.shape[1] != self.config.latent_dim or y_np.shape != (z_np.shape[0],):
            raise ValueError(f"expected z (N, {self.config.latent_dim}) and y (N,); got {tuple(z_np.shape)} and {tuple(y_np.shape)}")
        images = self.session.run(None, {"z": z_np, "y": y_np})[0]
        return torch.from_numpy(images).to(device)

    forward = __call__

    def eval(self) -> "OnnxGenerator":  # the torch module idiom, for code that calls it
        return self

    def __repr__(self) -> str:
        return f"OnnxGenerator({self.path.name}, {json.dumps(self.info['model'], sort_keys=True)})"


def load_quantized(directory: str | Path, threads: int = 0) -> OnnxGenerator:
    """The int8 generator saved by the quantize step: ``model(z, y)`` -> images (N, C, H, W) in [-1, 1];
    ``model.config`` and ``model.info`` (categories, ...) as for ``load_generator``."""
    directory = Path(directory)
    if not (directory / INT8_FILE).exists():
        raise MissingInput(f"{directory}: no {INT8_FILE}; not a quantized generator (run productstudio quantize)")
    info = json.loads((directory / CONFIG).read_text())
    return OnnxGenerator(directory / INT8_FILE, info, threads=threads)
