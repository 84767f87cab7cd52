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
    report = evaluate_cutouts(evalset, segmenter, params.edit.cutout, out_dir=out, gates=params.edit.gates)
    write_json_atomic(out / "metrics.json", report["summary"])
    if metrics:
        write_json_atomic(metrics, report["summary"])
    if not no_mlflow:
        flat = {f"{variant}.{key}": value for variant, values in report["summary"].items()
                if variant in ("ours", "plain", "gates") for key, value in values.items() if isinstance(value, (int, float))}
        report["mlflow_run_id"] = log_run("edit-evaluate", flat, {"evalset": str(evalset)},
                                                 [(out / "metrics.json", "evaluate"), (out, "evaluate")])
    return report


def format(report: dict) -> str:
    summary = report["summary"]
    lines = [f"cut-out quality on the labelled set {summary['evalset']} ({summary['ours']['count']} images, mask at the "
             f"photo's size; floor IoU {summary['iou_floor']})",
             f"{'':<8}{'IoU mean':>10}{'IoU min':>10}{'IoU p10':>10}{'MAE':>10}{'bound. F':>10}{'< floor':>9}"]
    for variant in ("ours", "plain"):
        v = summary[variant]
        lines.append(f"{variant:<8}{v['iou_mean']:>10.4f}{v['iou_min']:>10.4f}{v['iou_p10']:>10.4f}{v['mae_mean']:>10.4f}"
                     f"{v['boundary_f_mean']:>10.4f}{v['below_floor']:>9}")
    for case, values in summary.get("cases", {}).items():
        lines.append(f"  {case:<22} ours IoU mean {values['ours']['iou_mean']:.4f} min {values['ours']['iou_min']:.4f}"
                     f" | plain mean {values['plain']['iou_mean']:.4f} min {values['plain']['iou_min']:.4f}")
    g = summary.get("gates")
    if g:
        lines.append(f"gates: refused {g['ours_bad_refused']}/{g['ours_bad']} of our cut-outs under the floor and "
                     f"{g['ours_good_refused']}/{g['ours_good']} good ones; {g['plain_bad_refused']}/{g['plain_bad']} of "
                     f"plain u2netp's bad ones; accepted cut-outs: {g['accepted']}, IoU mean "
                     f"{g['accepted_iou_mean'] or 0:.4f}, min {g['accepted_iou_min'] or 0:.4f}")
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
    params=("edit.cutout", "edit.gates"),
    args=(
        Arg("--evalset", "the labelled set (edit evalset's output)", paths.EDIT_EVALSET),
        Arg("--out", "output folder", paths.EDIT_EVALUATION),
        Arg("--metrics", "also write the summary here (DVC metrics; OUT/metrics.json has it too)"),
        NO_MLFLOW,
    ),
)
