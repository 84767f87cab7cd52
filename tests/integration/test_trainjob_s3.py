"""The TrainJob hand-off through S3 for real: a local S3 server (moto, 127.0.0.1) holds the DVC remote and the
published result; a stand-in cluster runs the rendered pod script on two 'nodes' (torchrun faked: no training)."""

import logging
import socket

import boto3
import pytest

from productstudio.config import load_params
from productstudio.deploy import trainjob
from tests.conftest import REPO_ROOT
from tests.unit.test_trainjob import FakeCluster

pytestmark = pytest.mark.slow
BUCKET = "team-store"
KEYS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}  # moto accepts any


@pytest.fixture
def s3():
    """moto's S3 server on a free port of 127.0.0.1 with one empty bucket; stopped afterwards."""
    from moto.server import ThreadedMotoServer

    quiet = logging.getLogger("werkzeug")  # the server logs every request at INFO
    level = quiet.level
    quiet.setLevel(logging.WARNING)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        endpoint = f"http://127.0.0.1:{port}"
        client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", **{k.lower(): v for k, v in KEYS.items()})
        client.create_bucket(Bucket=BUCKET)
        yield endpoint, client
    finally:
        server.stop()
        quiet.setLevel(level)


def test_hand_off_pushes_pulls_and_publishes_through_s3(s3, tmp_path, monkeypatch):
    endpoint, client = s3
    # Hermetic AWS: only the Secret's keys (the fake cluster hands them over), no ~/.aws, no metadata lookups.
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    params = load_params(REPO_ROOT / "params.yaml")
    settings = params.trainjob.model_copy(update={"data_remote": f"s3://{BUCKET}/dvc", "output_uri": f"s3://{BUCKET}/trainjobs",
                                                  "s3_endpoint_url": endpoint})
    dataset = tmp_path / "dataset"
    dataset.mkdir()
    (dataset / "manifest.json").write_text('{"counts": {"train": 2}}')
    cluster = FakeCluster(tmp_path, KEYS)

    result = trainjob.train_on_cluster(params.model_copy(update={"trainjob": settings}), dataset, tmp_path / "model",
                                       tmp_path / "loss", custom_api=cluster, core_api=cluster, poll_s=0)

    keys = {item["Key"] for item in client.list_objects_v2(Bucket=BUCKET)["Contents"]}
    md5 = result["data_md5"].removesuffix(".dir")
    assert f"dvc/files/md5/{md5[:2]}/{md5[2:]}.dir" in keys  # the dataset, content-addressed as 'dvc push' stores it
    assert f"trainjobs/{result['name']}/train/manifest.json" in keys  # node 0's result
    assert (tmp_path / "node-1" / "job" / "processed" / "manifest.json").is_file()  # every node pulled it from S3
    assert (tmp_path / "model" / "generator" / "weights.bin").read_text() == "node 0\n"
    env = {item["name"]: item.get("value") for item in cluster.created[0]["spec"]["trainer"]["env"]}
    assert env["AWS_ENDPOINT_URL"] == endpoint and "AWS_SECRET_ACCESS_KEY" in env and env["AWS_SECRET_ACCESS_KEY"] is None
