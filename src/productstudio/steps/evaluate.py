"""Step 'evaluate': FID/KID with their protocol, per category, plus domain-classifier metrics."""

from __future__ import annotations

from pathlib import Path

from productstudio import paths
from productstudio.steps.step import DEVICE, NO_MLFLOW, Arg, Step


def run(params, generator: Path, processed: Path, classifier: Path, cache: Path, out: Path, device: str,
        no_mlflow: bool) -> dict:
    from productstudio.metrics.evaluate import evaluate

    return evaluate(generator, processed, classifier, cache, out, params.evaluate, params.protocol, device=device,
                    track=not no_mlflow)


def format(report: dict) -> str:
    lines = [f"evaluation of {report['generator']} ({report['model']}), data version {report['data_version'][:12]}"]
    lines.append(f"{'metric':<34} {'value':>10} {'+-':>9}  protocol")
    for r in report["metrics"]:
        err = f"{r['std_error']:.5f}" if r.get("std_error") is not None else ""
        lines.append(f"{r['metric']:<34} {r['value']:>10.4f} {err:>9}  {r['num_generated']} generated vs {r['num_real']} real "
                     f"{r['split']}, {r['feature_network']}, {r['resize_method']}")
    d = report["domain"]
    for key in ("classifier_accuracy_generated", "classifier_accuracy_real_test", "classifier_score_generated",
                "classifier_score_real_test", "classifier_frechet_distance"):
        lines.append(f"{key:<34} {d[key]:>10.4f}")
    if d.get("per_category"):
        lines.append(f"{'per category (pipeline classifier)':<34} {'acc gen':>8} {'acc real':>9} {'variety gen/real':>17}")
        for name, c in d["per_category"].items():
            ratio = f"{c['diversity_ratio']:.2f}" if c["diversity_ratio"] is not None else "-"
            lines.append(f"  {name:<32} {c['accuracy_generated']:>8.3f} {c['accuracy_real_test']:>9.3f} {ratio:>17}")
    if report.get("reconstruction"):  # a VAE: its reconstructions of real test images
        r, p = report["reconstruction"], report["reconstruction"]["protocol"]
        lines.append(f"{'psnr_test_recon (dB)':<34} {r['psnr_test_recon']:>10.4f}            {p['num_images']} {p['reference_split']} "
                     f"images, {p['latent']}, data range {p['data_range']}")
        lines.append(f"{'ssim_test_recon':<34} {r['ssim_test_recon']:>10.4f}            {p['ssim_window']}")
    if report.get("floor"):
        f = report["floor"]
        lines.append(f"{'floor: FID real train vs test':<34} {f['fid']:>10.4f}            {f['num_a']} vs {f['num_b']} real images")
        lines.append(f"{'floor: KID real train vs test':<34} {f['kid']:>10.5f} {f['kid_std_error'] or 0:>9.5f}")
    for name, cats in report["per_category"].items():
        worst = sorted(cats.items(), key=lambda kv: -kv[1]["fid"])
        lines.append(f"per-category {name}: " + ", ".join(f"{c} {v['fid']:.1f}" for c, v in worst))
    if report.get("mlflow_run_id"):
        lines.append(f"logged to MLflow run {report['mlflow_run_id']}")
    return "\n".join(lines)


def format_comparison(reports: list[dict]) -> str:
    """Models side by side on the metrics they share (same protocol, seeds and real statistics)."""
    models = [r["model"] for r in reports]
    rows: dict[str, list] = {}
    for i, report in enumerate(reports):
        values = {m["metric"]: m["value"] for m in report["metrics"]}
        values.update({k: report["domain"][k] for k in ("classifier_accuracy_generated", "classifier_score_generated",
                                                         "classifier_frechet_distance")})
        if report.get("reconstruction"):
            values.update({k: report["reconstruction"][k] for k in ("psnr_test_recon", "ssim_test_recon")})
        for key, value in values.items():
            rows.setdefault(key, [None] * len(reports))[i] = value
    lines = ["model comparison (same seeds, same cached real statistics)", f"{'metric':<34}" + "".join(f"{m:>12}" for m in models)]
    for key, values in rows.items():
        lines.append(f"{key:<34}" + "".join(f"{v:>12.4f}" if v is not None else f"{'-':>12}" for v in values))
    return "\n".join(lines)


STEP = Step(
    name="evaluate",
    help="FID/KID with their protocol, per category, plus domain-classifier metrics; DVC metrics and MLflow",
    description="Generate evaluate.metrics' largest count of images from fixed seeds (categories in turn), "
    "compute the named metrics (e.g. fid2k_test) against the cached real features, per-category FID, the "
    "classifier's accuracy and score on generated images, and write OUT/metrics.json (DVC metrics) and "
    "OUT/evaluation.json (every number with its protocol). Logged to the training run in MLflow.",
    run=run,
    format=format,
    params=("evaluate", "protocol"),
    args=(
        Arg("--generator", "generator directory (safetensors + config.json)", paths.GENERATOR),
        Arg("--processed", "processed dataset", paths.PROCESSED),
        Arg("--classifier", "product classifier (train-classifier output)", paths.CLASSIFIER),
        Arg("--cache", "real feature cache (real-stats output), read only", paths.REAL_STATS),
        Arg("--out", "metrics.json and evaluation.json go here", paths.EVALUATION),
        DEVICE,
        NO_MLFLOW,
    ),
)
