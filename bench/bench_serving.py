"""Benchmark: TorchServe under bounded load (locust, headless, a second process on loopback) against the raw model.

Serves the generator (default: models/train/generator for fp32 and models/quantized for int8; with
``--random-weights``, or when those are missing, a generator of params.yaml's ``train`` architecture with
seeded random weights, quantized here: throughput depends on the architecture, not on the weights) with
TorchServe on free 127.0.0.1 ports with the params.yaml ``serve`` settings (workers, threads, dynamic
batching). For each variant and concurrency (default 1, 8, 32) it runs locust with that many users, each
sending count=1 requests back to back: throughput, p50/p99 latency, errors.

The reference is the raw model in this process, timed right before and right after each load level (the
machine's speed drifts; the faster of the two is kept, so the ratio errs low): forward passes at
``serve.batch_size`` on ``serve.threads`` threads and on as many threads as the workers use together (workers x
threads, at most the cores), whichever is faster. Target (issue 13): at concurrency 32, zero errors and served throughput at least 70 % of raw.

Served images also pay for JSON parsing, PNG encoding, provenance (XMP), base64, HTTP and TorchServe's queue,
which the raw forward pass does not. Prints a table and writes bench/results/serving.json.

    python bench/bench_serving.py                              # fp32 and int8, 20 s per level
    python bench/bench_serving.py --seconds 10 --concurrency 1 32 --variants fp32
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from productstudio.serving.server import free_ports

REPO = Path(__file__).resolve().parents[1]
LOCUSTFILE = '''
import json, os
from locust import FastHttpUser, constant, task

KEY = os.environ["BENCH_KEY"]
PATH = os.environ["BENCH_PATH"]


class Client(FastHttpUser):  # geventhttpclient: the load generator must not be the bottleneck on 2 cores
    wait_time = constant(0)

    @task
    def generate(self):
        body = {"category": 7, "count": 1, "seed": 1}
        self.client.post(PATH, data=json.dumps(body), name="predict",
                         headers={"Authorization": "Bearer " + KEY, "Content-Type": "application/json"})
'''



def raw_throughput(model_dir: Path, variant: str, batch_size: int, threads: int, seconds: float = 3.0) -> float:
    """Images/s of the generator's forward pass at ``batch_size`` on ``threads`` threads, loaded as a worker loads it."""
    import torch

    from productstudio.serving.tasks import generate as api

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        task = api.GenerateTask.load(model_dir, "bench", "1", variant=variant, threads=threads)
        requests = [api.GenerateRequest(7, (i,), "png", False) for i in range(batch_size)]
        task.run(requests)  # warm-up
        done, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            task.run(requests)
            done += batch_size
        return done / (time.perf_counter() - start)
    finally:
        torch.set_num_threads(previous)


def run_locust(url: str, path: str, key: str, users: int, seconds: int, workdir: Path) -> dict:
    locustfile = workdir / "locustfile.py"
    locustfile.write_text(LOCUSTFILE)
    prefix = workdir / f"c{users}"
    command = [str(Path(sys.executable).with_name("locust")), "-f", str(locustfile), "--headless", "-u", str(users),
               "-r", str(users), "-t", f"{seconds}s", "--host", url, "--csv", str(prefix), "--only-summary",
               "--loglevel", "WARNING", "--stop-timeout", "10"]
    env = {**os.environ, "BENCH_KEY": key, "BENCH_PATH": path}
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=seconds + 120)
    rows = list(csv.DictReader(open(f"{prefix}_stats.csv")))
    total = next(r for r in rows if r["Name"] == "Aggregated")
    failures = list(csv.DictReader(open(f"{prefix}_failures.csv"))) if Path(f"{prefix}_failures.csv").exists() else []
    return {"concurrency": users, "seconds": seconds, "requests": int(total["Request Count"]),
            "errors": int(total["Failure Count"]), "throughput_rps": float(total["Requests/s"]),
            "p50_ms": float(total["50%"]), "p99_ms": float(total["99%"]),
            "failure_examples": [f"{f['Error']} (x{f['Occurrences']})" for f in failures[:3]],
            "locust_exit_code": result.returncode}


def random_generator(params, workdir: Path) -> tuple[Path, Path]:
    """(fp32 dir, int8 dir) of a seeded random generator with params.train's architecture."""
    import torch

    from productstudio.models.gan import GANConfig, Generator
    from productstudio.models.io import save_generator
    from productstudio.quantization.quantize import quantize

    torch.manual_seed(0)
    t = params.train
    config = GANConfig(**{k: getattr(t, k) for k in GANConfig.__dataclass_fields__ if hasattr(t, k)})
    fp32 = workdir / "random-generator"
    save_generator(Generator(config), fp32, categories=[f"category{i}" for i in range(config.num_classes)])
    settings = params.quantize.model_copy(update={"metrics": [], "timing_rounds": 1})
    quantize(fp32, workdir / "random-int8", settings)
    return fp32, workdir / "random-int8"


def measure_variant(variant: str, model_dir: Path, settings, args, workdir: Path) -> list[dict]:
    from productstudio.serving import server
    from productstudio.serving.archive import build_archive

    # The raw model at its best on up to the cores the workers use together: one thread can beat two on a small net.
    thread_counts = sorted({settings.threads, min(settings.workers * settings.threads, os.cpu_count() or 1)})

    def raw_best() -> tuple[float, int]:
        return max((raw_throughput(model_dir, variant, settings.batch_size, n), n) for n in thread_counts)

    mar = build_archive(model_dir, workdir / f"store-{variant}", "generator", variant=variant)
    handle = server.start(settings, mar, workdir / f"state-{variant}", wait_s=300)
    levels = []
    try:
        for users in args.concurrency:
            before = raw_best()
            level = run_locust(handle.inference_url, "/predictions/generator", handle.inference_key, users, args.seconds, workdir)
            after = raw_best()
            raw, threads = max(before, after)  # the machine's speed drifts: the faster reference, so the ratio errs low
            level.update(variant=variant, raw_images_per_s=raw, raw_threads=threads, raw_before_after=[before[0], after[0]],
                         ratio_to_raw=level["throughput_rps"] / raw)
            levels.append(level)
            print(f"{variant} concurrency {users}: {level['throughput_rps']:.1f} req/s, raw {raw:.1f} img/s", flush=True)
    finally:
        server.stop(workdir / f"state-{variant}")
    return levels


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--generator", type=Path, default=REPO / "models" / "train" / "generator")
    parser.add_argument("--int8", type=Path, default=REPO / "models" / "quantized", help="the quantize step's output")
    parser.add_argument("--random-weights", action="store_true", help="a seeded random generator of params.train's shape")
    parser.add_argument("--variants", nargs="+", default=["fp32", "int8"], choices=["fp32", "int8"])
    parser.add_argument("--params", type=Path, default=REPO / "params.yaml")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--seconds", type=int, default=20, help="load per level (default: %(default)s)")
    parser.add_argument("--target", type=float, default=0.70, help="served / raw throughput at the highest concurrency")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "serving.json")
    args = parser.parse_args()

    from productstudio.config import load_params

    params = load_params(args.params)
    ports = free_ports(5)
    settings = params.serve.model_copy(update=dict(zip(
        ("inference_port", "management_port", "metrics_port", "grpc_inference_port", "grpc_management_port"), ports)))
    workdir = Path(tempfile.mkdtemp(prefix="bench-serving-", dir=REPO / ".scratch" if (REPO / ".scratch").is_dir() else None))
    dirs = {"fp32": args.generator, "int8": args.int8}
    weights = "trained"
    if args.random_weights or not all((dirs[v] / "config.json").is_file() for v in args.variants):
        print("random weights of params.train's architecture (no trained generator given or found)", flush=True)
        dirs["fp32"], dirs["int8"] = random_generator(params, workdir)
        weights = "random (seed 0), params.train architecture"
    levels = [level for variant in args.variants for level in measure_variant(variant, dirs[variant], settings, args, workdir)]

    tops = [lv for lv in levels if lv["concurrency"] == max(args.concurrency)]
    met = all(top["errors"] == 0 and top["ratio_to_raw"] >= args.target for top in tops)
    print(f"\nTorchServe, {settings.workers} worker(s) x {settings.threads} thread(s), batch {settings.batch_size} within "
          f"{settings.max_batch_delay_ms} ms; count=1 PNG requests; {args.seconds} s per level; raw: the faster on "
          f"{' or '.join(str(n) for n in sorted({settings.threads, min(settings.workers * settings.threads, os.cpu_count() or 1)}))} "
          f"thread(s); load average {os.getloadavg()[0]:.1f}")
    print(f"{'variant':>7} {'users':>5} {'requests':>9} {'errors':>6} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} "
          f"{'raw img/s':>10} {'ratio':>6}")
    for lv in levels:
        print(f"{lv['variant']:>7} {lv['concurrency']:>5} {lv['requests']:>9} {lv['errors']:>6} {lv['throughput_rps']:>8.1f} "
              f"{lv['p50_ms']:>8.0f} {lv['p99_ms']:>8.0f} {lv['raw_images_per_s']:>10.1f} {lv['ratio_to_raw']:>6.2f}")
    print(f"target at concurrency {max(args.concurrency)}: 0 errors and ratio >= {args.target:.2f} for "
          f"{', '.join(args.variants)}: {'met' if met else 'NOT met'}")
    result = {"benchmark": "serving", "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
              "weights": weights, "model_dirs": {v: str(dirs[v]) for v in args.variants},
              "tool": "locust (headless, separate process)",
              "settings": {k: getattr(settings, k) for k in ("workers", "threads", "batch_size", "max_batch_delay_ms")},
              "request": {"count": 1, "format": "png"}, "levels": levels, "target": {"ratio": args.target, "met": met},
              "load_average": os.getloadavg(), "cpus": os.cpu_count(), "machine": platform.processor() or platform.machine(),
              "commit": subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip(),
              "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0  # a benchmark reports; the table says whether the target was met


if __name__ == "__main__":
    sys.exit(main())
