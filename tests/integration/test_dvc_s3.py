"""DVC data on S3 for real: the pipeline's data pushed to an S3 remote on a local S3 server (moto, 127.0.0.1),
pulled byte for byte into a fresh clone, and ``retrain --if-changed`` on a fresh clone pulling the data
version it needs (and nothing else) instead of retraining; a failed pull is one line naming the remote.

Only ingest -> validate -> preprocess run, on 10 images per category: no training anywhere. The registered
version that the fresh clone compares against is made directly in a sqlite MLflow store, tagged with the
pushed data version and params hash, as ``register`` would tag it.
"""

import hashlib
import logging
import socket
import subprocess
import sys
from pathlib import Path

import boto3
import pytest
import yaml

from productstudio.config import load_params
from productstudio.data.remote import add_s3_remote
from productstudio.registry.model_registry import params_hash
from tests.integration.test_dvc_pipeline import _run, project  # noqa: F401  (project: the throwaway git + DVC project)

pytestmark = pytest.mark.slow
BUCKET = "dvc-store"
KEYS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}  # moto accepts any
DVC = [sys.executable, "-m", "dvc"]
# retrain --if-changed as the CLI runs it, then whether torch was imported (the quick path must not).
RETRAIN = ("import sys; from productstudio.cli import main; code = main(['retrain', '--if-changed']); "
           "print('torch imported' if 'torch' in sys.modules else 'no torch'); sys.exit(code)")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def s3():
    """moto's S3 server on a free port of 127.0.0.1 with one empty bucket; stopped afterwards."""
    from moto.server import ThreadedMotoServer

    quiet = logging.getLogger("werkzeug")  # the server logs every request at INFO
    level = quiet.level
    quiet.setLevel(logging.WARNING)
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        endpoint = f"http://127.0.0.1:{port}"
        client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id=KEYS["AWS_ACCESS_KEY_ID"],
                              aws_secret_access_key=KEYS["AWS_SECRET_ACCESS_KEY"])
        client.create_bucket(Bucket=BUCKET)
        yield endpoint, client
    finally:
        server.stop()
        quiet.setLevel(level)


def _digests(root: Path, *dirs: str) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for d in dirs for p in sorted((root / d).rglob("*")) if p.is_file()}


def _retrain(clone: Path, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", RETRAIN], cwd=clone, env=env, capture_output=True, text=True, timeout=300)


def test_push_pull_and_retrain_if_changed_on_a_fresh_clone(project, s3, tmp_path):  # noqa: F811
    root, env = project
    endpoint, client = s3
    # Hermetic AWS: no credentials but the ones each step gives, no ~/.aws, no instance-metadata lookups.
    env = {k: v for k, v in env.items() if not k.startswith("AWS_")}
    env.update(AWS_EC2_METADATA_DISABLED="true", AWS_CONFIG_FILE=str(tmp_path / "no-aws-config"),
               AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "no-aws-credentials"))
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["ingest"]["limit_per_category"] = 10
    params["validate"]["max_leak_fraction"] = 0.05  # as tests/integration/test_registry.py at this size
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    _run(DVC + ["repro", "preprocess"], root, env)

    # The S3 remote: url and endpoint in .dvc/config (committed), credentials in .dvc/config.local (not).
    add_s3_remote("s3", f"s3://{BUCKET}/data", endpoint_url=endpoint, region="us-east-1", repo=root,
                  access_key_id=KEYS["AWS_ACCESS_KEY_ID"], secret_access_key=KEYS["AWS_SECRET_ACCESS_KEY"])
    _run(["git", "add", "-A"], root, env)
    _run(["git", "commit", "-qm", "tiny data, S3 remote"], root, env)
    committed = _run(["git", "ls-files"], root, env).split()
    assert ".dvc/config" in committed and ".dvc/config.local" not in committed and "dvc.lock" in committed
    assert "testing" not in (root / ".dvc/config").read_text() and "testing" in (root / ".dvc/config.local").read_text()

    # Push: the outputs' objects land in the bucket, under the remote's prefix, and nothing is left to push.
    assert "files pushed" in _run(DVC + ["push"], root, env)
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET)
    keys = {obj["Key"] for page in pages for obj in page.get("Contents", [])}
    cache = root / ".dvc/cache"
    assert keys <= {f"data/{p.relative_to(cache)}" for p in cache.rglob("*") if p.is_file()}
    lock = yaml.safe_load((root / "dvc.lock").read_text())["stages"]
    for stage in ("ingest", "validate", "preprocess"):  # each output's directory listing, under the remote's prefix
        md5 = lock[stage]["outs"][0]["md5"]
        assert f"data/files/md5/{md5[:2]}/{md5[2:]}" in keys
    assert "in sync" in _run(DVC + ["status", "--cloud"], root, env)  # DVC's own check: nothing left to push

    # A fresh clone, credentials from the standard AWS variables this time: pull, byte for byte.
    clone = tmp_path / "clone"
    _run(["git", "clone", "-q", str(root), str(clone)], tmp_path, env)
    assert not (clone / "data/processed").exists() and not (clone / ".dvc/config.local").exists()
    _run(DVC + ["pull", "--with-deps", "preprocess"], clone, {**env, **KEYS})  # the stages that ran, not train etc.
    outputs = ("data/raw", "reports/validation", "data/processed")
    assert _digests(clone, *outputs) == _digests(root, *outputs) != {}
    assert "up to date" in _run(DVC + ["status", "--with-deps", "preprocess"], clone, env)

    # The registry already holds the pushed data version with these params (as register tags it).
    from mlflow import MlflowClient

    registry = MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"], registry_uri=env["MLFLOW_TRACKING_URI"])
    name = params["register"]["model_name"]
    registry.create_registered_model(name)
    from productstudio.data.store import data_version

    tags = {"data.version": data_version(root / "data/processed"), "params.hash": params_hash(load_params(root / "params.yaml"))}
    registry.create_model_version(name, source=str(tmp_path / "no-model"), tags=tags)

    # Another fresh clone, no data at all: a failed pull is one line naming the remote, and no retrain.
    fresh = tmp_path / "fresh"
    _run(["git", "clone", "-q", str(root), str(fresh)], tmp_path, env)
    failures = [  # (case, remote url, environment, why)
        ("no credentials", f"s3://{BUCKET}/data", env, "Unable to locate credentials"),
        ("not on the remote", f"s3://{BUCKET}/elsewhere", {**env, **KEYS},
         "this data version is not on the remote (push it with 'dvc push' where it was made)"),
    ]
    for case, url, case_env, why in failures:
        if url != f"s3://{BUCKET}/data":  # the same bucket, an empty prefix
            _run(DVC + ["remote", "modify", "--local", "s3", "url", url], fresh, env)
        result = _retrain(fresh, case_env)
        error = result.stderr.strip().splitlines()
        assert result.returncode != 0 and len(error) == 1, (case, result.stdout, result.stderr)
        assert error[0].startswith(f"productstudio retrain: error: could not pull data/processed from DVC remote 's3' ({url}): ")
        assert error[0].endswith(f"{why}; --no-pull rebuilds the data instead (dvc repro)"), (case, error)
        assert "Running stage" not in result.stdout
        assert not (fresh / "data/processed/manifest.json").exists()
    (fresh / ".dvc/config.local").unlink()

    # The pull works: only data/processed arrives, nothing changed, no training, no torch.
    result = _retrain(fresh, {**env, **KEYS})
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[0] == f"pulling data/processed from DVC remote 's3' (s3://{BUCKET}/data)", result.stdout
    assert lines[-2].startswith("nothing changed since version 1 (data ") and lines[-1] == "no torch", result.stdout
    assert _digests(fresh, "data/processed") == _digests(root, "data/processed")
    assert not (fresh / "data/raw").exists() and not (fresh / "models").exists() and "Running stage" not in result.stdout
