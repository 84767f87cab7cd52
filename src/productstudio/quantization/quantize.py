"""int8 post-training quantization (and optional pruning) of the generator, with the quality check beside
the speed check.

    from productstudio.quantization.quantize import quantize
    from productstudio.models.loader import load
    report = quantize("models/train/generator", "models/quantized", params.quantize,
                      processed_dir="data/processed", cache_dir="models/real_stats")
    model, info = load("models/quantized")   # model(z, y) -> images in [-1, 1], like Generator

The flow (``quantize``): optional pruning of a copy of the generator -> export to ONNX (dynamic batch,
checked against the module) -> ONNX Runtime static quantization, QDQ format, calibrated on latents and
categories drawn as serving draws them -> in the same run, the measured cost and benefit: latency at
batch 1 and throughput at batch 64 of fp32 (eager torch as served today, the faster of NCHW and
channels-last; and fp32 in ONNX Runtime, so the int8 gain is not confused with the change of runtime)
against int8, the file sizes, PSNR/SSIM between fp32 and int8 outputs on identical inputs, and named
FID/KID metrics of both on the same seeds against the cached real features.

``out_dir`` holds ``generator.int8.onnx`` (what ``models.onnx_generator.load_quantized`` serves), ``generator.fp32.onnx``,
``config.json`` (the generator's config.json plus a ``quantization`` entry), ``quantization.json`` (the
report) and ``manifest.json``. ONNX files are protobuf and JSON is JSON: nothing here unpickles.
"""

from __future__ import annotations

import math
import os
import platform
from collections.abc import Callable
from pathlib import Path

from productstudio import paths
from productstudio.artifacts import read_manifest, sha256_file, staged_directory, write_json_atomic, write_manifest
from productstudio.config import QuantizeSettings, section_dict
from productstudio.errors import ParamsError
from productstudio.imaging import to_uint8_array
from productstudio.models.io import CONFIG, WEIGHTS, load_generator
from productstudio.models.onnx_generator import INT8_FILE, OnnxGenerator, load_quantized
from productstudio.quantization.measure import THROUGHPUT_BATCH, fidelity, paired_outputs, speed_report
from productstudio.quantization.onnx_model import export_onnx
from productstudio.quantization.prune import prune_generator

KIND = "quantized-generator"  # the manifest's kind; config.json's "quantization" entry is what models.loader reads
FP32_FILE = "generator.fp32.onnx"
REPORT = "quantization.json"


def quantize(
    generator_dir: str | Path,
    out_dir: str | Path,
    settings: QuantizeSettings,
    *,
    processed_dir: str | Path | None = None,
    cache_dir: str | Path | None = None,
    seed: int = 1234,
    batch_size: int = 50,
    kid_subset_size: int = 1000,
    kid_subsets: int = 50,
    progress: Callable[[str], None] | None = None,
    features_dir: str | Path = paths.GENERATED_FEATURES,
) -> dict:
    """Quantize the generator in ``generator_dir`` into ``out_dir`` and measure it (see the module doc).

    ``processed_dir`` and ``cache_dir`` (the real_stats output) are needed for ``settings.metrics``;
    without them FID/KID are skipped and the report says so. ``seed`` and ``batch_size``: the latents
    and batch size of the quality check (``protocol.seed``: the same inputs the evaluate step uses).
    ``features_dir``: the generated-features cache shared with evaluate and promote (fp32 and int8).
    """
    say = progress or (lambda message: None)
    generator_dir, out = Path(generator_dir), Path(out_dir)
    fp32, info = load_generator(generator_dir, "cpu")
    # Read what describes the input now: training may replace the generator while this runs for minutes.
    weights_sha256, weights_size = sha256_file(generator_dir / WEIGHTS), (generator_dir / WEIGHTS).stat().st_size
    trained = generator_dir.parent / "manifest.json"
    run_id = read_manifest(generator_dir.parent).get("mlflow_run_id") if trained.exists() else None
    if out.exists() and any(out.iterdir()):
        ours = {INT8_FILE, FP32_FILE, CONFIG, REPORT, "manifest.json"}  # a previous run's files
        if not {p.name for p in out.iterdir()} <= ours:
            raise ParamsError(f"{out} holds other files: refusing to replace it (give an empty or new directory)")

    # Built beside out and swapped in whole at the end: until then (minutes of measuring) the previous int8 model
    # stays servable, and a full disk or a failure half-way leaves it as it was.
    with staged_directory(out) as work:
        candidate, pruning = prune_generator(fp32, settings.prune, settings.prune_amount)
        if settings.prune != "none":
            say(f"pruned ({settings.prune}, amount {settings.prune_amount}): {pruning['zero_fraction']:.1%} of the weights are zero")
        say("exporting to ONNX (torch.export, dynamic batch) and checking it against the module ...")
        export_onnx(candidate, work / FP32_FILE)
        say(f"quantizing to int8 (ONNX Runtime static, QDQ), calibrated on {settings.calibration_samples} latents ...")
        from productstudio.quantization.int8 import quantize_onnx

        quantize_onnx(work / FP32_FILE, work / INT8_FILE, fp32.config, settings)
        int8 = OnnxGenerator(work / INT8_FILE, info, threads=settings.threads)

        say(f"timing fp32 vs int8 at batch 1 and {THROUGHPUT_BATCH} ({settings.threads or 'all'} thread(s), {settings.timing_rounds} interleaved rounds) ...")
        speed = speed_report(fp32, work / FP32_FILE, int8, info, settings.threads, settings.timing_rounds)

        count = max([settings.psnr_samples] + [_spec(name).num_generated for name in settings.metrics])
        say(f"comparing outputs on {count} identical inputs (seed {seed}) ...")
        outputs = paired_outputs({"fp32": fp32, "int8": int8}, fp32.config, count, seed, batch_size)
        report_fidelity = {**fidelity(outputs["fp32"], outputs["int8"]), "seed": seed}

        weights = {"fp32": weights_sha256, "int8": sha256_file(work / INT8_FILE)}
        quality = _quality(outputs, weights, settings, processed_dir, cache_dir, features_dir, seed, batch_size,
                           kid_subset_size, kid_subsets, say)

        sizes = {
            "fp32_safetensors": weights_size,
            "fp32_onnx": (work / FP32_FILE).stat().st_size,
            "int8_onnx": (work / INT8_FILE).stat().st_size,
        }
        sizes["int8_vs_fp32_onnx"] = sizes["int8_onnx"] / sizes["fp32_onnx"]
        report = {
            "generator": str(generator_dir),
            "model": info["model"],
            "backend": _backend(),
            "settings": section_dict(settings),
            "machine": {"cpu": _cpu_name(), "cores": os.cpu_count(), "threads": settings.threads or os.cpu_count()},
            **speed,
            "size_bytes": sizes,
            "fidelity": report_fidelity,
            "quality": quality,
            "pruning": pruning,
            "target": _target(speed, quality, settings),
            "files": {"int8": INT8_FILE, "fp32": FP32_FILE},
        }
        write_json_atomic(work / REPORT, report)
        write_json_atomic(work / CONFIG, {**info, "quantization": {"format": "onnx-qdq-int8", "file": INT8_FILE,
                                                                 "backend": report["backend"], "settings": report["settings"]}})
        write_manifest(
            work, KIND,
            inputs={"generator_sha256": weights_sha256, "mlflow_run_id": run_id},
            params=section_dict(settings),
            int8_sha256=sha256_file(work / INT8_FILE),
        )
        return report


def _spec(name: str):
    from productstudio.metric_names import parse_metric

    return parse_metric(name)


def _quality(outputs, weights, settings, processed_dir, cache_dir, features_dir, seed, batch_size, kid_subset_size,
             kid_subsets, say) -> dict:
    """Named FID/KID of the fp32 and the int8 images (identical inputs) against the same real features.

    The images are the evaluate step's generated set (same seed and batches), so their features come from,
    and go to, the generated-features cache that evaluate and promote use too."""
    if not settings.metrics:
        return {"skipped": "quantize.metrics is empty"}
    if processed_dir is None or cache_dir is None:
        return {"skipped": "no processed dataset / real-feature cache given"}
    from productstudio.metrics.engine import MetricOptions, calc_metric
    from productstudio.metrics.fid import fid_from_features
    from productstudio.metrics.generated_features import GeneratedFeatures, array_batches
    from productstudio.metrics.real_features import RealFeatures

    # Real counts the real_stats output lacks go to a private cache: that directory belongs to its own stage.
    real = RealFeatures(processed_dir, cache_dir, Path(features_dir) / "real", batch_size=batch_size)
    cache = GeneratedFeatures(features_dir, device="cpu", batch_size=batch_size)
    largest = max(_spec(name).num_generated for name in settings.metrics)
    generated = {}
    for name in ("fp32", "int8"):
        images = to_uint8_array(outputs[name][:largest])
        key = cache.key(weights[name], seed)
        missing = cache.missing(key, largest)
        say(f"Inception features of {missing} {name} images (about 7 images/s on 2 CPU cores) ..." if missing
            else f"Inception features of {largest} {name} images: from {features_dir}")
        generated[name] = cache.features(key, largest, array_batches(images, batch_size))
    records = []
    for name in settings.metrics:
        spec = _spec(name)
        values, record = {}, None
        for variant in ("fp32", "int8"):
            # the same KID settings as evaluate (the engine caps the subset size by the set sizes)
            opts = MetricOptions(generated=lambda n, f=generated[variant]: f[:n], real=real.features,
                                 kid_subset_size=kid_subset_size, kid_subsets=kid_subsets, seed=seed)
            record = calc_metric(name, opts)
            values[variant] = record["value"]
        change = (values["int8"] - values["fp32"]) / abs(values["fp32"]) if values["fp32"] else math.nan
        records.append({"metric": name, "kind": spec.kind, "fp32": values["fp32"], "int8": values["int8"],
                        "relative_change": change, "num_generated": int(spec.num_generated), "latent_seed": seed,
                        "reference_split": spec.split, **record["protocol"]})
    between = fid_from_features(generated["fp32"], generated["int8"])
    return {"metrics": records, "fid_fp32_vs_int8": between, "fid_fp32_vs_int8_num": int(largest),
            "note": "same latents and categories for both; FID at small counts is biased upwards, so read the relative change"}


def _target(speed: dict, quality: dict, settings: QuantizeSettings) -> dict:
    speedup = speed["speedup"][f"b{THROUGHPUT_BATCH}_int8_vs_fp32_eager"]
    fids = [r for r in quality.get("metrics", []) if r["kind"] == "fid"]
    fid_change = fids[0]["relative_change"] if fids else None
    speed_met = speedup >= settings.target_speedup
    fid_met = None if fid_change is None else fid_change <= settings.max_fid_increase
    return {
        "speedup_b64_required": settings.target_speedup, "speedup_b64": speedup, "speedup_met": speed_met,
        "max_fid_increase": settings.max_fid_increase, "fid_relative_change": fid_change, "fid_met": fid_met,
        "fid_metric": fids[0]["metric"] if fids else None,
        "met": speed_met and bool(fid_met) if fid_met is not None else None,
    }


def flat_metrics(report: dict) -> dict:
    """The numbers DVC tracks (reports/quantize/metrics.json)."""
    t = report[f"throughput_b{THROUGHPUT_BATCH}_img_s"]
    flat = {
        "latency_b1_ms_fp32_eager": min(report["latency_b1_ms"]["fp32_eager"], report["latency_b1_ms"]["fp32_eager_channels_last"]),
        "latency_b1_ms_fp32_onnxruntime": report["latency_b1_ms"]["fp32_onnxruntime"],
        "latency_b1_ms_int8": report["latency_b1_ms"]["int8_onnxruntime"],
        f"throughput_b{THROUGHPUT_BATCH}_fp32_eager": max(t["fp32_eager"], t["fp32_eager_channels_last"]),
        f"throughput_b{THROUGHPUT_BATCH}_fp32_onnxruntime": t["fp32_onnxruntime"],
        f"throughput_b{THROUGHPUT_BATCH}_int8": t["int8_onnxruntime"],
        **{f"speedup_{k}": v for k, v in report["speedup"].items()},
        "size_mb_fp32_onnx": report["size_bytes"]["fp32_onnx"] / 1e6,
        "size_mb_int8_onnx": report["size_bytes"]["int8_onnx"] / 1e6,
        "psnr_db_fp32_vs_int8": report["fidelity"]["psnr_db_mean"],
        "ssim_fp32_vs_int8": report["fidelity"]["ssim_mean"],
        "target_met": report["target"]["met"],
    }
    for record in report["quality"].get("metrics", []):
        flat[f"{record['metric']}_fp32"] = record["fp32"]
        flat[f"{record['metric']}_int8"] = record["int8"]
        flat[f"{record['metric']}_relative_change"] = record["relative_change"]
    return flat


def _backend() -> str:
    import onnxruntime

    return f"onnxruntime {onnxruntime.__version__} static int8 (QDQ), CPUExecutionProvider"


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


__all__ = ["INT8_FILE", "KIND", "OnnxGenerator", "export_onnx", "flat_metrics", "load_quantized", "prune_generator", "quantize"]
