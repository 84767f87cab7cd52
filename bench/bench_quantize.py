"""Benchmark: the int8 generator (ONNX Runtime static quantization) against fp32, and the issue's target.

Runs ``productstudio.quantization.quantize`` on a trained generator (settings from params.yaml
``quantize``, with the metrics and timing rounds given here), then times the same four models again on
each extra thread count. All variants are timed in one process, in interleaved rounds, so ratios are
what to read (this machine's speed drifts, and its 2 cores are often shared):

- fp32 eager torch under ``torch.inference_mode()``, NCHW and channels-last (what serving runs today;
  the faster of the two is the reference),
- fp32 in ONNX Runtime (so the int8 gain is not confused with the change of runtime),
- int8 in ONNX Runtime (QDQ; what ``load_quantized`` serves).

Quality: PSNR/SSIM between fp32 and int8 outputs on identical inputs, and FID/KID of both on the same
latents (protocol.seed) against the cached real features. Target (issue 4): int8 throughput at batch 64
at least 1.5x fp32, with FID at most 5 % worse. Prints a table and writes bench/results/quantize.json.

    python bench/bench_quantize.py                                  # fid1k_test, kid1k_test (~5 min of Inception)
    python bench/bench_quantize.py --metrics fid2k_test --threads 1 2
    python bench/bench_quantize.py --metrics                        # speed and PSNR only (~1 min)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--generator", type=Path, default=REPO / "models" / "train" / "generator")
    parser.add_argument("--processed", type=Path, default=REPO / "data" / "processed")
    parser.add_argument("--cache", type=Path, default=REPO / "models" / "real_stats", help="real feature cache (real_stats output)")
    parser.add_argument("--params", type=Path, default=REPO / "params.yaml")
    parser.add_argument("--metrics", nargs="*", default=["fid1k_test", "kid1k_test"], help="named metrics, fp32 vs int8 (none: skip)")
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2], help="thread counts to time (the first goes in the report)")
    parser.add_argument("--rounds", type=int, default=15, help="interleaved timing rounds")
    parser.add_argument("--work", type=Path, default=REPO / ".scratch" / "bench-quantize", help="where the int8 model is written")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "quantize.json")
    args = parser.parse_args()

    from productstudio.config import load_params
    from productstudio.models.io import load_generator
    from productstudio.quantization.quantize import FP32_FILE, load_quantized, quantize
    from productstudio.quantization.measure import THROUGHPUT_BATCH, speed_report

    if not (args.generator / "generator.safetensors").exists():
        print(f"bench_quantize: no trained generator at {args.generator} (run `make run` or productstudio train first)", file=sys.stderr)
        return 2
    # A private copy: training may replace the generator during the minutes of Inception below.
    snapshot = args.work.with_name(args.work.name + "-generator")
    shutil.rmtree(snapshot, ignore_errors=True)
    shutil.copytree(args.generator, snapshot)
    params = load_params(args.params)
    settings = params.quantize.model_copy(update={"metrics": args.metrics, "threads": args.threads[0], "timing_rounds": args.rounds})
    have_real = args.processed.is_dir() and args.cache.is_dir()
    report = quantize(snapshot, args.work, settings, processed_dir=args.processed if have_real else None,
                      cache_dir=args.cache if have_real else None, seed=params.protocol.seed,
                      batch_size=params.protocol.batch_size, kid_subset_size=params.protocol.kid_subset_size,
                      kid_subsets=params.protocol.kid_subsets, progress=lambda message: print(message, flush=True))

    speeds = {args.threads[0]: {k: report[k] for k in ("latency_b1_ms", f"throughput_b{THROUGHPUT_BATCH}_img_s", "speedup", "fp32_reference")}}
    fp32, info = load_generator(snapshot)
    for threads in args.threads[1:]:
        print(f"timing again on {threads} threads ...", flush=True)
        int8 = load_quantized(args.work, threads=threads)
        speeds[threads] = speed_report(fp32, args.work / FP32_FILE, int8, info, threads, args.rounds)

    print()
    print(f"int8 generator benchmark: {args.generator} on {report['machine']['cpu']} ({os.cpu_count()} cores)")
    print(f"{'threads':>7}  {'model':<28} {'b1 ms':>8} {'b64 img/s':>10} {'b64 vs fp32 eager':>18}")
    names = {"fp32_eager": "fp32 eager (NCHW)", "fp32_eager_channels_last": "fp32 eager (channels-last)",
             "fp32_onnxruntime": "fp32 ONNX Runtime", "int8_onnxruntime": "int8 ONNX Runtime"}
    for threads, speed in speeds.items():
        throughput = speed[f"throughput_b{THROUGHPUT_BATCH}_img_s"]
        reference = throughput[speed["fp32_reference"][f"batch_{THROUGHPUT_BATCH}"]]
        for key, label in names.items():
            print(f"{threads:>7}  {label:<28} {speed['latency_b1_ms'][key]:>8.2f} {throughput[key]:>10.0f} {throughput[key] / reference:>17.2f}x")
        s = speed["speedup"]
        print(f"{'':>7}  int8 vs fp32 ONNX Runtime at b64: {s['b64_int8_vs_fp32_onnxruntime']:.2f}x; "
              f"b1 latency: int8 {s['b1_int8_vs_fp32_eager']:.2f}x faster than fp32 eager")
    size = report["size_bytes"]
    print(f"size: fp32 safetensors {size['fp32_safetensors'] / 1e6:.2f} MB, fp32 ONNX {size['fp32_onnx'] / 1e6:.2f} MB, "
          f"int8 ONNX {size['int8_onnx'] / 1e6:.2f} MB ({size['int8_vs_fp32_onnx']:.2f}x)")
    f = report["fidelity"]
    print(f"fp32 vs int8, {f['num_images']} identical inputs: PSNR {f['psnr_db_mean']:.2f} dB (min {f['psnr_db_min']:.2f}), "
          f"SSIM {f['ssim_mean']:.4f}, max |diff| {f['max_abs_diff']:.3f}")
    for r in report["quality"].get("metrics", []):
        print(f"{r['metric']:<12} fp32 {r['fp32']:.5g}  int8 {r['int8']:.5g}  change {r['relative_change']:+.2%}  "
              f"({r['num_generated']} generated vs {r['num_real']} real {r['reference_split']}, seed {r['latent_seed']})")
    if "skipped" in report["quality"]:
        print(f"FID/KID not measured: {report['quality']['skipped']}")
    t = report["target"]
    fid_text = "not measured" if t["fid_met"] is None else (
        f"{t['fid_metric']} {t['fid_relative_change']:+.2%} ({'ok' if t['fid_met'] else 'FAILS'}: at most +{t['max_fid_increase']:.0%})")
    print(f"target: b64 speed-up {t['speedup_b64']:.2f}x ({'ok' if t['speedup_met'] else 'FAILS'}: at least {t['speedup_b64_required']}x); "
          f"FID {fid_text} -> {'MET' if t['met'] else ('NOT MET' if t['met'] is False else 'incomplete')}")

    args.out.parent.mkdir(parents=True, exist_ok=True)
    result = {"report": report, "speed_by_threads": {str(k): v for k, v in speeds.items()}, "target": t,
              "command": " ".join(sys.argv)}
    args.out.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
