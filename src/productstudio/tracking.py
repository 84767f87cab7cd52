"""MLflow tracking: a local sqlite store by default, MLFLOW_TRACKING_URI honoured, lineage tags on every run."""

from __future__ import annotations

import os
import re
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

from productstudio.errors import ServiceError

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
EXPERIMENT = "productstudio"
# MLflow's own defaults (7 retries, backoff factor 2, 120 s per request) keep a command waiting for minutes on a
# server that is down or hung. Ours: 3 tries, 8 s per request (an upload's answer included), backoff sleeps of 0 and
# 2 s (+ up to 0.5 s jitter): a dead server fails a request in ~3 s, a hung one in ~27 s. MLflow wants an int factor.
HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "8",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0.5",
}


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def bound_http() -> None:
    """Bounded retries and timeouts for every MLflow REST call (tracking, registry, proxied artifacts): the
    project's ``HTTP_DEFAULTS``, unless the user set those variables (their own setting wins). MLflow reads them
    at each request, so this must run before the first one: ``start_run`` and ``model_registry.client`` call it."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    for key, value in HTTP_DEFAULTS.items():
        os.environ.setdefault(key, value)


# What MLflow's REST client says when the server did not answer usefully (its wording, requests' and urllib3's).
_FAILURES = (("timed out", "timed out"), ("timeout", "timed out"), ("too many 5", "answered 5xx"),
             ("connection refused", "refused the connection"), ("remotedisconnected", "closed the connection"),
             ("connection aborted", "closed the connection"), ("connection reset", "reset the connection"),
             ("max retries exceeded", "did not answer"), ("failed to establish", "could not be reached"))
_ENDPOINT = re.compile(r"(?:/api/[\d.]+/mlflow/|/api/[\d.]+/mlflow-artifacts/|/mlflow-artifacts/)([\w/.-]*)")


def unreachable(error: BaseException) -> str | None:
    """How the tracking server failed (``'refused the connection on registered-models/alias'``) when ``error``
    is MLflow giving up on it: no connection, a timeout, 5xx after the retries. None for any other error (a
    missing model, a bad request): those keep their meaning."""
    import requests

    chain, seen = [], error
    while seen is not None and len(chain) < 10:
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    text = " ".join(str(e) for e in chain)
    lowered = text.lower()
    network = any(isinstance(e, (requests.ConnectionError, requests.Timeout, requests.exceptions.RetryError,
                                 requests.exceptions.ChunkedEncodingError, ConnectionError, TimeoutError)) for e in chain)
    status = re.search(r"failed with error code (5\d\d)", text)
    if not (network or status or "api request to" in lowered):
        return None
    what = next((said for needle, said in _FAILURES if needle in lowered), None)
    if status:
        what = f"answered HTTP {status[1]}"
    if what is None:
        return None  # an MLflow API error that is not about reaching the server
    endpoint = _ENDPOINT.search(text)
    return f"{what} on {endpoint[1]}" if endpoint else what


def server_error(error: BaseException, doing: str = "", intact: str = "") -> ServiceError | None:
    """The one line for MLflow giving up on the server (``unreachable``): the URI, what failed, the tries, what
    was being done and what is intact; None for any other error."""
    what = unreachable(error)
    if what is None:
        return None
    tries = int(os.environ.get("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "7")) + 1
    timeout = os.environ.get("MLFLOW_HTTP_REQUEST_TIMEOUT", "120")
    tried = f"{tries} tries of up to {timeout} s each" if tries > 1 else f"1 try of up to {timeout} s"
    return ServiceError(f"MLflow server {tracking_uri()} {what} ({tried}{doing})"
                        f"{'; ' + intact if intact else ''}; run it again once the server answers")


@contextmanager
def server_calls(doing: str, intact: str = ""):
    """Turn the tracking server failing (``unreachable``) into one line, a ``ServiceError`` (``server_error``);
    ``doing`` names the work, ``intact`` says what state the registry is left in."""
    start = time.monotonic()
    try:
        yield
    except Exception as error:
        one_line = server_error(error, f"; {doing} stopped after {time.monotonic() - start:.0f} s", intact)
        if one_line is None:
            raise
        raise one_line from None


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--verify", "-q", "HEAD"], capture_output=True, text=True, timeout=5)
        # A repository without commits (or no git at all): not a commit id.
        return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def start_run(run_name: str, run_id: str | None = None, tags: dict | None = None):
    """Start (or resume, with run_id) an MLflow run against the configured store."""
    bound_http()
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
