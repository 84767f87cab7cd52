"""Benchmark: loading the preprocessed Fashion-MNIST training set into memory.

Target (issue 2): all 60k training images in memory in under 2 s. Reference measured in the same run:
decoding the original gzip IDX file, which is what training would pay without the tensor store.
Prints a table and writes bench/results/load.json.

    python bench/bench_load.py [--processed data/processed] [--raw data/raw] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from productstudio.data import fashion_mnist
from productstudio.data.store import load_split


def timed(fn, repeats: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--processed", type=Path, default=Path("data/processed"))
    parser.add_argument("--raw", type=Path, default=Path("data/raw"))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("bench/results/load.json"))
    args = parser.parse_args()
    if not (args.processed / "manifest.json").exists():
        raise SystemExit(f"{args.processed} not found: run 'make run' first")

    def store_to_tensor():
        images, labels = load_split(args.processed, "train")
        return torch.from_numpy(images), torch.from_numpy(labels)

    store_s, (images, _) = timed(store_to_tensor, args.repeats)
    idx_s, _ = timed(lambda: fashion_mnist.load_split(args.raw / "fashion-mnist", "train"), args.repeats)
    n = images.shape[0]
    rows = [
        ("tensor store -> torch (uint8)", store_s, n / store_s),
        ("reference: gzip IDX decode", idx_s, n / idx_s),
    ]
    print(f"\nLoading {n} training images {tuple(images.shape[1:])} into memory (median of {args.repeats})")
    print(f"{'method':<32} {'seconds':>8} {'images/s':>12}")
    for name, seconds, rate in rows:
        print(f"{name:<32} {seconds:>8.3f} {rate:>12,.0f}")
    ratio = idx_s / store_s
    print(f"store is {ratio:.1f}x faster than the reference; target < 2 s: {'met' if store_s < 2 else 'MISSED'}\n")
    result = {
        "images": n,
        "shape": list(images.shape[1:]),
        "store_seconds": store_s,
        "reference_idx_seconds": idx_s,
        "speedup_vs_reference": ratio,
        "target_seconds": 2.0,
        "target_met": store_s < 2.0,
        "repeats": args.repeats,
        "torch_threads": torch.get_num_threads(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
