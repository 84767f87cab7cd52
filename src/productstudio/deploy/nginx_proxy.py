"""The canary proxy: nginx in front of two model servers, sending P % of requests to the challenger.

``render_nginx_conf`` is a pure function (unit-testable, ``nginx -t``-checkable); ``CanaryProxy`` runs
Debian's nginx (``make nginx`` puts it in ``.tools/nginx``) on that config with everything under one state
directory, so nothing needs root, /etc, /var or /run:

    proxy = CanaryProxy(".scratch/canary")
    proxy.start("http://127.0.0.1:8080", "http://127.0.0.1:8090", percent=10, port=8000,
                stable_version="3", canary_version="4")
    proxy.set_percent(0)      # rollback: everything to stable (a graceful reload, no dropped requests)
    proxy.set_percent(100)    # promote: everything to the challenger
    proxy.counts()            # {"stable": n, "canary": m} from the access log
    proxy.stop()

Each request is assigned by ``split_clients`` on ``$request_id`` (random per request), so the split is a
fair coin per request rather than per client. Every response carries ``X-Model-Side`` (stable/canary) and
``X-Model-Version``; every access-log line is a JSON object naming the side, the upstream address, the
status and the time taken, which is what ``deploy status``/``analyze`` read. The ``Authorization`` header
(TorchServe's token) is passed through unchanged: nginx adds no authentication of its own.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import urlsplit

from productstudio.errors import ParamsError, ServiceError

SIDES = ("stable", "canary")
# TorchServe's own default max_request_size (bytes). Callers pass params.yaml serve.max_request_size so
# nginx and the model server refuse the same bodies (413 from nginx, before a worker is tied up).
TORCHSERVE_MAX_REQUEST_SIZE = 6553500
STATUS_PATH = "/__canary"  # answered by nginx itself: the percent in force (not proxied, not logged)
REPO_NGINX = Path(__file__).resolve().parents[3] / ".tools" / "nginx" / "bin" / "nginx"


@dataclass(frozen=True)
class ProxyLimits:
    """What nginx allows a client (params.yaml deploy.proxy_*). A slow client (slowloris: headers or a body
    trickled in) is cut off after ``client_timeout_s`` of silence with 408; a flood from one address gets 429
    beyond ``connections_per_client`` requests in flight. Neither ties up a model worker: TorchServe sees a
    request only once nginx has started forwarding it."""

    client_timeout_s: int = 10
    keepalive_timeout_s: int = 15
    connections_per_client: int = 64
    max_connections: int = 4096

    @classmethod
    def from_settings(cls, deploy) -> "ProxyLimits":
        return cls(deploy.proxy_client_timeout_s, deploy.proxy_keepalive_timeout_s,
                   deploy.proxy_connections_per_client, deploy.proxy_max_connections)


def _json_error(code: int, message: str) -> str:
    """A named location answering ``code`` with the same one-line JSON body TorchServe's handler uses."""
    return (f"location @error{code} {{\n            default_type application/json;\n"
            f"            return {code} '{{\"code\":{code},\"message\":\"{message}\"}}';\n        }}")


def _host_port(url: str) -> str:
    """'http://127.0.0.1:8080' or '127.0.0.1:8080' -> '127.0.0.1:8080' (an nginx upstream server)."""
    parts = urlsplit(url if "//" in url else f"//{url}")
    if parts.scheme not in ("", "http") or not parts.hostname or not parts.port or parts.path not in ("", "/"):
        raise ValueError(f"{url!r}: expected http://host:port of a model server")
    return f"{parts.hostname}:{parts.port}"


def _percent(percent: float) -> float:
    value = round(float(percent), 2)  # split_clients takes at most two decimals
    if not 0 <= value <= 100:
        raise ParamsError(f"canary percent {percent} is outside 0..100")
    return value


def _quote(value: str) -> str:
    if any(c in value for c in "\"\\;{}$\n"):
        raise ParamsError(f"{value!r}: not allowed in an nginx config value")
    return f'"{value}"'


def render_nginx_conf(stable: str, canary: str, percent: float, port: int, state_dir: str | Path,
                      stable_version: str = "stable", canary_version: str = "canary",
                      max_body_bytes: int = TORCHSERVE_MAX_REQUEST_SIZE, key: str = "$request_id",
                      client_key: str | None = None, upstream_keys: dict | None = None,
                      limits: ProxyLimits = ProxyLimits()) -> str:
    """nginx.conf listening on 127.0.0.1:``port`` that sends ``percent`` % of requests to ``canary``.

    All paths (pid, logs, temporary files) are under ``state_dir``. ``percent`` 0 and 100 render a single
    branch, so a rollback or a promotion leaves no chance of a stray request to the other side.

    ``upstream_keys`` ({"stable": token, "canary": token}): two TorchServe instances each have their own
    token, so one client token cannot pass through to both; nginx then requires ``Bearer <client_key>``
    (401 otherwise) and sends each side its own token. Without it the client's header passes unchanged."""
    state = Path(state_dir).resolve()
    p = _percent(percent)
    if p == 0:
        branches = "* stable;"
    elif p == 100:
        branches = "* canary;"
    else:
        branches = f"{p:g}% canary;\n        * stable;"
    if upstream_keys:
        if not client_key:
            raise ValueError("upstream_keys need a client_key for nginx to check")
        auth_map = (f"map $ps_side $ps_auth {{\n        stable {_quote('Bearer ' + upstream_keys['stable'])};\n"
                    f"        canary {_quote('Bearer ' + upstream_keys['canary'])};\n    }}\n    ")
        auth_check = (f"if ($http_authorization != {_quote('Bearer ' + client_key)}) {{\n"
                      f"                return 401 '{{\"code\":401,\"message\":\"send Authorization: Bearer <proxy key>\"}}';\n            }}\n            ")
        auth_header = "$ps_auth"
    else:
        auth_map, auth_check, auth_header = "", "", "$http_authorization"
    temp = "\n    ".join(f"{kind}_temp_path {state / 'tmp' / kind};" for kind in
                          ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    return f"""# Rendered by productstudio.deploy.nginx_proxy: canary {p:g}% of requests.
worker_processes 1;
worker_rlimit_nofile {2 * limits.max_connections};
pid {state / 'nginx.pid'};
error_log {state / 'error.log'} warn;
events {{
    worker_connections {limits.max_connections};
}}
http {{
    # Nothing under /var: temporary files live in the state directory.
    {temp}
    server_tokens off;

    # Clients that go quiet (slowloris) are cut off with 408; one address gets 429 beyond its share.
    client_header_timeout {limits.client_timeout_s}s;
    client_body_timeout {limits.client_timeout_s}s;
    send_timeout {limits.client_timeout_s}s;
    keepalive_timeout {limits.keepalive_timeout_s}s;
    keepalive_requests 1000;
    reset_timedout_connection on;
    limit_conn_zone $binary_remote_addr zone=per_client:1m;
    limit_conn_status 429;
    limit_conn_log_level warn;

    split_clients "{key}" $ps_side {{
        {branches}
    }}
    map $ps_side $ps_version {{
        stable {_quote(stable_version)};
        canary {_quote(canary_version)};
    }}
    {auth_map}upstream stable {{
        server {_host_port(stable)};
        keepalive 8;
    }}
    upstream canary {{
        server {_host_port(canary)};
        keepalive 8;
    }}
    log_format canary escape=json '{{"time":"$time_iso8601","request_id":"$request_id",'
        '"side":"$ps_side","version":"$ps_version","upstream":"$upstream_addr","status":"$status",'
        '"upstream_status":"$upstream_status","request_time":"$request_time",'
        '"method":"$request_method","uri":"$request_uri","bytes_in":"$request_length"}}';
    access_log {state / 'access.log'} canary;

    server {{
        listen 127.0.0.1:{int(port)};
        # The model server's own limit (TorchServe max_request_size): nginx refuses nothing it accepts.
        client_max_body_size {int(max_body_bytes)};
        # Stream bodies both ways instead of spooling them to temp files: when nginx starts as root its
        # workers run as 'nobody' and may not reach a private state directory.
        client_body_buffer_size 1m;
        proxy_request_buffering off;
        proxy_max_temp_file_size 0;
        limit_conn per_client {limits.connections_per_client};
        # What nginx answers itself says why in one JSON line, like the model server's own 4xx.
        error_page 413 @error413;
        error_page 429 @error429;
        error_page 502 @error502;
        error_page 504 @error504;
        # On every answer, including nginx's own errors.
        add_header X-Model-Side $ps_side always;
        add_header X-Model-Version $ps_version always;
        add_header X-Request-ID $request_id always;

        location = {STATUS_PATH} {{
            access_log off;
            default_type application/json;
            return 200 '{{"percent":{p:g},"stable":{_quote(stable_version)},"canary":{_quote(canary_version)}}}';
        }}
        location / {{
            {auth_check}proxy_pass http://$ps_side;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
            # TorchServe's token auth: the client's bearer token (or, with upstream_keys, each side's own).
            proxy_set_header Authorization {auth_header};
            proxy_set_header X-Request-ID $request_id;
            # A failed canary request is reported, never silently retried on stable.
            proxy_next_upstream off;
            proxy_connect_timeout 5s;
            proxy_send_timeout {limits.client_timeout_s}s;
            proxy_read_timeout 120s;
        }}
        {_json_error(413, f"request body over {int(max_body_bytes)} bytes")}
        {_json_error(429, f"more than {limits.connections_per_client} requests in flight from one client: retry later")}
        {_json_error(502, "the model server of this side is not answering")}
        {_json_error(504, "the model server of this side did not answer in time")}
    }}
}}
"""


def example_conf() -> str:
    """deploy/nginx/canary.example.conf: champion on 8085, challenger on 8095, 10 % canary, proxy on 8090."""
    return render_nginx_conf("http://127.0.0.1:8085", "http://127.0.0.1:8095", 10, 8090, "/srv/product-studio/canary",
                             stable_version="3", canary_version="4", max_body_bytes=65536)


def nginx_binary() -> str:
    """$PRODUCTSTUDIO_NGINX, else the project's own (.tools/nginx, from ``make nginx``), else nginx on PATH."""
    for candidate in (os.environ.get("PRODUCTSTUDIO_NGINX"), str(REPO_NGINX), shutil.which("nginx")):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    raise ServiceError("nginx not found: run 'make nginx' (Debian's nginx into .tools/nginx, no root needed)")


def parse_access_log(path: str | Path, since: int = 0) -> list[dict]:
    """The JSON records of the access log from byte offset ``since``."""
    path = Path(path)
    if not path.is_file():
        return []
    with path.open("rb") as f:
        f.seek(since)
        return [json.loads(line) for line in f.read().splitlines() if line.strip()]


def count_sides(records: list[dict]) -> dict:
    """Requests, 5xx responses and mean seconds per side."""
    out = {}
    for side in SIDES:
        mine = [r for r in records if r.get("side") == side]
        out[side] = {"requests": len(mine),
                     "errors": sum(1 for r in mine if r.get("status", "").startswith("5")),
                     "mean_seconds": sum(float(r["request_time"]) for r in mine) / len(mine) if mine else None}
    return out


class CanaryProxy:
    """One nginx master with its config, pid, logs and temp files under ``state_dir``."""

    def __init__(self, state_dir: str | Path, nginx: str | None = None):
        self.state_dir = Path(state_dir).resolve()
        self._nginx_path = nginx  # found on first use: reading counts or settings needs no nginx
        self.conf = self.state_dir / "nginx.conf"
        self.state_file = self.state_dir / "canary.json"
        self.access_log = self.state_dir / "access.log"
        self.error_log = self.state_dir / "error.log"

    # -- nginx itself ------------------------------------------------------------------------------
    @property
    def nginx(self) -> str:
        if self._nginx_path is None:
            self._nginx_path = nginx_binary()
        return self._nginx_path

    def _nginx(self, *args: str) -> subprocess.CompletedProcess:
        # -p/-e: nginx would otherwise open /usr/share/nginx and its compiled-in error log first.
        cmd = [self.nginx, "-p", str(self.state_dir), "-e", str(self.error_log), "-c", str(self.conf), *args]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=30)

    def _write(self, settings: dict) -> None:
        (self.state_dir / "tmp").mkdir(parents=True, exist_ok=True)
        conf = render_nginx_conf(settings["stable"], settings["canary"], settings["percent"], settings["port"],
                                 self.state_dir, settings["stable_version"], settings["canary_version"],
                                 settings["max_body_bytes"], client_key=settings.get("client_key"),
                                 upstream_keys=settings.get("upstream_keys"),
                                 limits=ProxyLimits(**settings.get("limits", {})))
        previous = self.conf.read_text() if self.conf.is_file() else None
        self.conf.write_text(conf)
        check = self._nginx("-t", "-q")
        if check.returncode != 0:  # keep the last good config in force
            if previous is not None:
                self.conf.write_text(previous)
            raise ServiceError(f"nginx -t rejected the canary config: {check.stderr.strip()}")
        self.state_file.write_text(json.dumps(settings, indent=2) + "\n")
        for secret in (self.conf, self.state_file):  # they may hold tokens
            secret.chmod(0o600)

    def settings(self) -> dict:
        if not self.state_file.is_file():
            raise ServiceError(f"no canary proxy in {self.state_dir}")
        return json.loads(self.state_file.read_text())

    def pid(self) -> int | None:
        try:
            pid = int((self.state_dir / "nginx.pid").read_text().strip())
            os.kill(pid, 0)
            return pid
        except (FileNotFoundError, ValueError, ProcessLookupError, PermissionError):  # gone, or a reused pid
            return None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.settings()['port']}"

    def _served_percent(self) -> float | None:
        try:
            with urllib.request.urlopen(self.url + STATUS_PATH, timeout=2) as response:
                return float(json.loads(response.read())["percent"])
        except OSError:
            return None

    def _workers(self, master: int) -> set[int]:
        found = set()
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == master:  # field 4 of /proc/<pid>/stat: the parent pid
                found.add(int(stat.parent.name))
        return found

    def _wait_for(self, percent: float, old_workers: set[int] = frozenset(), timeout: float = 15.0) -> None:
        """Until nginx answers with ``percent`` and the previous config's workers have exited."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            master = self.pid()
            if master and self._served_percent() == percent and not (old_workers & self._workers(master)):
                return
            time.sleep(0.05)
        raise ServiceError(f"nginx did not serve the canary config within {timeout:.0f} s; see {self.error_log}")

    # -- the API the deploy commands use ---------------------------------------------------------------
    def start(self, stable_url: str, canary_url: str, percent: float, port: int, stable_version: str = "stable",
              canary_version: str = "canary", max_body_bytes: int = TORCHSERVE_MAX_REQUEST_SIZE,
              client_key: str | None = None, upstream_keys: dict | None = None,
              limits: ProxyLimits = ProxyLimits()) -> str:
        """Start nginx on 127.0.0.1:``port``; returns its URL. Fails if one already runs in ``state_dir``.
        ``client_key``/``upstream_keys``/``limits``: see ``render_nginx_conf``."""
        if self.pid():
            raise ServiceError(f"a canary proxy already runs from {self.state_dir} (pid {self.pid()}): stop it first")
        self._write({"stable": stable_url, "canary": canary_url, "percent": _percent(percent), "port": int(port),
                     "stable_version": str(stable_version), "canary_version": str(canary_version),
                     "max_body_bytes": int(max_body_bytes), "client_key": client_key, "upstream_keys": upstream_keys,
                     "limits": asdict(limits)})
        started = self._nginx()  # daemonizes: returns once the master is up and listening
        if started.returncode != 0:
            raise ServiceError(f"nginx failed to start: {started.stderr.strip()}")
        self._wait_for(_percent(percent))
        return self.url

    def set_percent(self, percent: float) -> None:
        """Change the share of the challenger with a graceful reload (0 = rollback, 100 = promote)."""
        self._reload(percent=_percent(percent))

    def set_upstream_keys(self, upstream_keys: dict) -> None:
        """Hand nginx each side's new TorchServe token (graceful reload; the client key stays)."""
        if not self.settings().get("client_key"):
            raise ServiceError(f"the canary proxy in {self.state_dir} passes the client's token through: no keys to set")
        self._reload(upstream_keys=upstream_keys)

    def _reload(self, **changes) -> None:
        master = self.pid()
        if not master:
            raise ServiceError(f"no canary proxy runs from {self.state_dir}")
        old_workers = self._workers(master)
        settings = {**self.settings(), **changes}
        self._write(settings)
        os.kill(master, signal.SIGHUP)  # what 'nginx -s reload' sends
        self._wait_for(settings["percent"], old_workers)

    def stop(self, timeout: float = 10.0) -> None:
        """Graceful stop (SIGQUIT), then SIGTERM if it lingers; a no-op when nothing runs."""
        master = self.pid()
        if not master:
            return
        os.kill(master, signal.SIGQUIT)
        deadline = time.monotonic() + timeout
        while self.pid() and time.monotonic() < deadline:
            time.sleep(0.05)
        if self.pid():
            os.kill(master, signal.SIGTERM)

    def status(self) -> dict:
        """What 'deploy status' shows: running or not, the split in force, and per-side request counts."""
        settings = self.settings() if self.state_file.is_file() else {}
        pid = self.pid()
        settings = {k: v for k, v in settings.items() if k not in ("client_key", "upstream_keys")}  # no tokens shown
        return {"running": pid is not None, "pid": pid, "url": self.url if settings else None, **settings,
                "sides": count_sides(self.records())}

    def log_position(self) -> int:
        """A mark in the access log, for counting only what comes after it."""
        return self.access_log.stat().st_size if self.access_log.is_file() else 0

    def records(self, since: int = 0) -> list[dict]:
        return parse_access_log(self.access_log, since)

    def counts(self, since: int = 0) -> dict:
        """{"stable": requests, "canary": requests} logged since the mark ``since``."""
        return {side: stats["requests"] for side, stats in count_sides(self.records(since)).items()}
