"""Benchmark: TorchServe under bounded load (locust, headless, a second process on loopback) against the raw model.

Packages the generator (default: models/train/generator, fp32), serves it with TorchServe on free 127.0.0.1
ports with the params.yaml ``serve`` settings (workers, threads, dynamic batching), and for each concurrency
(default 1, 8, 32) runs locust with that many users, each sending count=1 requests back to back (no wait):
throughput, p50/p99 latency, errors. The reference is the raw generator in this process: forward passes at
``serve.batch_size`` on ``serve.threads`` threads, timed right before and right after each load level (the
machine's speed drifts, so the faster of the two is the reference: the ratio errs low, never high). Target (issue 5): at
concurrency 32, zero errors and served throughput at least 70 % of raw.

Served images also pay for JSON parsing, PNG encoding, base64, HTTP and TorchServe's queue, which the raw
forward pass does not. Prints a table and writes bench/results/serving.json.

    python bench/bench_serving.py                      # 20 s per level
    python bench/bench_serving.py --seconds 10 --concurrency 1 32
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



def raw_throughput(generator_dir: Path, batch_size: int, threads: int, seconds: float = 3.0) -> float:
    """Images/s of the generator's forward pass at ``batch_size`` on ``threads`` threads (what one worker does)."""
    import torch

    from productstudio.models.loader import load
    from productstudio.serving.tasks import generate as api

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        model, info = load(generator_dir, "cpu")
        latent = int(info["model"]["latent_dim"])
        requests = [api.GenerateRequest(7, (i,), "png", False) for i in range(batch_size)]
        api.generate(model, requests, latent)  # warm-up
        done, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            api.generate(model, requests, latent)
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--generator", type=Path, default=REPO / "models" / "train" / "generator")
    parser.add_argument("--params", type=Path, default=REPO / "params.yaml")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--seconds", type=int, default=20, help="load per level (default: %(default)s)")
    parser.add_argument("--target", type=float, default=0.70, help="served / raw throughput at the highest concurrency")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "serving.json")
    args = parser.parse_args()

    from productstudio.config import load_params
    from productstudio.serving import server
    from productstudio.serving.archive import build_archive

    params = load_params(args.params)
    ports = free_ports(5)
    settings = params.serve.model_copy(update=dict(zip(
        ("inference_port", "management_port", "metrics_port", "grpc_inference_port", "grpc_management_port"), ports)))
    workdir = Path(tempfile.mkdtemp(prefix="bench-serving-", dir=REPO / ".scratch" if (REPO / ".scratch").is_dir() else None))
    mar = build_archive(args.generator, workdir / "store", "generator")
    handle = server.start(settings, mar, workdir / "state", wait_s=300)
    levels = []
    try:
        for users in args.concurrency:
            before = raw_throughput(args.generator, settings.batch_size, settings.threads)
            level = run_locust(handle.inference_url, "/predictions/generator", handle.inference_key, users, args.seconds, workdir)
            after = raw_throughput(args.generator, settings.batch_size, settings.threads)
            # The machine's speed drifts by 2x within minutes: the faster of the two references, so the ratio errs low.
            raw = max(before, after)
            level.update(raw_images_per_s=raw, raw_before_after=[before, after], ratio_to_raw=level["throughput_rps"] / raw)
            levels.append(level)
            print(f"concurrency {users}: {level['throughput_rps']:.1f} req/s, raw {raw:.1f} img/s", flush=True)
    finally:
        server.stop(workdir / "state")

    top = levels[-1]
    met = top["errors"] == 0 and top["ratio_to_raw"] >= args.target
    print(f"\nTorchServe, {settings.workers} worker x {settings.threads} thread, batch {settings.batch_size} within "
          f"{settings.max_batch_delay_ms} ms; count=1 requests; {args.seconds} s per level (machine shared: see load)")
    print(f"{'users':>5} {'requests':>9} {'errors':>6} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'raw img/s':>10} {'ratio':>6}")
    for lv in levels:
        print(f"{lv['concurrency']:>5} {lv['requests']:>9} {lv['errors']:>6} {lv['throughput_rps']:>8.1f} {lv['p50_ms']:>8.0f} "
              f"{lv['p99_ms']:>8.0f} {lv['raw_images_per_s']:>10.1f} {lv['ratio_to_raw']:>6.2f}")
    print(f"target at concurrency {top['concurrency']}: 0 errors and ratio >= {args.target:.2f}: {'met' if met else 'NOT met'}")
    result = {"benchmark": "serving", "generator": str(args.generator), "tool": "locust (headless, separate process)",
              "settings": {k: getattr(settings, k) for k in ("workers", "threads", "batch_size", "max_batch_delay_ms")},
              "request": {"count": 1, "format": "png"}, "levels": levels, "target": {"ratio": args.target, "met": met},
              "load_average": os.getloadavg(), "cpus": os.cpu_count(), "machine": platform.processor() or platform.machine(),
              "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
