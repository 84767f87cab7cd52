"""The canary proxy with real nginx (Debian's, from scripts/install-nginx) in front of two tiny HTTP servers."""

from __future__ import annotations

import json
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from productstudio.deploy.nginx_proxy import CanaryProxy, render_nginx_conf
from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def nginx() -> str:
    # The project's own set-up: a no-op once .tools/nginx is stamped.
    subprocess.run(["bash", str(REPO_ROOT / "scripts" / "install-nginx")], check=True, timeout=300)
    return str(REPO_ROOT / ".tools" / "nginx" / "bin" / "nginx")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def upstream(name: str):
    """An HTTP server on 127.0.0.1 that answers with its name and the Authorization header it got."""

    class Handler(BaseHTTPRequestHandler):
        def _answer(self):
            length = int(self.headers.get("Content-Length") or 0)
            self.rfile.read(length)
            pad = int(self.path.partition("pad=")[2] or 0)  # a large response, like a batch of images
            body = json.dumps({"name": name, "authorization": self.headers.get("Authorization"),
                               "bytes": length, "pad": "x" * pad}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = _answer

        def log_message(self, *args):  # quiet
            pass

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture
def servers():
    stable, canary = upstream("stable"), upstream("canary")
    yield f"http://127.0.0.1:{stable.server_port}", f"http://127.0.0.1:{canary.server_port}"
    for server in (stable, canary):
        server.shutdown()
        server.server_close()


def get(url: str, data: bytes | None = None, headers: dict | None = None):
    request = urllib.request.Request(url, data=data, headers=headers or {})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read()), response.headers


def send(url: str, n: int) -> dict:
    """n requests; how many each upstream answered (by the body, not by nginx's word)."""
    seen = {"stable": 0, "canary": 0}
    for _ in range(n):
        body, headers = get(url + "/predictions/generator")
        assert headers["X-Model-Side"] == body["name"]  # the header names the side that answered
        seen[body["name"]] += 1
    return seen


def logged(proxy: CanaryProxy, since: int, n: int) -> dict:
    """The access log's counts once it holds n requests (nginx logs a request just after answering it)."""
    deadline = time.monotonic() + 15
    while sum((counts := proxy.counts(since)).values()) < n and time.monotonic() < deadline:
        time.sleep(0.02)
    return counts


def test_nginx_accepts_the_rendered_config(nginx, tmp_path):
    for percent in (0, 20, 33.33, 100):
        conf = tmp_path / f"nginx-{percent}.conf"
        (tmp_path / "tmp").mkdir(exist_ok=True)
        conf.write_text(render_nginx_conf("http://127.0.0.1:8080", "127.0.0.1:8090", percent, free_port(), tmp_path))
        check = subprocess.run([nginx, "-t", "-p", str(tmp_path), "-e", str(tmp_path / "error.log"), "-c", str(conf)],
                               capture_output=True, text=True)
        assert check.returncode == 0, check.stderr


def test_split_reload_rollback_promote(nginx, servers, tmp_path):
    stable_url, canary_url = servers
    proxy = CanaryProxy(tmp_path / "canary", nginx=nginx)
    try:
        url = proxy.start(stable_url, canary_url, percent=20, port=free_port(), stable_version="3", canary_version="4",
                          max_body_bytes=3_000_000)
        assert proxy.log_position() == 0  # the readiness probe (/__canary) is not logged

        # Headers and body limits pass through; the version header names the registry version.
        body, headers = get(url + "/predictions/generator", data=b"x" * 100_000,
                            headers={"Authorization": "Bearer secret-token"})
        assert body["authorization"] == "Bearer secret-token" and body["bytes"] == 100_000
        assert headers["X-Model-Version"] == {"stable": "3", "canary": "4"}[body["name"]]
        # Large bodies both ways pass (no temp files), one over the serving limit is refused by nginx.
        body, _ = get(url + "/predictions/generator?pad=3000000", data=b"x" * 2_000_000)
        assert body["bytes"] == 2_000_000 and len(body["pad"]) == 3_000_000
        with pytest.raises(urllib.error.HTTPError) as refused:
            get(url + "/predictions/generator", data=b"x" * 3_000_001)
        assert refused.value.code == 413
        # nginx logs a refused upload only when the connection closes (after its lingering close), and
        # the HTTPError keeps it open: close it, or the record may land after the mark below.
        refused.value.close()

        assert sum(logged(proxy, 0, 3).values()) == 3
        mark = proxy.log_position()
        seen = send(url, 1000)
        assert abs(seen["canary"] / 10 - 20) <= 5, seen
        # The access log agrees with what the upstreams answered, and names the upstream address.
        assert logged(proxy, mark, 1000) == seen
        records = proxy.records(since=mark)
        assert {r["upstream"] for r in records if r["side"] == "canary"} == {canary_url.removeprefix("http://")}

        proxy.set_percent(0)  # rollback
        assert send(url, 200) == {"stable": 200, "canary": 0}
        proxy.set_percent(100)  # promote
        logged(proxy, 0, 1203)
        mark = proxy.log_position()
        assert send(url, 200) == {"stable": 0, "canary": 200}
        assert logged(proxy, mark, 200) == {"stable": 0, "canary": 200}
        status = proxy.status()
        assert status["running"] and status["percent"] == 100 and status["canary_version"] == "4"
        assert status["sides"]["canary"]["requests"] + status["sides"]["stable"]["requests"] == 1403
        assert status["sides"]["canary"]["errors"] == 0
    finally:
        proxy.stop()
    assert proxy.pid() is None and proxy.status()["running"] is False


def test_a_bad_percent_is_refused_before_nginx_starts(nginx, servers, tmp_path):
    stable_url, canary_url = servers
    proxy = CanaryProxy(tmp_path / "canary", nginx=nginx)
    with pytest.raises(ValueError, match="outside 0..100"):
        proxy.start(stable_url, canary_url, percent=150, port=free_port())
    assert proxy.pid() is None
