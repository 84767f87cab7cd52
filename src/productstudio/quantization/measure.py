"""Cost and benefit of a quantized generator, measured in one run: speed, size, fidelity, FID/KID.

Speed: every variant is timed in the same process, in interleaved rounds (variant A, B, C, then again
in another order, ...), and the median per call is kept, so the machine's drifting speed and the other
processes on shared cores hit all variants alike; ratios are what to read, not absolute times.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator

import numpy as np
import torch

from productstudio.metrics.image_quality import psnr, ssim


@contextlib.contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """torch's intra-op threads for the duration (0: leave as is)."""
    saved = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


def time_interleaved(fns: dict[str, Callable[[], object]], rounds: int, min_seconds: float = 0.02) -> dict[str, float]:
    """Median seconds per call of each function, timed in ``rounds`` interleaved rounds."""
    reps = {}
    for name, fn in fns.items():  # warm-up, and enough calls per round to time at least min_seconds
        fn()
        start = time.perf_counter()
        fn()
        reps[name] = max(1, math.ceil(min_seconds / max(time.perf_counter() - start, 1e-6)))
    samples: dict[str, list[float]] = {name: [] for name in fns}
    names = list(fns)
    for index in range(rounds):
        order = names if index % 2 == 0 else names[::-1]
        for name in order:
            fn, n = fns[name], reps[name]
            start = time.perf_counter()
            for _ in range(n):
                fn()
            samples[name].append((time.perf_counter() - start) / n)
    return {name: float(np.median(values)) for name, values in samples.items()}


def paired_outputs(models: dict[str, Callable], config, count: int, seed: int, batch_size: int) -> dict[str, torch.Tensor]:
    """Float outputs of each model on identical inputs: the latents and categories of
    ``metrics.evaluate.generated_batches`` (same seed, categories in turn), so the fp32 side here is
    the evaluate step's generated set."""
    outputs: dict[str, list[torch.Tensor]] = {name: [] for name in models}
    rng = torch.Generator().manual_seed(seed)
    with torch.inference_mode():
        for start in range(0, count, batch_size):
            n = min(batch_size, count - start)
            z = torch.randn(n, config.latent_dim, generator=rng)
            y = torch.arange(start, start + n) % config.num_classes
            for name, model in models.items():
                outputs[name].append(model(z, y).float())
    return {name: torch.cat(chunks) for name, chunks in outputs.items()}


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """[-1, 1] -> uint8 exactly as ``generated_batches`` does (what is saved or served)."""
    return ((images + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()


def fidelity(reference: torch.Tensor, candidate: torch.Tensor) -> dict:
    """How close the int8 outputs are to the fp32 ones on identical inputs (data range 2: [-1, 1])."""
    per_image = psnr(reference, candidate, data_range=2.0)
    finite = per_image[torch.isfinite(per_image)]
    ssims = ssim(reference, candidate, data_range=2.0)
    return {
        "num_images": int(reference.shape[0]),
        "data_range": 2.0,
        "psnr_db_mean": float(finite.mean()) if len(finite) else math.inf,
        "psnr_db_min": float(per_image.min()),
        "ssim_mean": float(ssims.mean()),
        "max_abs_diff": float((reference - candidate).abs().max()),
        "identical_uint8_fraction": float((to_uint8(reference) == to_uint8(candidate)).all(axis=(1, 2, 3)).mean()),
    }
