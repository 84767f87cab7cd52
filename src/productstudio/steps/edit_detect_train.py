"""Step 'edit detect-train': train the learned defect detector (dust, specks, scratches) on the train photos, or with
--watermark the watermark detector (the same network on tiled text, params edit.watermark_detector)."""

from __future__ import annotations

from pathlib import Path

from productstudio import paths
from productstudio.steps.step import NO_MLFLOW, Arg, Step


def run(params, photos: Path | None, out: Path, plots: Path | None, metrics: Path | None, no_mlflow: bool,
        watermark: bool = False) -> dict:
    import shutil

    from productstudio.artifacts import write_json_atomic
    from productstudio.editing.detector_training import train_detector
    from productstudio.steps.training_run import log_training_run

    settings = params.edit.watermark_detector if watermark else params.edit.detector
    if photos:
        settings = settings.model_copy(update={"source": str(photos)})
    report = train_detector(settings, out, fill_radius=params.edit.dust_fill_radius)
    report["defects"] = list(settings.defects)
    chosen = report["validation"]
    report["metrics"] = {"val_recall": round(chosen["recall"], 4),
                         "val_visible_recall": round(chosen["visible_recall"], 4),
                         "val_false_positive_area": round(chosen["false_positive_area"], 5),
                         "val_clean_area": round(chosen["clean_area"], 5), "threshold": chosen["threshold"],
                         "min_blob": chosen["min_blob"], "train_seconds": report["train_seconds"]}
    if plots:
        plots.mkdir(parents=True, exist_ok=True)
        for name in ("curve.csv", "loss.csv", "thresholds.csv"):
            shutil.copyfile(out / name, plots / name)
    if metrics:
        write_json_atomic(metrics, report["metrics"])
    if not no_mlflow:
        report["mlflow_run_id"] = log_training_run(
            "edit-watermark-detector" if watermark else "edit-detector", "detector", settings, report["curve"], report["metrics"], out,
            ("detector.safetensors", "detector.json", "curve.csv", "loss.csv", "thresholds.csv"))
    return report


def format(report: dict) -> str:
    resumed = f", resumed from step {report['resumed_from']}" if report["resumed_from"] else ""
    what = "+".join(report.get("defects", [])) or "defect"
    lines = [f"{what} detector trained for {report['steps']} steps ({report['train_seconds']:.0f} s of training"
             f"{resumed}) -> {report['out']}",
             f"{'threshold':>9} {'min blob':>8} {'recall':>7} {'visible':>8} {'false +':>8} {'on clean':>9} "
             f"{'fill dB':>8}   "
             "(validation crops; every pair: thresholds.csv)"]
    chosen = report["validation"]
    for row in report["thresholds"]:
        if row["min_blob"] not in (1, chosen["min_blob"]):
            continue
        mark = "  <- stored" if row is chosen else ""
        lines.append(f"{row['threshold']:>9.2f} {row['min_blob']:>8d} {row['recall']:>7.3f} "
                     f"{row['visible_recall']:>8.3f} {row['false_positive_area']:>8.4f} {row['clean_area']:>9.4f} "
                     f"{row['fill_psnr']:>8.2f}{mark}")
    lines.append("recall: share of the defect's pixels found; visible: of those it changed by more than 12 levels; "
                 "false +: share of all pixels marked wrongly; min blob: smaller marked blobs are dropped; fill dB: PSNR of the "
                 "filled crops to the clean ones")
    if report.get("mlflow_run_id"):
        lines.append(f"logged to MLflow run {report['mlflow_run_id']}")
    return "\n".join(lines)


def _args(section: str, out: Path) -> tuple:
    return (Arg("--photos", f"photo folder with train/ and validation/ (default: {section}.source)", type=Path),
            Arg("--out", "model folder", out),
            Arg("--plots", "also copy curve.csv, loss.csv and thresholds.csv here (DVC plots)"),
            Arg("--metrics", "also write the validation recall and false-positive area here (DVC metrics)"),
            NO_MLFLOW)


STEP = Step(
    name="detect-train",
    help="train the learned defect detector (dust, specks, scratches -> a mask to fill) on the catalogue's photos",
    description="Regions of the photo folder's train photos get the evaluation table's synthetic dust and "
    "scratches (with their exact masks; some regions stay clean) and a small dilated CNN learns to mark them, "
    "pixel by pixel, for edit.detector.max_steps steps (resumable from its checkpoints). Its mask rule is the "
    "pair of a threshold (edit.detector.thresholds) and a smallest blob kept (edit.detector.min_blobs) that keeps "
    "edit.detector.target_recall of the defect pixels on validation crops and whose fill (radius "
    "edit.dust_fill_radius) comes closest to the clean crops. Writes detector.safetensors + detector.json; 'edit restore-eval --detector DIR' "
    "measures detect-then-fill beside inpainting with the true mask. 'edit watermark-train' trains the watermark "
    "detector the same way.",
    run=run,
    format=format,
    params=("edit.detector",),
    args=_args("edit.detector", paths.EDIT_DETECTOR),
)


def run_watermark(params, photos: Path | None, out: Path, plots: Path | None, metrics: Path | None,
                  no_mlflow: bool) -> dict:
    return run(params, photos, out, plots, metrics, no_mlflow, watermark=True)


WATERMARK_STEP = Step(
    name="watermark-train",
    help="train the learned watermark detector (tiled text -> the letters' mask; your own images only)",
    description="The detect-train recipe on the evaluation table's watermark defect (semi-transparent text tiled "
    "across regions of the train photos, with the letters' exact masks), params edit.watermark_detector "
    "(4,000 steps, about 33 minutes on 2 cores); its mask rule is chosen on validation crops the same way. "
    "Writes detector.safetensors + detector.json for 'edit restore --watermark-detector', 'edit restore-eval "
    "--watermark-detector' and 'package --task edit --watermark-detector'. Watermark removal is offered only for "
    "the merchant's own images.",
    run=run_watermark,
    format=format,
    params=("edit.watermark_detector",),
    args=_args("edit.watermark_detector", paths.EDIT_WATERMARK_DETECTOR),
)
