"""Static int8 quantization of an exported generator with ONNX Runtime (QDQ format).

Weights int8 (per output channel by default), activations uint8 with scales fixed beforehand from
calibration: the generator is run on latents and categories drawn as serving draws them, and each
activation's range is recorded. ``reduce_range`` keeps weights to 7 bits, which avoids the int16
saturation of u8 x s8 products on AVX2 CPUs without VNNI (ORT's own advice for such CPUs; here it also
measured about 1.5 dB better in PSNR against fp32 than 8-bit weights).

Why ONNX Runtime and not PT2E through torchao: see bench/bench_quantize.py and the README (on this
AVX2 CPU the X86Inductor int8 graph was no faster than the compiled fp32 one, needed a C++ compiler
at serving time and a pickle-based program file; ORT's int8 kernels were 1.6x its own fp32).
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import tempfile
import warnings
from pathlib import Path

from productstudio.models.sampling import latent_batches


class _LatentReader:
    """Calibration batches for ORT's calibrator: fixed seeded latents, categories in turn."""

    def __init__(self, config, samples: int, seed: int, batch: int = 64):
        self.batches = [{"z": z.numpy(), "y": y.numpy()} for z, y in latent_batches(config, samples, seed, batch)]
        self._iter = iter(self.batches)

    def get_next(self):
        return next(self._iter, None)

    def rewind(self) -> None:
        self._iter = iter(self.batches)


def quantize_onnx(fp32_path: str | Path, int8_path: str | Path, config, settings) -> Path:
    """Write the int8 (QDQ) model of ``fp32_path`` to ``int8_path``, calibrated per ``settings``
    (a ``QuantizeSettings``: per_channel, reduce_range, calibration_method/samples/seed)."""
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(_LatentReader, CalibrationDataReader):
        pass

    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy, "percentile": CalibrationMethod.Percentile}
    int8_path = Path(int8_path)
    work = Path(tempfile.mkdtemp(prefix="productstudio-quantize-"))
    try:
        prepared = work / "prepared.onnx"
        # ORT's graph optimisations and shape inference first (its advice before quantizing). The symbolic
        # shape pass cannot follow the dynamic batch through the Reshape; ONNX's own inference suffices.
        quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
        # ORT logs a root-logger warning for every 1-D tensor it cannot quantize per channel (kept fp32).
        with warnings.catch_warnings(), _root_log_level(logging.ERROR):
            warnings.simplefilter("ignore")
            quantize_static(
                str(prepared),
                str(int8_path),
                Reader(config, settings.calibration_samples, settings.calibration_seed),
                quant_format=QuantFormat.QDQ,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                per_channel=settings.per_channel,
                reduce_range=settings.reduce_range,
                calibrate_method=methods[settings.calibration_method],
                extra_options={"CalibTensorRangeSymmetric": False},
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return int8_path


@contextlib.contextmanager
def _root_log_level(level: int):
    root = logging.getLogger()
    saved = root.level
    root.setLevel(level)
    try:
        yield
    finally:
        root.setLevel(saved)
