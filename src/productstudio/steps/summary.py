"""Command 'summary': what the main job produced and where to look."""

from __future__ import annotations

import json
from pathlib import Path

from productstudio import paths
from productstudio.steps import evaluate, quantize
from productstudio.steps.step import Arg, Step


def run(processed: Path, validation: Path, models: Path, evaluation: Path, baseline_evaluation: Path,
        quantized: Path) -> dict:
    from productstudio.artifacts import read_manifest
    from productstudio.data.store import KIND

    def report(directory: Path, name: str):
        path = directory / name
        return json.loads(path.read_text()) if path.exists() else None

    trained = models / "manifest.json"
    return {
        "processed": processed, "validation": validation, "models": models, "evaluation": evaluation,
        "baseline_evaluation": baseline_evaluation, "quantized": quantized,
        "dataset": read_manifest(processed, KIND),
        "trained": read_manifest(models) if trained.exists() else None,
        "evaluation_report": report(evaluation, "evaluation.json"),
        "baseline_report": report(baseline_evaluation, "evaluation.json"),
        "quantization_report": report(quantized, "quantization.json"),
    }


def format(r: dict) -> str:
    from productstudio.data.store import SPLITS

    manifest = r["dataset"]
    lines = [f"\nProduct Studio: {r['processed']} is ready ({', '.join(manifest['categories'])})",
             f"{'split':<6} {'images':>7}  per category"]
    for split in SPLITS:
        info = manifest["splits"][split]
        lines.append(f"{split:<6} {info['count']:>7}  {json.dumps(info['per_category'])}")
    lines.append(f"validation report: {r['validation']}/report.json   data docs: {r['validation']}/data_docs/index.html")
    if r["trained"]:
        trained = r["trained"]
        s = trained["summary"]
        lines.append(f"\ntrained {trained['params']['model']}: {s['steps']} steps in {s['minutes']:.1f} min "
                     f"(stopped by {s['stopped_by']}); sample grid: {r['models'] / trained['sample_grid']}")
        if trained.get("mlflow_run_id"):
            from productstudio.tracking import tracking_uri

            lines.append(f"MLflow run {trained['mlflow_run_id']}: mlflow ui --backend-store-uri {tracking_uri()}")
    if r["evaluation_report"]:
        lines += ["", evaluate.format(r["evaluation_report"]),
                  f"metrics: {r['evaluation'] / 'metrics.json'} (dvc metrics show); curves: dvc plots show"]
        if r["baseline_report"]:
            lines += ["", evaluate.format_comparison([r["evaluation_report"], r["baseline_report"]]),
                      f"baseline details: {r['baseline_evaluation'] / 'evaluation.json'}"]
    if r["quantization_report"]:
        lines += ["", quantize.format(r["quantization_report"]),
                  f"int8 model: {r['quantized'] / 'generator.int8.onnx'} (productstudio.models.loader.load)"]
    return "\n".join(lines)


STEP = Step(
    name="summary",
    help="print what the main job produced and where to look",
    description="Reads the main job's outputs (dataset manifest, validation report, training manifest, evaluation "
    "of the GAN and the baseline, quantization report) and prints them with the paths to open.",
    run=run,
    format=format,
    args=(
        Arg("--processed", "processed dataset", paths.PROCESSED),
        Arg("--validation", "validation report directory", paths.VALIDATION),
        Arg("--models", "training output directory", paths.TRAIN),
        Arg("--evaluation", "the GAN's evaluation", paths.EVALUATION),
        Arg("--baseline-evaluation", "the baseline's evaluation", paths.BASELINE_EVALUATION),
        Arg("--quantized", "int8 generator directory", paths.QUANTIZED),
    ),
)
