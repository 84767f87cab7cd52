"""The generator as an ONNX graph: export from the torch module, and a runner with the module's contract.

Export goes through ``torch.export`` (strict: TorchDynamo traces the Python, so ``len(z)`` inside the
generator stays a symbolic batch size) and the dynamo ONNX exporter, which also folds the plain batch
norms into the convolutions. Nothing in it knows the generator's layers: any module with the
``(z, y) -> images`` contract and a ``config`` (latent_dim, num_classes) exports the same way, and the
export is checked against the module at two batch sizes before it is used.

ONNX files are protobuf: loading one runs no pickle.
"""

from __future__ import annotations

import contextlib
import io
import json
import warnings
from pathlib import Path

import numpy as np
import torch

from productstudio.models.gan import GANConfig

INPUTS = ("z", "y")
OUTPUT = "images"


def example_inputs(config, batch: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Latents and categories as serving draws them: z ~ N(0, 1), categories in turn."""
    rng = torch.Generator().manual_seed(seed)
    z = torch.randn(batch, config.latent_dim, generator=rng)
    y = torch.arange(batch) % config.num_classes
    return z, y


def export_onnx(generator: torch.nn.Module, path: str | Path, check_atol: float = 1e-4) -> Path:
    """Write ``generator`` (eval mode, CPU) as a self-contained ONNX file with a dynamic batch size."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    generator = generator.eval().cpu()
    z, y = example_inputs(generator.config, 4)
    batch = torch.export.Dim("batch")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.export.export(generator, (z, y), dynamic_shapes={"z": {0: batch}, "y": {0: batch}}, strict=True)
    except Exception as error:  # torch raises many kinds here; the message is what helps
        raise RuntimeError(
            f"the generator does not export with a dynamic batch size ({type(error).__name__}: {str(error).splitlines()[0]})"
        ) from error
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():  # the exporter narrates its passes
        warnings.simplefilter("ignore")
        torch.onnx.export(program, (z, y), str(path), input_names=list(INPUTS), output_names=[OUTPUT],
                          dynamo=True, external_data=False, optimize=True)
    _check_against_module(generator, path, check_atol)
    return path


def _check_against_module(generator: torch.nn.Module, path: Path, atol: float) -> None:
    session = make_session(path, threads=1)
    for batch in (1, 3):
        z, y = example_inputs(generator.config, batch, seed=batch)
        with torch.inference_mode():
            expected = generator(z, y).numpy()
        got = session.run(None, {"z": z.numpy(), "y": y.numpy()})[0]
        if got.shape != expected.shape or not np.allclose(got, expected, atol=atol, rtol=0):
            worst = float(np.abs(got - expected).max()) if got.shape == expected.shape else float("nan")
            raise RuntimeError(f"the ONNX export of the generator disagrees with the module at batch {batch} "
                               f"(shape {got.shape} vs {expected.shape}, max difference {worst:.2e})")


def make_session(path: str | Path, threads: int = 0):
    """An ONNX Runtime CPU session; ``threads`` 0 lets ORT take all cores. Worker threads do not spin
    between calls: on shared cores spinning steals time from everything else (and from torch when
    both run in one process, as in the benchmark)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3  # errors only
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class OnnxGenerator:
    """An exported (fp32 or int8) generator with ``Generator.forward``'s contract:
    latents (N, latent_dim) and categories (N,) -> float images (N, C, H, W) in [-1, 1].

    Runs on the CPU with ONNX Runtime; tensors given on another device come back on that device.
    ``config`` is the generator's ``GANConfig`` and ``info`` the full config.json (categories, ...), so
    code written for a ``Generator`` (``metrics.evaluate.generated_batches``, serving) takes it as is.
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
