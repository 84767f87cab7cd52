"""Step 'quantize': an int8 generator for CPU serving, with its measured speed-up, size and quality cost."""

from __future__ import annotations

from pathlib import Path

from productstudio import paths
from productstudio.steps.step import Arg, Step


def run(params, generator: Path, processed: Path, cache: Path, out: Path, metrics: Path | None) -> dict:
    from productstudio.quantization.quantize import flat_metrics, quantize

    protocol = params.protocol
    report = quantize(generator, out, params.quantize, processed_dir=processed, cache_dir=cache,
                      seed=protocol.seed, batch_size=protocol.batch_size,
                      kid_subset_size=protocol.kid_subset_size, kid_subsets=protocol.kid_subsets,
                      progress=lambda message: print(message, flush=True))
    if metrics:
        from productstudio.artifacts import write_json_atomic

        write_json_atomic(metrics, flat_metrics(report))
    return report


def format(report: dict) -> str:
    lat, thr = report["latency_b1_ms"], report["throughput_b64_img_s"]
    names = {"fp32_eager": "fp32 eager torch", "fp32_eager_channels_last": "fp32 eager, channels-last",
             "fp32_onnxruntime": "fp32 ONNX Runtime", "int8_onnxruntime": "int8 ONNX Runtime"}
    lines = [f"int8 generator of {report['generator']} ({report['backend']}; {report['machine']['threads']} thread(s))",
             f"{'model':<28} {'b1 latency ms':>14} {'b64 images/s':>13}"]
    for key, label in names.items():
        lines.append(f"{label:<28} {lat[key]:>14.2f} {thr[key]:>13.0f}")
    s, size = report["speedup"], report["size_bytes"]
    lines.append(f"speed-up at batch 64: int8 {s['b64_int8_vs_fp32_eager']:.2f}x fp32 eager, "
                 f"{s['b64_int8_vs_fp32_onnxruntime']:.2f}x fp32 ONNX Runtime; at batch 1: {s['b1_int8_vs_fp32_eager']:.2f}x fp32 eager")
    lines.append(f"size: int8 {size['int8_onnx'] / 1e6:.2f} MB vs fp32 {size['fp32_onnx'] / 1e6:.2f} MB (ONNX)")
    f = report["fidelity"]
    lines.append(f"fp32 vs int8 on {f['num_images']} identical inputs: PSNR {f['psnr_db_mean']:.1f} dB (min {f['psnr_db_min']:.1f}), "
                 f"SSIM {f['ssim_mean']:.4f}")
    quality = report["quality"]
    for r in quality.get("metrics", []):
        lines.append(f"{r['metric']}: fp32 {r['fp32']:.4f}  int8 {r['int8']:.4f}  ({r['relative_change']:+.1%}; "
                     f"{r['num_generated']} generated vs {r['num_real']} real {r['reference_split']}, seed {r['latent_seed']})")
    if "skipped" in quality:
        lines.append(f"FID/KID not measured: {quality['skipped']}")
    if report["pruning"]["method"] != "none":
        lines.append(f"pruning {report['pruning']['method']}: {report['pruning']['zero_fraction']:.1%} of the weights are zero")
    t = report["target"]
    verdict = {True: "met", False: "NOT met", None: "FID part not measured"}[t["met"]]
    lines.append(f"target (>= {t['speedup_b64_required']}x at batch 64, FID at most {t['max_fid_increase']:.0%} worse): {verdict}")
    return "\n".join(lines)


STEP = Step(
    name="quantize",
    help="int8 generator for CPU serving (ONNX Runtime), with its measured speed-up, size and quality cost",
    description="Export the generator to ONNX, quantize it to int8 with ONNX Runtime static quantization "
    "(QDQ, calibrated on quantize.calibration_samples latents and categories; optional pruning first), and "
    "measure in the same run: latency at batch 1 and throughput at batch 64 of fp32 (eager torch, and ONNX "
    "Runtime) against int8, file sizes, PSNR/SSIM between fp32 and int8 outputs on identical inputs, and the "
    "named FID/KID metrics in quantize.metrics for both on the same seeds (protocol.seed) against the cached "
    "real features. Writes OUT/generator.int8.onnx, config.json, quantization.json (the report) and "
    "manifest.json; --metrics writes the flat numbers for DVC. Settings: params.yaml 'quantize'.",
    run=run,
    format=format,
    params=("quantize", "protocol"),
    args=(
        Arg("--generator", "fp32 generator", paths.GENERATOR),
        Arg("--processed", "processed dataset, for FID/KID", paths.PROCESSED),
        Arg("--cache", "real feature cache (real-stats output), read only", paths.REAL_STATS),
        Arg("--out", "output directory, replaced", paths.QUANTIZED),
        Arg("--metrics", "also write the flat numbers here (DVC metrics)"),
    ),
)
