"""Device check: configs/clothing-64.yaml trained on CUDA until a deadline, in segments that each leave a generator.

usage: python3 bench/colour_on_cuda.py OUT SECONDS [device] [probe_steps] [segment] [train overrides as JSON]
  Reads the processed train split from bench/../.scratch/gpu/processed (copied there from runs/clothing-64, as a
  device run carries it). A probe of probe_steps (300) measures the speed; then segments of `segment` (3,000) steps
  follow while the next one fits before SECONDS are up (constant learning rates: a resumed segment continues the
  same run). OUT gets colour-gpu.json (speeds, summaries), grids.tar and gen-<step>.tar per segment, for
  'productstudio evaluate' here. bench/reported/colour-64-gpu-2026-12-04.json holds one H200 run.
"""
import json
import shutil
import sys
import tarfile
import time
from pathlib import Path

import torch

from productstudio.config import load_params
from productstudio.training.loop import train

out = Path(sys.argv[1])
deadline = time.time() + float(sys.argv[2])
device = sys.argv[3] if len(sys.argv) > 3 else "cuda"
probe_steps = int(sys.argv[4]) if len(sys.argv) > 4 else 300
segment = int(sys.argv[5]) if len(sys.argv) > 5 else 3000
override = json.loads(sys.argv[6]) if len(sys.argv) > 6 else {}
here = Path(__file__).resolve().parents[1] / ".scratch" / "gpu"
work = Path("/tmp/colour") if device == "cuda" else here / "work"
shutil.rmtree(work, ignore_errors=True)
params = load_params("configs/clothing-64.yaml")
record = {"torch": torch.__version__, "device": device,
          "gpu": torch.cuda.get_device_name(0) if device == "cuda" else None,
          "config": "configs/clothing-64.yaml", "override": override, "segments": []}


def run(max_steps: int) -> float:
    settings = params.train.model_copy(update={**override, "max_steps": max_steps, "kid_every": 0, "checkpoint_every": 1000,
                                               "sample_every": 1000})
    start = time.perf_counter()
    manifest = train(settings, here / "processed", work / "train", work / "plots", device=device, track=False)
    seconds = time.perf_counter() - start
    keep = work / "kept" / f"step{max_steps:06d}"
    shutil.copytree(work / "train" / "generator", keep / "generator", dirs_exist_ok=True)
    shutil.copy(work / "train" / manifest["sample_grid"], keep / "grid.png")
    record["segments"].append({"max_steps": max_steps, "seconds": round(seconds, 1),
                               "summary": manifest["summary"]})
    # $OUT brings back 8 files of 16 MiB at most: the grids together, generators at 9,000 and 18,000, the last one
    with tarfile.open(out / "grids.tar", "w") as tar:
        for grid in sorted((work / "kept").glob("*/grid.png")):
            tar.add(grid, arcname=f"{grid.parent.name}.png")
    names = [f"gen-{max_steps:06d}.tar"] if max_steps >= segment else []
    for name in names:
        with tarfile.open(out / name, "w") as tar:
            tar.add(keep / "generator", arcname=f"step{max_steps:06d}")
    record["last_generator_step"] = max_steps
    (out / "colour-gpu.json").write_text(json.dumps(record, indent=1))
    print(f"segment to {max_steps}: {seconds:.1f} s", flush=True)
    return seconds


first = run(probe_steps)
rate = probe_steps / first
record["probe_steps_per_s"] = round(rate, 2)
steps = probe_steps
target = segment
while True:
    need = (target - steps) / rate * 1.15 + 10
    if time.time() + need > deadline:
        break
    seconds = run(target)
    rate = (target - steps) / seconds
    steps, target = target, target + segment
print(json.dumps(record), flush=True)
