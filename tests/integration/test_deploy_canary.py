"""'productstudio deploy canary/status/rollback/promote' with real TorchServe (x2) and nginx, from registry aliases."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from productstudio.serving.server import free_ports as _free_ports
from productstudio.cli import main
from productstudio.config import load_params, parse_params
from productstudio.data.preprocess import preprocess
from productstudio.data.raw import ingest
from productstudio.models.io import save_generator
from productstudio.models.gan import GANConfig, Generator
from productstudio.deploy import local_canary as deploy
from productstudio.serving import server
from productstudio.validation.validate import validate
from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.slow
NAME = "product-studio-generator"
CATEGORIES = [f"item{i}" for i in range(10)]


def tiny_generator() -> Generator:
    torch.manual_seed(0)
    return Generator(GANConfig(g_width=8, latent_dim=16))


def broken_generator() -> Generator:
    """A deliberately worse model: broken weights (all zero, the output layer's bias -10) make every image black."""
    generator = tiny_generator()
    with torch.no_grad():
        for weight in generator.parameters():
            weight.zero_()
        generator.to_image.bias.fill_(-10.0)
    return generator


@pytest.fixture(scope="module")
def processed(tmp_path_factory, fashion_dir):
    """A small processed Fashion-MNIST (100 test images): the real side of the canary's KID."""
    root = tmp_path_factory.mktemp("data")
    params = parse_params({"ingest": {"fashion_mnist_dir": str(fashion_dir), "limit_per_category": 10},
                           "validate": {"max_leak_fraction": 0.05}})
    ingest(params.ingest, root / "raw")
    validate(root / "raw", root / "validation", params.validate)
    preprocess(root / "raw", root / "validation", root / "processed", params.preprocess)
    return root / "processed"


@pytest.fixture(scope="module")
def canary(tmp_path_factory):
    """Two tiny generators registered (as MLflow model directories) in a sqlite registry, champion v1 (random
    weights) and challenger v2 (broken weights: black images), deployed with 30 % to the challenger."""
    from mlflow import MlflowClient

    subprocess.run(["bash", str(REPO_ROOT / "scripts" / "install-nginx")], check=True, timeout=300)
    root = tmp_path_factory.mktemp("deploy")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    mp = pytest.MonkeyPatch()
    mp.setenv("MLFLOW_TRACKING_URI", uri)
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    client.create_registered_model(NAME)
    for version, generator in (("1", tiny_generator()), ("2", broken_generator())):
        model_dir = root / "models" / version
        save_generator(generator, model_dir / "artifacts" / "generator", categories=CATEGORIES)
        client.create_model_version(NAME, str(model_dir))
    client.set_registered_model_alias(NAME, "champion", "1")
    client.set_registered_model_alias(NAME, "challenger", "2")

    ports = _free_ports(11)
    base = load_params(REPO_ROOT / "params.yaml")
    params = base.model_copy(update={
        "serve": base.serve.model_copy(update=dict(zip(("inference_port", "management_port", "metrics_port", "grpc_inference_port",
                                                             "grpc_management_port"), ports[:5]),
                                                   max_batch_delay_ms=1)),
        "deploy": base.deploy.model_copy(update=dict(zip(("canary_inference_port", "canary_management_port", "canary_metrics_port",
                                                          "canary_grpc_inference_port", "canary_grpc_management_port",
                                                          "proxy_port"), ports[5:]))),
    })
    state = root / "state"
    try:
        record = deploy.start_canary(params, state, percent=30, wait_s=400)  # generous: the test machine is shared
        yield {"params": params, "state": state, "record": record, "client": client}
    finally:
        deploy.stop_canary(state)
        mp.undo()


def call(url: str, key: str | None, body: dict | None = None):
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    request = urllib.request.Request(url, data=data, headers=headers, method="POST" if data else "GET")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


def sides(canary, n: int, predict_every: int = 50) -> dict:
    """n requests through nginx (pings, and every predict_every-th a count=1 prediction), 8 at a time."""
    record = canary["record"]
    key = open(record["key_file"]).read().strip()

    def one(i: int) -> str:
        if i % predict_every == 0:
            status, headers, body = call(record["predict_url"], key, {"category": i % 10, "count": 1, "seed": i})
            assert status == 200, body
            assert json.loads(body)["version"] == headers["X-Model-Version"]  # the model that answered says so
        else:
            status, headers, body = call(record["url"] + "/ping", key)
            assert status == 200, body
        return headers["X-Model-Side"]

    with ThreadPoolExecutor(8) as pool:
        seen = list(pool.map(one, range(n)))
    return {side: seen.count(side) for side in ("stable", "canary")}


def test_split_status_rollback_promote(canary, processed, tmp_path, monkeypatch, capsys):
    record, state = canary["record"], str(canary["state"])
    assert (record["stable_version"], record["canary_version"]) == ("1", "2")
    # nginx checks the proxy's own key: none, or a TorchServe token, is refused.
    assert call(record["url"] + "/ping", None)[0] == 401
    assert call(record["url"] + "/ping", "not-the-key")[0] == 401

    seen = sides(canary, 1000)
    assert abs(seen["canary"] / 10 - 30) <= 5, seen
    deadline = time.monotonic() + 10  # nginx writes a log line just after answering
    while sum(deploy.deploy_status(state)["sides"][s]["requests"] for s in seen) < 1000 and time.monotonic() < deadline:
        time.sleep(0.1)

    assert main(["deploy", "status", "--state", state]) == 0
    table = capsys.readouterr().out
    assert "30" in table.splitlines()[0] and "p95 ms" in table
    status = deploy.deploy_status(state)
    assert status["sides"]["canary"]["requests"] == seen["canary"] and status["sides"]["stable"]["errors"] == 0
    assert status["sides"]["stable"]["p95_ms"] is not None
    assert status["sides"]["canary"]["torchserve"]["running"]
    # TorchServe's own metric logs saw the predictions (every 50th request) too.
    assert sum(status["sides"][side]["torchserve"]["requests"] for side in ("stable", "canary")) > 0

    # The 30 % canary serves black images: analyze must recommend a rollback, for its KID. Latency on a shared
    # test machine is noise, so the p95 rule (unit-tested with the policy) is held off here.
    params = canary["params"]
    lenient_latency = params.model_copy(update={"deploy": params.deploy.model_copy(update={"min_p95_increase_ms": 1e9})})
    with monkeypatch.context() as scratch:
        scratch.chdir(tmp_path)  # analyze keeps real features it extracts under ./.scratch
        result = deploy.analyze(lenient_latency, state, processed_dir=processed, real_cache=tmp_path / "no-real-stats",
                                samples=50)
    kid = {side: result["sides"][side]["kid"] for side in ("stable", "canary")}
    assert result["recommendation"] == "rollback", result
    assert result["reason"] == (f"canary KID {kid['canary']:.4f} exceeds stable's {kid['stable']:.4f} by more than "
                                f"{params.deploy.max_kid_increase:g}")
    assert kid["canary"] - kid["stable"] > 0.1, kid  # not a near miss: black images are far from any garment

    # New TorchServe tokens on both sides, handed to nginx: the old ones stop working, clients notice nothing
    # (the rollback and promote below send requests to each side with the new tokens).
    old = {side: json.loads((canary["state"] / side / "key_file.json").read_text())["inference"]["key"] for side in ("stable", "canary")}
    assert main(["deploy", "renew-keys", "--state", state]) == 0
    assert "new TorchServe keys handed to nginx" in capsys.readouterr().out
    stable_handle = server.running_handle(canary["state"] / "stable")
    assert stable_handle.inference_key != old["stable"]
    assert call(stable_handle.inference_url + "/ping", old["stable"])[0] == 400  # TorchServe refuses the old token
    after = sides(canary, 40, predict_every=5)  # every request answered 200 (sides checks), on both sides
    assert after["stable"] > 0 and after["canary"] > 0, after

    assert main(["deploy", "rollback", "--state", state, "--reason", "test"]) == 0
    assert sides(canary, 200) == {"stable": 200, "canary": 0}
    client = canary["client"]
    assert client.get_model_version(NAME, "2").tags[deploy.ROLLBACK_TAG].endswith(": test")
    assert str(client.get_model_version_by_alias(NAME, "champion").version) == "1"

    assert main(["deploy", "promote", "--state", state]) == 0
    assert sides(canary, 200) == {"stable": 0, "canary": 200}
    assert str(client.get_model_version_by_alias(NAME, "champion").version) == "2"
    promoted = client.get_model_version(NAME, "2").tags  # the decision is on the version with the alias
    assert promoted["promotion.decision"] == "promoted-by-canary" and promoted["promotion.champion_before"] == "1"


def test_stopped_proxy_is_one_line(canary, tmp_path, capsys):
    assert main(["deploy", "promote", "--state", str(tmp_path)]) == 2
    assert "no canary deployment in" in capsys.readouterr().err


def test_every_listener_of_the_canary_is_loopback(canary):
    """Both TorchServes (inference, management, metrics, gRPC inference and management) and nginx, as `deploy canary`
    starts them from params.yaml: every listening socket of their process trees is on 127.0.0.1 (issue 13)."""
    from productstudio.deploy.nginx_proxy import CanaryProxy
    from tests.integration.exposure import exposed, listening

    state, params = canary["state"], canary["params"]
    serve, dep = params.serve, params.deploy
    expected = {
        server._pid(state / "stable"): {serve.inference_port, serve.management_port, serve.metrics_port,
                                        serve.grpc_inference_port, serve.grpc_management_port},
        server._pid(state / "canary"): {dep.canary_inference_port, dep.canary_management_port, dep.canary_metrics_port,
                                        dep.canary_grpc_inference_port, dep.canary_grpc_management_port},
        CanaryProxy(state / "proxy").pid(): {dep.proxy_port},
    }
    for pid, ports in expected.items():
        assert pid is not None
        assert {port for _, port in listening(pid)} == ports, pid  # the right processes, and no other listener
        assert exposed(pid) == set(), pid
