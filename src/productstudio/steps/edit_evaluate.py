"""Step 'edit evaluate': mask IoU, MAE and boundary F of the cut-outs on the labelled set, ours vs plain u2netp."""

from __future__ import annotations

from pathlib import Path

from productstudio import paths
from productstudio.steps.step import NO_MLFLOW, Arg, Step
from productstudio.tracking import log_run


def run(params, evalset: Path, out: Path, metrics: Path | None, no_mlflow: bool) -> dict:
    from productstudio.artifacts import write_json_atomic
    from productstudio.editing.segmentation_eval import evaluate_cutouts
    from productstudio.models.pretrained import weights_dir
    from productstudio.models.salient import load_segmenter

    segmenter = load_segmenter(weights_dir("u2netp"), threads=0)
    report = evaluate_cutouts(evalset, segmenter, params.edit.cutout, out_dir=out)
    write_json_atomic(out / "metrics.json", report["summary"])
    if metrics:
        write_json_atomic(metrics, report["summary"])
    if not no_mlflow:
        flat = {f"{variant}.{key}": value for variant, values in report["summary"].items() if isinstance(values, dict)
                for key, value in values.items() if isinstance(value, (int, float))}
        report["mlflow_run_id"] = log_run("edit-evaluate", flat, {"evalset": str(evalset)},
                                                 [(out / "metrics.json", "evaluate"), (out, "evaluate")])
    return report


def format(report: dict) -> str:
    lines = ["cut-out quality on the labelled set (mask at the photo's size)"]
    for variant, values in report["summary"].items():
        if isinstance(values, dict):
            shown = ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in values.items()
                              if not isinstance(v, (dict, list)))
            lines.append(f"  {variant}: {shown}")
    if report.get("mlflow_run_id"):
        lines.append(f"logged to MLflow run {report['mlflow_run_id']}")
    return "\n".join(lines)


STEP = Step(
    name="evaluate",
    help="measure the cut-outs on the labelled set: mask IoU, MAE, boundary F, ours vs plain u2netp",
    description="Runs the background removal (edit.cutout) and the plain pretrained model on every image of the "
    "labelled set and compares their masks with the exact ones; writes metrics.json, per-image rows and a sheet of "
    "the worst cases.",
    run=run,
    format=format,
    params=("edit.cutout",),
    args=(
        Arg("--evalset", "the labelled set (edit evalset's output)", paths.EDIT_EVALSET),
        Arg("--out", "output folder", paths.EDIT_EVALUATION),
        Arg("--metrics", "also write the summary here (DVC metrics; OUT/metrics.json has it too)"),
        NO_MLFLOW,
    ),
)
