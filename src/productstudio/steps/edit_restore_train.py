"""Step 'edit restore-train': train the learned restorer (noise + JPEG) on the photo folder's train photos."""

from __future__ import annotations

from pathlib import Path

from productstudio import paths
from productstudio.steps.step import NO_MLFLOW, Arg, Step


def run(params, photos: Path | None, out: Path, plots: Path | None, metrics: Path | None, no_mlflow: bool) -> dict:
    import shutil

    from productstudio.artifacts import write_json_atomic
    from productstudio.editing.restorer_training import train_restorer
    from productstudio.steps.training_run import log_training_run

    settings = params.edit.restorer
    if photos:
        settings = settings.model_copy(update={"source": str(photos)})
    report = train_restorer(settings, out)
    final, floor = report["final"], report["floor"]
    report["metrics"] = {**{f"val_psnr_{d}": round(final[d], 3) for d in floor},
                         **{f"val_gain_db_{d}": round(final[d] - floor[d], 3) for d in floor},
                         "val_psnr_clean": round(final["clean"], 3), "train_seconds": report["train_seconds"]}
    if plots:
        plots.mkdir(parents=True, exist_ok=True)
        for name in ("curve.csv", "loss.csv"):
            shutil.copyfile(out / name, plots / name)
    if metrics:
        write_json_atomic(metrics, report["metrics"])
    if not no_mlflow:
        # the curve's PSNR columns as val_<defect> (val_psnr_<defect> are the final metrics' names)
        curve = [{k if k in ("step", "seconds") else f"psnr_{k}": v for k, v in point.items()}
                 for point in report["curve"]]
        report["mlflow_run_id"] = log_training_run("edit-restorer", "restorer", settings, curve, report["metrics"], out,
                                                   ("restorer.safetensors", "restorer.json", "curve.csv", "loss.csv"))
    return report


def format(report: dict) -> str:
    resumed = f", resumed from step {report['resumed_from']}" if report["resumed_from"] else ""
    lines = [f"restorer trained for {report['steps']} steps ({report['train_seconds']:.0f} s of training{resumed}) "
             f"-> {report['out']}",
             f"{'defect':<10} {'damaged':>8} {'restored':>9} {'gain':>7}   (PSNR dB on validation crops)"]
    for defect, floor in report["floor"].items():
        lines.append(f"{defect:<10} {floor:>8.2f} {report['final'][defect]:>9.2f} "
                     f"{report['final'][defect] - floor:>+7.2f}")
    lines.append(f"{'clean':<10} {'-':>8} {report['final']['clean']:>9.2f}   (a clean crop through the model)")
    lines.append("the curve (PSNR against training time): curve.csv in the output folder")
    if report.get("mlflow_run_id"):
        lines.append(f"logged to MLflow run {report['mlflow_run_id']}")
    return "\n".join(lines)


STEP = Step(
    name="restore-train",
    help="train the learned restorer (a blind residual CNN for noise and JPEG artefacts) on the catalogue's photos",
    description="Random patches of the photo folder's train photos get the evaluation table's synthetic defects "
    "(edit.restorer.defects: Gaussian noise and JPEG re-encoding; some patches stay clean) and a small residual "
    "CNN learns to undo them with an L2 loss, for edit.restorer.max_steps steps (resumable from its checkpoints). "
    "Every curve_every steps it measures PSNR per defect on validation crops: curve.csv is the gain against "
    "training time. Writes restorer.safetensors + restorer.json; 'edit restore-eval --restorer DIR' puts the "
    "model in the evaluation table beside the classical baselines.",
    run=run,
    format=format,
    params=("edit.restorer",),
    args=(
        Arg("--photos", "photo folder with train/ and validation/ (default: edit.restorer.source)", type=Path),
        Arg("--out", "model folder", paths.EDIT_RESTORER),
        Arg("--plots", "also copy curve.csv and loss.csv here (DVC plots)"),
        Arg("--metrics", "also write the final validation PSNR per defect here (DVC metrics)"),
        NO_MLFLOW,
    ),
)
