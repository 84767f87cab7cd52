"""Step 'edit restore-eval': the evaluation table of restoration and enhancement, every defect x every method."""

from __future__ import annotations

from pathlib import Path

from productstudio import paths
from productstudio.steps.step import NO_MLFLOW, Arg, Step
from productstudio.tracking import log_run


def run(params, photos: Path | None, out: Path, defects: str | None, restorer: Path | None, detector: Path | None,
        metrics: Path | None, no_mlflow: bool, watermark_detector: Path | None = None) -> dict:
    from productstudio.artifacts import write_json_atomic
    from productstudio.editing.defects import DEFECTS
    from productstudio.editing.restoration_eval import (detect_and_fill_method, evaluate_restoration,
                                                         gated_method, learned_method, learned_watermark_method,
                                                         ocr_watermark_method)
    from productstudio.errors import ParamsError
    from productstudio.models.pretrained import weights_dir
    from productstudio.models.salient import load_segmenter

    settings = params.edit.restore_eval
    names = [name.strip() for name in defects.split(",") if name.strip()] if defects else None
    unknown = [name for name in names or [] if name not in DEFECTS]
    if unknown:
        raise ParamsError(f"unknown defect {', '.join(unknown)}: choose from {', '.join(DEFECTS)}")
    segmenter = load_segmenter(weights_dir("u2netp"), threads=0)
    learned = []
    if restorer:
        from productstudio.models.restorer import load_restorer

        model = load_restorer(restorer)
        learned += [learned_method(model), gated_method(model, params.edit.restore_gate)]
    found = None
    if detector:
        from productstudio.models.defect_detector import load_detector

        found = load_detector(detector)
        learned.append(detect_and_fill_method(*found))
    baselines, watermark_found = [], None
    if names is None or "watermark" in names:
        from productstudio.models.text_detector import load_text_detector

        baselines.append(ocr_watermark_method(load_text_detector(weights_dir("ppocr-det"), threads=0)))
    if watermark_detector:
        from productstudio.editing.watermark import load_watermark_detector

        watermark_found = load_watermark_detector(watermark_detector)
        learned.append(learned_watermark_method(*watermark_found))
    report = evaluate_restoration(photos or Path(settings.source), out, settings, segmenter, params.edit.cutout,
                                  defects=names, learned=learned, detector=found,
                                  restore_gate=params.edit.restore_gate if restorer else None,
                                  watermark_detector=watermark_found, baselines=baselines)
    if metrics:
        write_json_atomic(metrics, report["metrics"])
    if not no_mlflow:
        report["mlflow_run_id"] = log_run(
            "edit-restore-eval", report["metrics"],
            {"photos": report["photos"], "crop": settings.crop, "test_crops": len(report["test_crops"]),
             "tune_crops": len(report["tune_crops"]), "seed": settings.seed},
            [(out / "table.md", "restore_eval"), (out / "rows.json", "restore_eval"),
             (out / "examples.png", "restore_eval")])
    return report


def format(report: dict) -> str:
    lines = [f"{len(report['test_crops'])} test crops ({report['settings']['crop']} px) from {report['photos']}/test, "
             f"parameters tuned on {len(report['tune_crops'])} train/validation crops",
             f"{'defect':<10} {'best method':<24} {'PSNR':>7} {'SSIM':>7} {'gain':>7} {'none':>7} "
             f"{'clean PSNR':>11} {'dE00':>6}"]
    for row in report["rows"]:
        if row["best"]:
            floor = row["psnr"] - row["gain_db"]
            lines.append(f"{row['defect']:<10} {row['method']:<24} {row['psnr']:>7.2f} {row['ssim']:>7.4f} "
                         f"{row['gain_db']:>+7.2f} {floor:>7.2f} {str(row['clean_psnr']):>11} "
                         f"{row['clean_delta_e']:>6.2f}")
    if report.get("restore_gate"):
        shares = report["restore_gate"]["test_crops"]
        lines.append("the restorer's gate sends to the restorer: " + ", ".join(
            f"{name} {share['restored']:.0%}" for name, share in shares.items()))
    learned_watermark = "learned watermark detector (repeats averaged, the letters read over them)"
    for key, what in (("detector", "defect detector"), ("watermark_detector", learned_watermark)):
        if report.get(key):
            d = report[key]
            lines.append(f"{what} (threshold {d['threshold']}, blobs of at least {d.get('min_blob', 1)} px) on the "
                         f"{d['defect']} test crops: recall {d['recall']:.3f}, visible recall {d['visible_recall']:.3f}, "
                         f"false-positive area {d['false_positive_area']:.4f}; on clean crops it marks "
                         f"{d['clean_area']:.4f} of the pixels")
    lines.append("every method of every defect: table.md and rows.json in the output folder")
    if report.get("mlflow_run_id"):
        lines.append(f"logged to MLflow run {report['mlflow_run_id']}")
    return "\n".join(lines)


STEP = Step(
    name="restore-eval",
    help="the restoration/enhancement table: synthetic defects x classical baselines, tuned, with harm on clean input",
    description="Centre crops of the photo folder's test photos get seeded synthetic defects (Gaussian noise sigma "
    "15/25/50, JPEG quality 10/20/30, dust and scratches, a text watermark, a colour cast, under-exposure). Every "
    "classical method of the defect's family (bilateral, non-local means, median, Gaussian, inpainting with the "
    "true or a detected mask, gray-world / white-patch / shades-of-gray, auto-levels, CLAHE, unsharp mask) is "
    "tuned on train/validation crops and measured on the test crops: PSNR, SSIM, the change it makes to a clean "
    "crop (PSNR and CIEDE2000 inside the product) and milliseconds per megapixel. The learned restorer (blind, "
    "and behind the gate that leaves clean photos alone: edit.restore_gate) and the defect detector join their "
    "rows when given; the watermark rows always hold the OCR detector's text boxes un-blended (the served default) "
    "and, when given, the learned watermark detector's mask un-blended (watermark removal is for the merchant's own "
    "images only). Writes table.md, rows.json, metrics.json and examples.png.",
    run=run,
    format=format,
    params=("edit.restore_eval", "edit.cutout", "edit.restore_gate"),
    args=(
        Arg("--photos", "photo folder with train/validation/test (default: edit.restore_eval.source)", type=Path),
        Arg("--out", "output folder", paths.EDIT_RESTORE_EVAL),
        Arg("--defects", "comma-separated defects (default: all): noise15,noise25,noise50,jpeg10,jpeg20,jpeg30,"
            "dust,watermark,cast,exposure", type=str),
        Arg("--restorer", "also measure this trained restorer ('edit restore-train' output folder) beside the "
            "classical methods of the noise and JPEG rows"),
        Arg("--detector", "also measure this trained defect detector ('edit detect-train' output folder): its "
            "recall and false-positive area, and detect-then-fill beside inpainting with the true mask"),
        Arg("--watermark-detector", "also measure this learned watermark detector ('edit watermark-train'): its "
            "mask's recall (repeat-averaged, the letters read over the repeats) "
            "and false-positive area, and the photo un-blended with it beside the OCR boxes and the true mask"),
        Arg("--metrics", "also write the best PSNR per defect here (DVC metrics)"),
        NO_MLFLOW,
    ),
)
