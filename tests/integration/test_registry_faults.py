"""The MLflow server down, hung or failing part way through ``register`` and ``promote``.

A real ``mlflow server`` (sqlite, artifacts served, 127.0.0.1) sits behind a fault-injecting TCP proxy written here
(one thread per connection, one HTTP request per connection). Modes: ``close`` (accept, then close unanswered: a
dead server), ``hang`` (read the request, never answer: longer than the client's timeout), ``fail_from`` k (the
first k requests reach the server, the k-th one's answer is lost, every later one is closed unanswered: the server
dies part way) and ``lose`` k (only the k-th answer is lost: a blip the retries absorb). Shown:

- down or hung: ``productstudio register`` / ``promote`` exit 2 with one line naming the URI, what failed and the
  tries, within a bound, after a bounded number of attempts (the project's retry defaults, tracking.HTTP_DEFAULTS);
- for every k over the requests a register (and a promote) makes: afterwards no version lacks its identity tags or
  its artifacts, 'challenger' is never lost, no champion lacks its decision; a rerun on a healthy server reaches
  exactly the registry of an uninterrupted run.
"""

import json
import os
import random
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import psutil
import pytest
import yaml

from productstudio.config import parse_params
from productstudio.data.preprocess import preprocess
from productstudio.data.raw import ingest
from productstudio.errors import ServiceError
from productstudio.training.loop import train
from productstudio.validation.validate import validate
from tests.integration.test_registry import _params, _free_port

pytestmark = pytest.mark.slow
BOUND_S = 40  # from a failing command's first MLflow call to its one line (the project's defaults: ~27 s when hung)
WALL_S = 120  # the whole command, imports included (torch and mlflow take 5-40 s on a loaded 2-core machine)
HANG_S = 60  # how long 'hang' keeps a request unanswered (the client gives up long before)


def _read_request(conn: socket.socket) -> bytes | None:
    """One HTTP request off ``conn``, rewritten to ask for ``Connection: close``; None when the client hung up."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return None
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    lines = head.split(b"\r\n")
    headers = dict((k.strip().lower(), v.strip()) for k, v in (line.split(b":", 1) for line in lines[1:]))
    if b"chunked" in headers.get(b"transfer-encoding", b"").lower():
        while not body.endswith(b"0\r\n\r\n"):
            body += conn.recv(65536) or pytest.fail("client hung up mid-body")
    else:
        while len(body) < int(headers.get(b"content-length", b"0")):
            body += conn.recv(65536) or pytest.fail("client hung up mid-body")
    kept = [line for line in lines[1:] if not line.lower().startswith(b"connection:")]
    return b"\r\n".join([lines[0], *kept, b"Connection: close"]) + b"\r\n\r\n" + body


class FaultyProxy:
    """127.0.0.1:<port> in front of the MLflow server; ``set(mode, k)`` picks the fault, counts restart."""

    def __init__(self, upstream_port: int):
        self.upstream_port = upstream_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.lock = threading.Lock()
        self.released = threading.Event()
        self.set("pass")
        threading.Thread(target=self._accept, daemon=True).start()

    def set(self, mode: str, k: int | None = None) -> None:
        with self.lock:
            self.mode, self.k = mode, k
            self.connections, self.requests, self.paths = 0, 0, []

    def close(self) -> None:
        self.released.set()
        self.listener.close()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            with self.lock:
                self.connections += 1
                mode, k = self.mode, self.k
            if mode == "close":
                return
            request = _read_request(conn)
            if request is None:
                return
            with self.lock:
                self.requests += 1
                number = self.requests
                self.paths.append(request.split(b" ", 2)[1].decode())
            if mode == "hang":
                self.released.wait(HANG_S)
                return
            if mode == "fail_from" and number > k:
                return  # never reaches the server
            with socket.create_connection(("127.0.0.1", self.upstream_port), timeout=HANG_S) as upstream:
                upstream.sendall(request)
                answer = b""
                while chunk := upstream.recv(65536):
                    answer += chunk
            if mode in ("fail_from", "lose") and number == k:
                return  # the server did it; the client never hears
            conn.sendall(answer)


def _quiet_port() -> int:
    """A free port below the ephemeral range: the server takes ~20 s to bind on a loaded machine, and a port from
    that range can meanwhile become some other connection's local end (seen: 'address already in use')."""
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    for port in random.sample(range(max(1024, low - 12000), low), 200):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue
    return _free_port()


@contextmanager
def mlflow_server(root: Path):
    port = _quiet_port()
    log = (root / "server.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{root / 'server.db'}", "--artifacts-destination", str(root / "artifacts")],
        stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"})
    try:
        # Wait for the listening socket rather than connect to find out (a connect can take the port itself).
        deadline = time.monotonic() + 120
        while not any(c.laddr.port == port and c.status == psutil.CONN_LISTEN for c in psutil.net_connections("tcp")):
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"mlflow server did not start:\n{(root / 'server.log').read_text()[-3000:]}")
            time.sleep(0.5)
        yield port
    finally:
        server.terminate()
        try:
            server.wait(timeout=5)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


@pytest.fixture(scope="module")
def world(tmp_path_factory, fashion_dir):
    """Data, two tiny generators (1 GAN step, seeds 0 and 1), params, an evaluation dir; the server and its proxy."""
    root = tmp_path_factory.mktemp("faults")
    raw = _params(fashion_dir)
    params = parse_params(raw)
    ingest(params.ingest, root / "raw")
    validate(root / "raw", root / "validation", params.validate)
    preprocess(root / "raw", root / "validation", root / "processed", params.preprocess)
    for name, seed in (("one", 0), ("two", 1)):
        settings = parse_params(_params(fashion_dir, max_steps=1, ema_decay=0.0, seed=seed)).train
        train(settings, root / "processed", root / name, root / f"{name}-plots", track=False)
    (root / "params.yaml").write_text(yaml.safe_dump(raw))
    evaluation = root / "evaluation"
    evaluation.mkdir()
    (evaluation / "metrics.json").write_text(json.dumps({"fid30_test": 400.0}))
    record = {"metric": "fid30_test", "value": 400.0, "num_generated": 30, "num_real": 30, "reference_split": "test",
              "latent_seed": 1234, "feature_network": "tf-inception-2015-12-05-pool3"}
    (evaluation / "evaluation.json").write_text(json.dumps({"metrics": [record]}))
    (root / "stats").mkdir()
    with mlflow_server(root) as port:
        proxy = FaultyProxy(port)
        try:
            yield root, params, proxy
        finally:
            proxy.close()


@pytest.fixture
def via_proxy(world, monkeypatch, tmp_path):
    import mlflow

    root, params, proxy = world
    monkeypatch.setenv("MLFLOW_TRACKING_URI", proxy.url)
    mlflow.set_tracking_uri(proxy.url)  # MlflowClient() and mlflow.artifacts use the last one set, whatever the env
    monkeypatch.chdir(tmp_path)
    proxy.set("pass")
    return world


def _cli(root: Path, url: str, *args: str) -> tuple[subprocess.CompletedProcess, float]:
    """The real command line, with the project's own retry defaults (no MLFLOW_HTTP_* from the caller)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_HTTP_")}
    env.update(MLFLOW_TRACKING_URI=url, MLFLOW_DISABLE_TELEMETRY="true")
    start = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "productstudio.cli", args[0], "--params", str(root / "params.yaml"),
                             *args[1:]], capture_output=True, text=True, env=env, cwd=root, timeout=WALL_S * 2)
    return result, time.monotonic() - start


def _register_cli(root, url):
    return _cli(root, url, "register", "--generator", str(root / "one/generator"), "--evaluation",
                str(root / "evaluation"), "--processed", str(root / "processed"))


def _promote_cli(root, url):
    return _cli(root, url, "promote", "--processed", str(root / "processed"), "--cache", str(root / "stats"),
                "--out", str(root / "promote-cli"), "--work", str(root / "work"), "--device", "cpu")


def _one_line(result, command: str, url: str, what: str) -> str:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr[-3000:]
    assert lines[0].startswith(f"productstudio {command}: error: MLflow server {url} {what}"), lines[0]
    assert "3 tries of up to 8 s each" in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize("mode, what", [("close", "closed the connection"), ("hang", "timed out")])
def test_a_server_down_or_hung_is_one_line_within_a_bound(world, mode, what, record_property):
    root, _, proxy = world
    for command, run in (("register", _register_cli), ("promote", _promote_cli)):
        proxy.set(mode)
        result, took = run(root, proxy.url)
        line = _one_line(result, command, proxy.url, what)
        print(f"{mode} {command}: {took:.1f} s, {proxy.connections} connections, {proxy.requests} requests: {line}")
        stopped = float(re.search(r"stopped after (\d+) s\)", line)[1])
        record_property(f"{mode}-{command}", {"wall_s": round(took, 1), "stopped_after_s": stopped,
                                              "connections": proxy.connections})
        assert stopped < BOUND_S and took < WALL_S
        assert proxy.connections <= 3, proxy.paths  # MLFLOW_HTTP_REQUEST_MAX_RETRIES=2: three tries of one request
    proxy.set("pass")


def test_nothing_listening_is_one_line_too(world, monkeypatch, tmp_path):
    from productstudio.promotion.champion import promote_challenger
    from productstudio.registry.model_registry import register

    root, params, _ = world
    url = f"http://127.0.0.1:{_free_port()}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    monkeypatch.chdir(tmp_path)
    start = time.monotonic()
    with pytest.raises(ServiceError, match=rf"^MLflow server {url} (refused the connection|could not be reached) on "
                                           r"registered-models/alias .*; run it again once the server answers$"):
        promote_challenger(params, root / "processed", root / "stats", tmp_path / "promote", features_dir=root / "work",
                           device="cpu")
    with pytest.raises(ServiceError, match=rf"^MLflow server {url} .* on model-versions/search .*registering"):
        register(root / "one/generator", root / "evaluation", root / "processed", params)
    assert time.monotonic() - start < BOUND_S
    assert not (tmp_path / "promote").exists(), "no decision.json without a decision"


# ---------------------------------------------------------------------------------------------------------------
# Failing part way: the registry's state, compared with an uninterrupted run's.


def _files(mlflow_client, mv) -> dict:
    """The version's model files: relative path -> size (downloaded through the server, as a user would)."""
    import mlflow

    with tempfile.TemporaryDirectory() as tmp:
        where = Path(mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{mv.name}/{mv.version}", dst_path=tmp))
        # registered_model_meta: written by the download, it names the model and version asked for
        return {str(p.relative_to(where)): p.stat().st_size for p in sorted(where.rglob("*"))
                if p.is_file() and p.name != "registered_model_meta"}


def _decision(mlflow_client, run_id: str) -> dict | None:
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = mlflow_client.download_artifacts(run_id, "promotion/decision.json", tmp)
        except Exception:  # noqa: BLE001
            return None
        return _plain(json.loads(Path(path).read_text()))


def _plain(decision: dict | None) -> dict | None:
    """A decision without what differs between two equal runs: the time and the model's (per-test) name."""
    return None if decision is None else {k: v for k, v in decision.items() if k not in ("decided_at", "model")}


def _state(name: str, files: bool = True) -> dict:
    """The registry as far as ``name`` goes: per version its tags (minus the decision's time), aliases, model
    files and the decision logged in its run."""
    from mlflow import MlflowClient

    mlflow_client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    state = {}
    for found in mlflow_client.search_model_versions(f"name='{name}'"):
        mv = mlflow_client.get_model_version(name, found.version)
        state[str(mv.version)] = {
            "tags": {k: v for k, v in mv.tags.items() if k != "promotion.decided_at"}, "aliases": sorted(mv.aliases),
            "files": _files(mlflow_client, mv) if files else None, "decision": _decision(mlflow_client, mv.run_id)}
    return dict(sorted(state.items(), key=lambda item: int(item[0])))


def _check_consistent(state: dict, reference: dict, before: set) -> None:
    """What must hold after any failure: versions are whole (identity tags, all files), 'challenger' is where it
    was or on the new version, a champion carries its decision (tags and the logged decision.json)."""
    from productstudio.registry.model_registry import IDENTITY

    for version, seen in state.items():
        assert all(seen["tags"].get(k) for k in IDENTITY), seen["tags"]
        assert seen["files"] == reference[version]["files"], f"version {version} is missing files"
        if "champion" in seen["aliases"]:
            assert seen["tags"].get("promotion.decision") == "promoted", seen["tags"]
            assert {k: v for k, v in seen["tags"].items() if k.startswith("promotion.")} == \
                   {k: v for k, v in reference[version]["tags"].items() if k.startswith("promotion.")}
            assert seen["decision"] == reference[version]["decision"]
    holders = [v for v, seen in state.items() if "challenger" in seen["aliases"]]
    if before:
        assert holders and set(holders) <= before | {str(max(map(int, state)))}, holders


def _seed_version(mlflow_client, name: str, source: str) -> None:
    """Version 1 of ``name``: a copy of the version ``source`` (same model, same run, same tags), as 'challenger'."""
    like = mlflow_client.get_model_version_by_alias(*source.split("@")) if "@" in source else None
    like = like or mlflow_client.get_model_version(*source.split("/"))
    copy = mlflow_client.copy_model_version(f"models:/{like.name}/{like.version}", name)
    for key, value in like.tags.items():
        if copy.tags.get(key) != value:
            mlflow_client.set_model_version_tag(name, copy.version, key, value)
    mlflow_client.set_registered_model_alias(name, "challenger", copy.version)


def _named(params, name: str):
    return params.model_copy(update={"register_": params.register.model_copy(update={"model_name": name})})


def _phases(paths: list) -> list:
    """The requests worth failing at: the first and last of each run of one endpoint (artifact transfers are one)."""
    kinds = ["artifacts" if "/mlflow-artifacts/" in p else p.split("?")[0] for p in paths]
    edges = {i for i in range(len(kinds)) if i == 0 or i == len(kinds) - 1 or kinds[i] != kinds[i - 1]
             or kinds[i] != kinds[i + 1]}
    return [i + 1 for i in sorted(edges)]


def _sweep(proxy, label: str, ks: list, attempt, check) -> list:
    """For each k: fail from request k on (its answer lost), check, rerun healthy, check; the failed endpoints."""
    outcomes = []
    for k in ks:
        proxy.set("fail_from", k)
        try:
            attempt(k)
            outcome = "finished"
        except ServiceError as error:
            assert "\n" not in str(error)
            outcome = proxy.paths[k - 1].split("?")[0].rsplit("/mlflow", 1)[-1]
        proxy.set("pass")
        check(k, after_rerun=False)
        attempt(k)
        check(k, after_rerun=True)
        outcomes.append(f"{k}:{outcome}")
    print(f"{label}: failing from request k of {ks}: {outcomes}")
    return outcomes


def test_register_failing_part_way_leaves_a_whole_registry(via_proxy, monkeypatch):
    from mlflow import MlflowClient

    from productstudio.registry.model_registry import register

    root, params, proxy = via_proxy
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # the user's setting wins; no retries: a quick sweep
    mlflow_client = MlflowClient(proxy.url)

    def run(name, generator="two"):
        return register(root / generator / "generator", root / "evaluation", root / "processed", _named(params, name))

    run("reg-ref", "one")
    proxy.set("pass")
    assert run("reg-ref").created
    paths = list(proxy.paths)  # what one registration makes
    reference = _state("reg-ref")
    assert [s["aliases"] for s in reference.values()] == [[], ["challenger"]]
    ks = _phases(paths)
    for k in ks:
        _seed_version(mlflow_client, f"reg-{k}", "reg-ref/1")

    def check(k, after_rerun):
        state = _state(f"reg-{k}")
        _check_consistent(state, reference, {"1"})
        if after_rerun:
            assert state == reference, k

    outcomes = _sweep(proxy, f"register ({len(paths)} requests)", ks, lambda k: run(f"reg-{k}"), check)
    assert not any(o.endswith("finished") for o in outcomes)

    # A lost answer to the create itself, with the project's retries: the retry makes a twin from the same run;
    # the twin goes, the run stays, and the command succeeds.
    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES")
    _seed_version(mlflow_client, "reg-lose", "reg-ref/1")
    proxy.set("lose", next(i for i, path in enumerate(paths, 1) if path.endswith("/model-versions/create")))
    registered = run("reg-lose")
    proxy.set("pass")
    assert registered.version == "2" and registered.created
    assert _state("reg-lose") == reference
    assert mlflow_client.get_run(registered.run_id).info.lifecycle_stage == "active"


def test_promote_failing_at_every_request_leaves_no_champion_without_its_decision(via_proxy, monkeypatch, tmp_path):
    from mlflow import MlflowClient
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    from productstudio.promotion.champion import promote_challenger
    from productstudio.registry.model_registry import register

    root, params, proxy = via_proxy
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    mlflow_client = MlflowClient(proxy.url)
    register(root / "one/generator", root / "evaluation", root / "processed", _named(params, "pro-source"))
    run = mlflow_client.get_run(mlflow_client.get_model_version("pro-source", "1").run_id)
    # Every copy shares the source's run: its logged decision goes before each promotion, so each one shows its own.
    forget = lambda: get_artifact_repository(run.info.artifact_uri).delete_artifacts("promotion/decision.json")  # noqa: E731

    def promote(k):
        return promote_challenger(_named(params, f"pro-{k}"), root / "processed", root / "stats", tmp_path / f"out-{k}",
                                  features_dir=root / "work", device="cpu")

    _seed_version(mlflow_client, "pro-warm", "pro-source/1")
    promote("warm")  # measures once; every later promote reads the features cache
    _seed_version(mlflow_client, "pro-ref", "pro-source/1")
    forget()
    proxy.set("pass")
    expected = promote("ref")
    requests = proxy.requests
    reference = _state("pro-ref", files=False)
    assert expected["promoted"] and reference["1"]["aliases"] == ["challenger", "champion"], reference
    ks = list(range(1, requests + 1))
    for k in ks:
        _seed_version(mlflow_client, f"pro-{k}", "pro-source/1")

    def check(k, after_rerun):
        state = _state(f"pro-{k}", files=False)  # promote writes no model files
        _check_consistent(state, reference, {"1"})
        decision = tmp_path / f"out-{k}" / "decision.json"
        if after_rerun:
            assert state == reference, k
            assert _plain(json.loads(decision.read_text())) == _plain(expected), k
            forget()
        elif "champion" not in state["1"]["aliases"]:
            assert not decision.exists()

    outcomes = _sweep(proxy, f"promote ({requests} requests)", ks, promote, check)
    # The artifact listings vary by one between runs: failing at the reference's last request may find none left.
    assert not any(o.endswith("finished") for o in outcomes[:-1])
