"""Cost and benefit of a quantized generator, measured in one run: speed, size, fidelity, FID/KID.

Speed: every variant is timed in the same process, in interleaved rounds (variant A, B, C, then again
in another order, ...), and the median per call is kept, so the machine's drifting speed and the other
processes on shared cores hit all variants alike; ratios are what to read, not absolute times.
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch

from productstudio.imaging import to_uint8_array
from productstudio.metrics.engine import MetricOptions, calc_metric
from productstudio.models.onnx_generator import OnnxGenerator
from productstudio.models.sampling import example_inputs, latent_batches

THROUGHPUT_BATCH = 64


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


def time_interleaved(fns: dict[str, Callable[[], object]], rounds: int, min_seconds: float = 0.02,
                     clock: Callable[[], float] = time.perf_counter) -> dict[str, float]:
    """Median seconds per call of each function, timed in ``rounds`` interleaved rounds.

    ``clock`` returns seconds; tests pass a fake one that the timed functions advance, so the result
    does not depend on how busy the machine is.
    """
    reps = {}
    for name, fn in fns.items():  # warm-up, and enough calls per round to time at least min_seconds
        fn()
        start = clock()
        fn()
        reps[name] = max(1, math.ceil(min_seconds / max(clock() - start, 1e-6)))
    samples: dict[str, list[float]] = {name: [] for name in fns}
    names = list(fns)
    for index in range(rounds):
        order = names if index % 2 == 0 else names[::-1]
        for name in order:
            fn, n = fns[name], reps[name]
            start = clock()
            for _ in range(n):
                fn()
            samples[name].append((clock() - start) / n)
    return {name: float(np.median(values)) for name, values in samples.items()}


def paired_outputs(models: dict[str, Callable], config, count: int, seed: int, batch_size: int) -> dict[str, torch.Tensor]:
    """Float outputs of each model on identical inputs: the latents and categories of
    ``models.sampling.generated_batches`` (same seed, categories in turn), so the fp32 side here is
    the evaluate step's generated set."""
    outputs: dict[str, list[torch.Tensor]] = {name: [] for name in models}
    with torch.inference_mode():
        for z, y in latent_batches(config, count, seed, batch_size):
            for name, model in models.items():
                outputs[name].append(model(z, y).float())
    return {name: torch.cat(chunks) for name, chunks in outputs.items()}


def fidelity(reference: torch.Tensor, candidate: torch.Tensor) -> dict:
    """How close the int8 outputs are to the fp32 ones on identical inputs (data range 2: [-1, 1])."""
    pairs = MetricOptions(images=reference, references=candidate, data_range=2.0)
    psnr, ssim = calc_metric("psnr", pairs), calc_metric("ssim", pairs)
    return {
        "num_images": int(reference.shape[0]),
        "data_range": 2.0,
        "psnr_db_mean": psnr["mean_finite"],  # identical images (inf dB) left out of the mean
        "psnr_db_min": psnr["min"],
        "ssim_mean": ssim["value"],
        "max_abs_diff": float((reference - candidate).abs().max()),
        "identical_uint8_fraction": float((to_uint8_array(reference) == to_uint8_array(candidate)).all(axis=(1, 2, 3)).mean()),
    }


def speed_report(fp32: torch.nn.Module, fp32_onnx: str | Path, int8, info: dict, threads: int, rounds: int) -> dict:
    """Latency at batch 1 and throughput at batch 64 of fp32 eager torch (NCHW and channels-last), fp32 in
    ONNX Runtime and ``int8`` (an ``OnnxGenerator``), all timed together on ``threads`` threads (0: all)."""
    channels_last = copy.deepcopy(fp32).to(memory_format=torch.channels_last)
    ort_fp32 = OnnxGenerator(fp32_onnx, info, threads=threads)
    variants = {"fp32_eager": fp32, "fp32_eager_channels_last": channels_last,
                "fp32_onnxruntime": ort_fp32, "int8_onnxruntime": int8}
    fns = {}
    for batch in (1, THROUGHPUT_BATCH):
        z, y = example_inputs(fp32.config, batch, seed=batch)
        for name, model in variants.items():
            fns[(name, batch)] = lambda m=model, z=z, y=y: m(z, y)
    keys = list(fns)
    with torch_threads(threads), torch.inference_mode():
        seconds = time_interleaved({f"{n}@{b}": fns[(n, b)] for n, b in keys}, rounds)
    latency = {name: seconds[f"{name}@1"] * 1e3 for name in variants}
    throughput = {name: THROUGHPUT_BATCH / seconds[f"{name}@{THROUGHPUT_BATCH}"] for name in variants}
    # The fp32 reference is what serving runs today: eager torch, whichever memory format was faster here.
    eager = max(("fp32_eager", "fp32_eager_channels_last"), key=lambda name: throughput[name])
    eager_b1 = min(("fp32_eager", "fp32_eager_channels_last"), key=lambda name: latency[name])
    return {
        "latency_b1_ms": latency,
        f"throughput_b{THROUGHPUT_BATCH}_img_s": throughput,
        "fp32_reference": {"batch_1": eager_b1, f"batch_{THROUGHPUT_BATCH}": eager},
        "speedup": {
            f"b{THROUGHPUT_BATCH}_int8_vs_fp32_eager": throughput["int8_onnxruntime"] / throughput[eager],
            f"b{THROUGHPUT_BATCH}_int8_vs_fp32_onnxruntime": throughput["int8_onnxruntime"] / throughput["fp32_onnxruntime"],
            f"b{THROUGHPUT_BATCH}_fp32_onnxruntime_vs_fp32_eager": throughput["fp32_onnxruntime"] / throughput[eager],
            "b1_int8_vs_fp32_eager": latency[eager_b1] / latency["int8_onnxruntime"],
            "b1_int8_vs_fp32_onnxruntime": latency["fp32_onnxruntime"] / latency["int8_onnxruntime"],
        },
        "timing": {"rounds": rounds, "statistic": "median of interleaved rounds",
                   "threads": threads or os.cpu_count(), "inputs": "z ~ N(0, 1), categories in turn"},
    }
