"""Benchmark: TF-Inception FID feature extraction on the CPU, and what FID-10k then costs.

Compares, in the same run and on the same batches (alternating, so the machine's drifting speed hits
both alike):
- reference: the network as loaded, NCHW input, under ``torch.no_grad()``;
- ours: ``productstudio.metrics.extract_features`` (channels-last network and input,
  ``torch.inference_mode()``).
Both include the same preprocessing (resize to 299x299, scaling). Then it times one 2048-d
Fréchet distance and projects the wall time of FID-10k with the real side's statistics cached
(10k generated images through the network + the distance) and without the cache (20k images).
Prints a table and writes bench/results/inception.json.

    python bench/bench_inception.py [--images 64] [--batch-size 16] [--full]   (--full: 512 images)
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from productstudio.data.fashion_mnist import load_split
from productstudio.metrics import features as feats
from productstudio.metrics.fid import FeatureStats, frechet_distance

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "fashion-mnist")
    parser.add_argument("--images", type=int, default=64, help="images timed per method (default 64)")
    parser.add_argument("--full", action="store_true", help="time 512 images per method (about 2-3 minutes)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "inception.json")
    args = parser.parse_args()
    count = 512 if args.full else args.images
    batch = args.batch_size

    images, _ = load_split(args.data, "test", limit=count)
    images = np.ascontiguousarray(images[:, None])  # (N, 1, 28, 28) uint8
    batches = [images[i : i + batch] for i in range(0, count, batch)]

    start = time.perf_counter()
    plain_net = feats.load_inception("cpu", channels_last=False)
    feats.load_inception("cpu", channels_last=True)
    load_s = time.perf_counter() - start

    def reference(chunk: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return plain_net(feats.preprocess(chunk)).double().numpy()

    def ours(chunk: np.ndarray) -> np.ndarray:
        return feats.extract_features(chunk, batch_size=batch, progress=False)

    # Warm-up: TorchScript's profiling executor specialises on its first calls with a given shape.
    for _ in range(2):
        reference(batches[0])
        ours(batches[0])

    times = {"reference": 0.0, "ours": 0.0}
    outputs: dict[str, list[np.ndarray]] = {"reference": [], "ours": []}
    for index, chunk in enumerate(batches):
        order = (("reference", reference), ("ours", ours)) if index % 2 == 0 else (("ours", ours), ("reference", reference))
        for name, fn in order:
            t0 = time.perf_counter()
            outputs[name].append(fn(chunk))
            times[name] += time.perf_counter() - t0
    ref_features = np.concatenate(outputs["reference"])
    our_features = np.concatenate(outputs["ours"])
    max_diff = float(np.abs(ref_features - our_features).max())
    rate = {name: count / seconds for name, seconds in times.items()}
    speedup = rate["ours"] / rate["reference"]

    # One 2048-d Fréchet distance (its cost does not depend on the sample count).
    stats_a = FeatureStats.from_features(our_features[: count // 2])
    stats_b = FeatureStats.from_features(our_features[count // 2 :])
    t0 = time.perf_counter()
    frechet_distance(stats_a, stats_b)
    fid_s = time.perf_counter() - t0
    fid10k_cached_s = 10_000 / rate["ours"] + fid_s
    fid10k_uncached_s = 20_000 / rate["ours"] + fid_s

    print(f"\nTF-Inception FID features, {count} Fashion-MNIST images (28x28 -> 299x299), batch {batch}, "
          f"{torch.get_num_threads()} torch threads")
    print(f"{'method':<44} {'seconds':>8} {'images/s':>9}")
    print(f"{'reference: NCHW, torch.no_grad':<44} {times['reference']:>8.2f} {rate['reference']:>9.2f}")
    print(f"{'ours: channels-last, torch.inference_mode':<44} {times['ours']:>8.2f} {rate['ours']:>9.2f}")
    print(f"ours / reference: {speedup:.2f}x   (features agree to {max_diff:.1e})")
    load_average = os.getloadavg()[0]
    print(f"network load {load_s:.2f} s; one 2048-d Frechet distance {fid_s:.2f} s; "
          f"machine load average {load_average:.1f} (other processes slow both methods alike)")
    print(f"projected FID-10k: {fid10k_cached_s / 60:.1f} min with cached real statistics, "
          f"{fid10k_uncached_s / 60:.1f} min without\n")

    result = {
        "images": count,
        "batch_size": batch,
        "torch_threads": torch.get_num_threads(),
        "reference_seconds": times["reference"],
        "reference_images_per_s": rate["reference"],
        "ours_seconds": times["ours"],
        "ours_images_per_s": rate["ours"],
        "speedup_vs_reference": speedup,
        "features_max_abs_diff": max_diff,
        "network_load_seconds": load_s,
        "frechet_distance_2048d_seconds": fid_s,
        "projected_fid10k_cached_real_minutes": fid10k_cached_s / 60,
        "projected_fid10k_uncached_minutes": fid10k_uncached_s / 60,
        "machine_load_average_1min": load_average,
        "network": feats.network_info().protocol(),
        "note": "timings drift with machine load; compare the ratio, measured in the same run",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out.relative_to(REPO) if args.out.is_relative_to(REPO) else args.out}")


if __name__ == "__main__":
    main()
