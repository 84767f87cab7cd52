"""Every image conversion of the project in one place: model output <-> uint8, uint8 <-> float, image files,
and the device models run on.

Conventions: models take and give float images (N, C, H, W) in [-1, 1]; what is saved, served, measured
and compared is uint8 (N, C, H, W), C = 1 (grey) or 3 (RGB). The conversion to uint8 scales in float32
((x + 1) * 127.5), rounds to the nearest integer (ties to even, as torch.round) and clips to 0..255, so
values beyond [-1, 1] saturate. Every generated image goes through it: the same float output gives the
same pixels whether it is evaluated, quantized, registered or served.
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Iterator

import numpy as np
import torch

# Served image formats: name -> media type.
FORMATS = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}


def to_uint8(images) -> torch.Tensor:
    """Float images in [-1, 1] (a tanh generator's output) -> uint8, on the same device."""
    x = torch.as_tensor(images).detach().float()
    return ((x + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)


def to_uint8_array(images) -> np.ndarray:
    """``to_uint8`` as a NumPy array on the CPU (N, C, H, W)."""
    return to_uint8(images).cpu().numpy()


def to_float(images) -> torch.Tensor:
    """uint8 images (a tensor or an array) -> float32 in [-1, 1], the models' input range."""
    return torch.as_tensor(images).float().div(127.5).sub(1.0)


def encode(image: np.ndarray, fmt: str = "png") -> bytes:
    """One uint8 image (C, H, W), C = 1 or 3, as a PNG, JPEG (quality 95) or lossless WebP file."""
    from PIL import Image

    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    picture = Image.fromarray(image[0] if image.shape[0] == 1 else np.transpose(image, (1, 2, 0)))
    buffer = io.BytesIO()
    if fmt == "webp":
        picture.save(buffer, format="WEBP", lossless=True)
    elif fmt == "jpeg":
        picture.save(buffer, format="JPEG", quality=95)
    else:
        picture.save(buffer, format="PNG")
    return buffer.getvalue()


def decode(data: bytes) -> np.ndarray:
    """An image file's bytes -> uint8 (C, H, W), as stored (grey stays one channel)."""
    from PIL import Image

    array = np.asarray(Image.open(io.BytesIO(data)))
    return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)


def resolve_device(device: str | torch.device = "cpu") -> torch.device:
    """'auto' takes CUDA when present, else the CPU; anything else is passed to torch.device."""
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


@contextlib.contextmanager
def reproducible_kernels(device: torch.device, compiled: bool = False) -> Iterator[None]:
    """Deterministic kernels while the block runs, where the fast ones are not: so the same data, params and code
    give the same weights.

    CUDA's fastest kernels sum in a varying order: on an H200 two 400-step runs of configs/clothing-64.yaml from
    one seed differed by up to 0.74 in a generator weight, and a resumed run by 0.90 from an uninterrupted one.
    With deterministic kernels both differences were 0, for about 9 % more time per step. cuBLAS reads its
    workspace setting when it starts, so it is set here, before the first matrix product. Eager CPU kernels
    already repeat themselves; ``compiled`` (torch.compile) CPU kernels on 2 threads did not (two fresh 20-step
    runs differed by up to 1e-7, a resumed one by 7e-4), and with deterministic algorithms, which inductor
    follows when it generates code, they matched bit for bit.
    """
    if device.type != "cuda" and not compiled:
        yield
        return
    if device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    before = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark)
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before[0])
        torch.backends.cudnn.benchmark = before[1]
