"""Commands 'registry <target>': a team MLflow server on PostgreSQL with artifacts in S3 (start, stop, status)."""

from __future__ import annotations

from pathlib import Path

from productstudio.steps.step import Arg, Step

HELP = "a registry a team can share: MLflow's tracking server on PostgreSQL, artifacts in S3 (127.0.0.1)"
DESCRIPTION = ("'registry start' runs PostgreSQL (Debian's, a cluster of its own), an S3 stand-in (moto) unless "
               "--artifacts-destination names a real bucket, and 'mlflow server --serve-artifacts' on them, all on "
               "127.0.0.1; it prints the MLFLOW_TRACKING_URI to export. 'registry stop' stops what start started; "
               "'registry status' says what runs.")

STATE_DIR = Path(".scratch/registry")
STATE = Arg("--state", "state.json, credentials (0600), logs", STATE_DIR)


def run_start(state: Path, port: int, artifacts_destination: str | None, s3_endpoint: str | None, workers: int) -> dict:
    from productstudio.deploy import team_registry

    return team_registry.start(state, port, artifacts_destination, s3_endpoint, workers)


def format_start(r: dict) -> str:
    s3, pg = r["s3"], r["postgres"]
    where = (f"{s3['artifacts']} on the local S3 stand-in (moto, {s3['endpoint']}): it keeps objects in memory, so "
             "'registry stop' drops the database with them" if s3["local"] else s3["artifacts"])
    return "\n".join([
        f"MLflow tracking server at {r['tracking_uri']}: runs and the model registry in PostgreSQL {pg['version']} "
        f"(127.0.0.1:{pg['port']}, database mlflow), artifacts in {where}",
        "clients need neither S3 nor database credentials (artifacts go through the server):",
        f"  export MLFLOW_TRACKING_URI={r['tracking_uri']}",
        f"passwords in {Path(r['state_dir']) / 'credentials.json'} (0600); logs in {Path(r['state_dir']) / 'logs'} "
        f"and {pg['log']}; stop with: productstudio registry stop --state {r['state_dir']}",
    ])


START = Step(
    name="start",
    help="start PostgreSQL, S3 (a local stand-in unless given a bucket) and the MLflow server on 127.0.0.1",
    description="Start a team MLflow tracking server on 127.0.0.1:--port: its runs and model registry in a PostgreSQL "
    "cluster of its own (Debian's binaries: make postgresql; loopback only, scram passwords generated into "
    "STATE/credentials.json), its artifacts in S3: --artifacts-destination s3://bucket/prefix (AWS credentials from "
    "the environment, --s3-endpoint for an S3-compatible service) or, by default, moto's S3 server as a local "
    "stand-in. Clients set MLFLOW_TRACKING_URI only: the server proxies artifacts (--serve-artifacts). With a real "
    "bucket the database persists across stop/start; with the stand-in (in memory) stop drops it.",
    run=run_start,
    format=format_start,
    args=(
        STATE,
        Arg("--port", "MLflow server port on 127.0.0.1 (0: a free one)", 5000, int),
        Arg("--artifacts-destination", "s3://bucket/prefix for artifacts (default: a local S3 stand-in)", type=str),
        Arg("--s3-endpoint", "endpoint URL of an S3-compatible service (MLFLOW_S3_ENDPOINT_URL)", type=str),
        Arg("--workers", "MLflow server worker processes", 1, int),
    ),
)


def run_stop(state: Path, purge: bool) -> dict:
    from productstudio.deploy import team_registry

    return team_registry.stop(state, purge)


def format_stop(r: dict) -> str:
    lines = [f"stopped: {', '.join(r['stopped'])}" if r["stopped"] else f"no team registry running from {r['state_dir']}"]
    if r["dropped"]:
        lines.append(f"dropped the database cluster {r['dropped']}")
    return "\n".join(lines)


STOP = Step(
    name="stop",
    help="stop what 'registry start' started",
    description="Stop the MLflow server, the S3 stand-in and PostgreSQL started from --state. The database cluster "
    "is kept when the artifacts went to a real bucket, unless --purge; with the in-memory stand-in it is dropped.",
    run=run_stop,
    format=format_stop,
    args=(STATE, Arg("--purge", "also drop the database cluster and its credentials", action="store_true")),
)


def run_status(state: Path, json: bool) -> dict:
    from productstudio.deploy import team_registry

    return {"status": team_registry.status(state), "json": json}


def format_status(r: dict) -> str:
    import json

    status = r["status"]
    if r["json"]:
        return json.dumps(status, indent=2)
    lines = [f"running: {status['running']}", f"tracking URI: {status.get('tracking_uri')}"]
    for name in ("mlflow", "postgres", "s3"):
        if name in status:
            lines.append(f"{name}: " + ", ".join(f"{k} {v}" for k, v in status[name].items()))
    return "\n".join(lines)


STATUS = Step(
    name="status",
    help="what runs from --state: pids, health, the tracking URI",
    description="Report whether the MLflow server, PostgreSQL and the S3 stand-in started from --state run and "
    "answer. Exits 3 when the registry is not running.",
    run=run_status,
    format=format_status,
    exit_code=lambda r: 0 if r["status"]["running"] else 3,
    args=(STATE, Arg("--json", "print JSON", action="store_true")),
)

TARGETS = (START, STOP, STATUS)
