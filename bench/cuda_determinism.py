"""Device check: does training on CUDA give the same weights twice, and does a resumed run match an uninterrupted one?

usage: python3 bench/cuda_determinism.py PROCESSED WORK default|deterministic [HALF]
  PROCESSED: a processed colour dataset (scripts/run-params configs/clothing-64.yaml ... writes one);
  'default' trains as train() does, 'deterministic' forces deterministic kernels itself (as train() now does on
  CUDA). Trains HALF (200) steps and resumes to 2*HALF, then 2*HALF straight, then again; prints the largest
  weight differences. bench/reported/cuda-determinism-2026-12-04.json holds one H200 run.
"""
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

from productstudio.config import load_params
from productstudio.training.loop import train

processed, work, variant = Path(sys.argv[1]), Path(sys.argv[2]) / sys.argv[3], sys.argv[3]
if variant == "deterministic":
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False
half = int(sys.argv[4]) if len(sys.argv) > 4 else 200
params = load_params("configs/clothing-64.yaml")


def run(name, steps):
    settings = params.train.model_copy(update={"max_steps": steps, "kid_every": 0, "checkpoint_every": half,
                                               "sample_every": 1000})
    start = time.perf_counter()
    train(settings, processed, work / name, work / (name + "-plots"), device="cuda" if torch.cuda.is_available() else "cpu", track=False)
    return time.perf_counter() - start


def weights(name):
    return load_file(str(work / name / "generator" / "generator.safetensors"))


def biggest_difference(a, b):
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


run("resumed", half)
run("resumed", 2 * half)
seconds = run("straight", 2 * half)
run("again", 2 * half)
print(f"{variant}: {2 * half} steps in {seconds:.1f} s; resumed vs straight max |diff| "
      f"{biggest_difference(weights('resumed'), weights('straight')):.3g}; run vs rerun "
      f"{biggest_difference(weights('straight'), weights('again')):.3g}", flush=True)
