"""The generator as an ONNX graph: export from the torch module (the runner, ``OnnxGenerator``, lives in
``models.onnx_generator`` so that every layer can load it).

Export goes through ``torch.export`` (strict: TorchDynamo traces the Python, so ``len(z)`` inside the
generator stays a symbolic batch size) and the dynamo ONNX exporter, which also folds the plain batch
norms into the convolutions. Nothing in it knows the generator's layers: any module with the
``(z, y) -> images`` contract and a ``config`` (latent_dim, num_classes) exports the same way, and the
export is checked against the module at two batch sizes before it is used.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path

import numpy as np
import torch

from productstudio.models.onnx_generator import make_session
from productstudio.models.sampling import example_inputs

INPUTS = ("z", "y")
OUTPUT = "images"


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
