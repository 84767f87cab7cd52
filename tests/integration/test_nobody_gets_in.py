"""Nobody gets in (issue 13): listeners on loopback only, TorchServe's tokens on every API, model registration
only from the model store.

One TorchServe (a tiny generator) answers the token and registration checks. It runs with model registration
switched on (``enable_model_api``, the README's ``--enable-model-api``), so that ``allowed_urls`` and nothing else
is what refuses a URL, and with keys that expire after 9 s (TorchServe reads ``token_expiration_min`` as a
fraction of minutes; the project's own setting is whole minutes) so that an expired key can be shown refused.
The listeners of the default configuration are checked on the canary (test_deploy_canary.py: two TorchServes
and nginx) and here for ``mlflow server``.
"""

from __future__ import annotations

import http.server
import json
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from datetime import datetime, timezone
from urllib.parse import quote

import pytest

from productstudio.cli import main
from productstudio.config import ServeSettings
from productstudio.models.gan import GANConfig, Generator
from productstudio.models.io import save_generator
from productstudio.serving import server
from productstudio.serving.archive import build_archive
from tests.integration.exposure import connections, exposed, grpc_call, is_loopback, listening, process_tree

KEY_LIFETIME_MIN = 0.15
REFUSED = "Token Authorization failed"  # TorchServe 0.12: HTTP 400 InvalidKeyException, for missing, wrong or expired
PING = "/org.pytorch.serve.grpc.inference.InferenceAPIsService/Ping"
LIST_MODELS = "/org.pytorch.serve.grpc.management.ManagementAPIsService/ListModels"
REGISTER = "/org.pytorch.serve.grpc.management.ManagementAPIsService/RegisterModel"


def test_the_listener_check_sees_a_wildcard_bind():
    """The check below can fail: a process bound to every interface is reported, one on loopback is not."""
    code = ("import socket,time\nfor host in ('0.0.0.0','127.0.0.1'):\n s=socket.socket();s.bind((host,0));s.listen()\n"
            " globals().setdefault('keep',[]).append(s)\nprint('up',flush=True);time.sleep(60)")
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "up"
        addresses = listening(child.pid)
        assert {address for address, _ in addresses} == {"0.0.0.0", "127.0.0.1"}
        assert {address for address, _ in exposed(child.pid)} == {"0.0.0.0"}
    finally:
        child.kill()
        child.wait()
    assert is_loopback("::ffff:127.0.0.1") and is_loopback("::1") and not is_loopback("::")


# --- TorchServe: tokens and registration -------------------------------------------------------------------


@contextmanager
def keys_kept_fresh(state_dir):
    """Renew the short-lived keys every 2 s while the server starts (server.start pings with them until the model
    is ready, which may take longer than their lifetime on a busy machine). The 'API' key never expires."""
    done = threading.Event()

    def renew():
        while not done.wait(2.0):
            handle = server.load_handle(state_dir)
            if handle is not None and handle.key_file.exists():
                try:
                    server.renew_keys(handle)
                except Exception:  # the frontend is not up yet, or the key file is being rewritten
                    pass

    thread = threading.Thread(target=renew, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("nobody")
    save_generator(Generator(GANConfig(g_width=8, latent_dim=16)), root / "gen", categories=[f"c{i}" for i in range(10)])
    mar = build_archive(root / "gen", root / "store", "tiny")
    names = ("inference_port", "management_port", "metrics_port", "grpc_inference_port", "grpc_management_port")
    settings = ServeSettings(**dict(zip(names, server.free_ports(len(names)))), enable_model_api=True)
    settings = settings.model_copy(update={"token_expiration_min": KEY_LIFETIME_MIN})  # past the int validator
    with keys_kept_fresh(root / "state"):
        handle = server.start(settings, mar, root / "state", wait_s=180)
    yield handle, settings
    server.stop(root / "state")


def call(url: str, key: str | None, method: str = "GET") -> tuple[int, str]:
    request = urllib.request.Request(url, method=method, headers={"Authorization": f"Bearer {key}"} if key else {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def fresh_keys(handle) -> dict:
    server.renew_keys(handle)  # valid for KEY_LIFETIME_MIN from now
    return handle.keys()


@pytest.mark.slow
def test_torchserve_listens_on_loopback_only(served):
    handle, settings = served
    pid = server._pid(handle.state_dir)
    ports = {settings.inference_port, settings.management_port, settings.metrics_port,
             settings.grpc_inference_port, settings.grpc_management_port}
    assert {port for _, port in listening(pid)} == ports  # all five APIs, and nothing else
    assert exposed(pid) == set()
    # The frontend talks to its workers over Unix sockets: they lie in the server's own state directory
    # (TMPDIR points there), not in a shared /tmp.
    sockets = {conn.laddr for process in process_tree(pid) for conn in connections(process, "unix") if conn.laddr}
    assert sockets and all(path.startswith(str(handle.state_dir) + "/") for path in sockets), sockets


@pytest.mark.slow
def test_every_api_wants_its_own_key(served):
    handle, settings = served
    keys = fresh_keys(handle)
    wrong = {"none": None, "wrong": "not-a-key"}
    for url, right in ((f"{handle.inference_url}/ping", "inference"), (f"{handle.management_url}/models", "management")):
        others = {**wrong, **{kind: keys[kind] for kind in ("inference", "management", "API") if kind != right}}
        for name, key in others.items():
            status, body = call(url, key)
            assert status == 400 and REFUSED in json.loads(body)["message"], (url, name, status, body)
        assert call(url, keys[right])[0] == 200, url
    # New keys come only for the API key (renew-keys uses it); the management key cannot mint them.
    assert call(f"{handle.management_url}/token?type=inference", keys["management"])[0] == 400
    # The metrics API has no token in TorchServe 0.12: it answers anyone who can reach 127.0.0.1.
    assert call(f"{handle.metrics_url}/metrics", None)[0] == 200

    # gRPC checks the same keys (a refused call ends without a message).
    assert b"Healthy" in grpc_call(settings.grpc_inference_port, PING, keys["inference"])
    for key in (None, "not-a-key", keys["management"], keys["API"]):
        assert grpc_call(settings.grpc_inference_port, PING, key) is None, key
    assert grpc_call(settings.grpc_management_port, LIST_MODELS, keys["management"]) is not None
    for key in (None, "not-a-key", keys["inference"], keys["API"]):
        assert grpc_call(settings.grpc_management_port, LIST_MODELS, key) is None, key


def _protobuf_strings(**fields) -> bytes:
    """A protobuf message of string fields given as name=(number, value) (RegisterModelRequest needs no more)."""
    out = b""
    for number, value in fields.values():
        raw = value.encode()
        assert len(raw) < 128
        out += bytes([number << 3 | 2, len(raw)]) + raw
    return out


@pytest.mark.slow
def test_registration_only_from_the_model_store(served, tmp_path):
    handle, settings = served
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.copy2(handle.state_dir / "model-store" / "tiny.mar", elsewhere / "evil.mar")
    # A reachable web server holding an archive: TorchServe must not even ask it.
    asked = []

    class Archive(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(elsewhere), **kwargs)

        def log_message(self, *args):
            asked.append(self.path)

    web = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Archive)
    threading.Thread(target=web.serve_forever, daemon=True).start()
    refused_urls = [f"http://127.0.0.1:{web.server_port}/evil.mar", "https://example.com/evil.mar",
                    f"file://{elsewhere}/evil.mar", f"file://{handle.state_dir}/model-store/../../evil.mar",
                    "../evil.mar", str(elsewhere / "evil.mar")]
    try:
        for url in refused_urls:
            status, body = call(f"{handle.management_url}/models?url={quote(url, safe='')}&model_name=evil&initial_workers=0",
                                fresh_keys(handle)["management"], "POST")
            assert status == 404, (url, status, body)  # ModelNotFoundException: not an allowed URL / relative path / no such file
        assert asked == []
    finally:
        web.shutdown()
        web.server_close()
    # The same refusal over gRPC (RegisterModelRequest: model_name = 5, url = 9).
    request = _protobuf_strings(model_name=(5, "evil"), url=(9, f"file://{elsewhere}/evil.mar"))
    assert grpc_call(settings.grpc_management_port, REGISTER, fresh_keys(handle)["management"], request) is None

    # Control: an archive in the model store does register, so the refusals above are the URL's.
    status, body = call(f"{handle.management_url}/models?url=tiny.mar&model_name=again&initial_workers=0",
                        fresh_keys(handle)["management"], "POST")
    assert status == 200, body
    models = json.loads(call(f"{handle.management_url}/models", fresh_keys(handle)["management"])[1])["models"]
    assert sorted(m["modelName"] for m in models) == ["again", "tiny"]
    assert call(f"{handle.management_url}/models/again", fresh_keys(handle)["management"], "DELETE")[0] == 200


@pytest.mark.slow
def test_expired_keys_are_refused_until_renewed(served, capsys):
    handle, settings = served
    keys = fresh_keys(handle)
    assert call(f"{handle.inference_url}/ping", keys["inference"])[0] == 200
    expires = max(datetime.fromisoformat(stamp[:19]).replace(tzinfo=timezone.utc)
                  for stamp in server.key_expiry(handle).values())
    time.sleep(max(0.0, (expires - datetime.now(timezone.utc)).total_seconds()) + 2.0)

    for url, kind in ((f"{handle.inference_url}/ping", "inference"), (f"{handle.management_url}/models", "management")):
        status, body = call(url, keys[kind])
        assert status == 400 and REFUSED in json.loads(body)["message"], (kind, status, body)
    assert grpc_call(settings.grpc_inference_port, PING, keys["inference"]) is None
    assert not server.ping(handle)

    assert main(["serve", "renew-keys", "--state", str(handle.state_dir)]) == 0  # the documented way back
    assert "new inference and management keys" in capsys.readouterr().out
    assert server.ping(handle) and server.model_ready(handle)


# --- mlflow server --------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_mlflow_server_listens_on_loopback_only(tmp_path):
    """`mlflow server` as a team would start it, without --host (one worker instead of four: cheaper, same bind)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{tmp_path / 'mlflow.db'}",
               "--default-artifact-root", str(tmp_path / "artifacts"), "--port", str(port), "--workers", "1"]
    log = open(tmp_path / "mlflow.log", "w")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
                    assert response.status == 200
                break
            except OSError:
                assert process.poll() is None and time.monotonic() < deadline, (tmp_path / "mlflow.log").read_text()[-2000:]
                time.sleep(0.5)
        assert port in {p for _, p in listening(process.pid)}
        assert exposed(process.pid) == set()
    finally:
        stop_tree(process.pid)
        process.wait()
        log.close()


def stop_tree(pid: int) -> None:
    """Stop a process we started and everything it started (mlflow server runs uvicorn and job consumers)."""
    import psutil

    try:
        family = process_tree(pid)
    except psutil.NoSuchProcess:
        return
    for member in family:
        member.terminate()
    _, alive = psutil.wait_procs(family, timeout=15)
    for member in alive:
        member.kill()
