"""MLflow tracking: a local sqlite store by default, MLFLOW_TRACKING_URI honoured, lineage tags on every run."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
EXPERIMENT = "productstudio"


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--verify", "-q", "HEAD"], capture_output=True, text=True, timeout=5)
        # A repository without commits (or no git at all): not a commit id.
        return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def start_run(run_name: str, run_id: str | None = None, tags: dict | None = None):
    """Start (or resume, with run_id) an MLflow run against the configured store."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    import mlflow

    mlflow.set_tracking_uri(tracking_uri())
    if run_id is None:
        mlflow.set_experiment(EXPERIMENT)
        return mlflow.start_run(run_name=run_name, tags=tags)
    return mlflow.start_run(run_id=run_id)


def flatten(prefix: str, data: dict) -> dict:
    out = {}
    for key, value in data.items():
        name = f"{prefix}.{key}" if prefix else key
        out.update(flatten(name, value) if isinstance(value, dict) else {name: value})
    return out


def log_run(run_name: str, metrics: dict, params: dict, artifacts: list, tags: dict | None = None) -> str:
    """One finished MLflow run: params, numeric metrics and (path, artifact folder) pairs; returns its id."""
    import mlflow

    with start_run(run_name, tags={"git_commit": git_commit(), **(tags or {})}) as run:
        mlflow.log_params(params)
        mlflow.log_metrics({key: float(value) for key, value in metrics.items()
                            if isinstance(value, (int, float)) and not isinstance(value, bool)})
        for path, folder in artifacts:
            path = Path(path)
            if path.is_dir():
                mlflow.log_artifacts(str(path), folder)
            elif path.is_file():
                mlflow.log_artifact(str(path), folder)
        return run.info.run_id
