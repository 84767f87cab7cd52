"""Step 'train': the class-conditional GAN (or the CVAE baseline); resumes after an interruption."""

from __future__ import annotations

from pathlib import Path

from productstudio import paths
from productstudio.steps.step import DEVICE, NO_MLFLOW, Arg, Step


def run(params, processed: Path, out: Path, plots: Path, device: str, no_mlflow: bool, baseline: bool,
        real_stats: Path | None) -> dict:
    from productstudio.training.loop import train

    settings = params.baseline_train if baseline else params.train
    manifest = train(settings, processed, out, plots, device=device, track=not no_mlflow, real_stats_dir=real_stats)
    return {"manifest": manifest, "out": out}


def format(result: dict) -> str:
    manifest, out = result["manifest"], result["out"]
    if "rank" in manifest:
        return ""  # under torchrun rank 0 reports for all
    s = manifest["summary"]
    lines = [f"trained {manifest['params']['model']} for {s['steps']} steps in {s['minutes']:.1f} min (stopped by {s['stopped_by']})",
             f"generator: {out}/generator   sample grid: {out}/{manifest['sample_grid']}"]
    if manifest.get("mlflow_run_id"):
        from productstudio.tracking import tracking_uri

        lines.append(f"MLflow run {manifest['mlflow_run_id']} in {tracking_uri()} (mlflow ui --backend-store-uri {tracking_uri()})")
    return "\n".join(lines)


STEP = Step(
    name="train",
    help="train the class-conditional GAN (or the CVAE baseline); resumes after an interruption",
    description="Train on the processed train split with params.yaml 'train' for train.max_steps steps (a step "
    "budget: the same data, params and code give the same weights on a busy machine or a quiet one; the learning "
    "rates fall linearly to zero over the last train.lr_decay share). train.max_minutes is an optional guard: "
    "reaching it first stops with an error and keeps the checkpoint. Checkpoints are atomic and rotated under "
    "OUT/checkpoints; running the same command again continues from the newest one. Logs params, loss curves, sample grids (one row per category) and "
    "the final generator to MLflow (MLFLOW_TRACKING_URI, default sqlite:///mlflow.db), and the loss curve "
    "as a CSV for 'dvc plots'.\n\n"
    "Data-parallel (PyTorch DDP; gloo on CPUs, NCCL on GPUs): start it under torchrun, e.g.\n"
    "  torchrun --nproc_per_node=2 --master_addr=127.0.0.1 --master_port=29500 $(which productstudio) train\n"
    "train.batch_size stays the global batch (each of N processes takes batch_size/N) and the learning rates "
    "stay as they are; rank 0 alone writes checkpoints, logs, samples and the generator.",
    run=run,
    format=format,
    params=("train",),  # with --baseline also 'baseline' (its DVC stage declares both)
    args=(
        Arg("--processed", "processed dataset", paths.PROCESSED),
        Arg("--out", "checkpoints, samples, generator", paths.TRAIN),
        Arg("--plots", "loss curve CSV for dvc plots", paths.TRAIN_REPORTS),
        DEVICE,
        NO_MLFLOW,
        Arg("--baseline", "train the baseline instead: params.yaml 'train' overlaid with 'baseline' (default: a CVAE, 600 steps)",
            action="store_true"),
        Arg("--real-stats", "the real_stats stage's feature cache: measure KID every train.kid_every steps "
            "(time-to-quality curve)"),
    ),
)
