"""The MLflow run of a learned editor's training (restorer, defect detector): settings, curve, final metrics, files."""

from __future__ import annotations

from pathlib import Path


def log_training_run(run_name: str, kind: str, settings, curve: list[dict], metrics: dict, out: Path,
                     files: tuple[str, ...]) -> str:
    """One run: the settings as params, each curve point as step-indexed metrics ``val_<column>`` with its
    ``train_seconds`` (so MLflow draws the gain against training time), the final metrics, and ``files`` of
    ``out`` under the artifact folder ``kind``. Returns the run's id."""
    import mlflow

    from productstudio.tracking import git_commit, start_run

    with start_run(run_name, tags={"git_commit": git_commit(), "kind": kind}) as run:
        mlflow.log_params({k: str(v) for k, v in settings.model_dump().items()})
        for point in curve:
            step = int(point["step"])
            mlflow.log_metrics({f"val_{k}": float(v) for k, v in point.items() if k not in ("step", "seconds")},
                               step=step)
            mlflow.log_metric("train_seconds", float(point["seconds"]), step=step)
        mlflow.log_metrics({k: float(v) for k, v in metrics.items()})
        for name in files:
            mlflow.log_artifact(str(out / name), kind)
        return run.info.run_id
