"""Run TorchServe for the generator archive: a generated config.properties, start, stop, status.

    handle = start(settings, "serving/model-store/product-studio-generator.mar", ".scratch/serve")
    handle.inference_url, handle.inference_key   # POST {inference_url}/predictions/<name>, Bearer <key>
    stop(".scratch/serve")

Everything TorchServe writes lives in the state directory: config.properties, key_file.json (the tokens;
TorchServe writes it into its working directory), logs/, and its pid file (TorchServe keeps that in the
temp directory, so TMPDIR points inside the state directory: two servers with different state
directories do not stop each other).

Security: all three APIs bound to 127.0.0.1; token authorization left on; the management API cannot
register models unless ``enable_model_api``; ``allowed_urls`` only matches archives in the model store;
``max_request_size`` makes the frontend answer 413 to oversized bodies; weights are safetensors/ONNX.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from productstudio.config import ServeSettings
from productstudio.errors import MissingInput, ServiceError

HOST = "127.0.0.1"
KEY_FILE = "key_file.json"
PID_FILE = ".model_server.pid"
SERVER_FILE = "server.json"


@dataclass(frozen=True)
class ServerHandle:
    state_dir: Path
    model: str
    inference_url: str
    management_url: str
    metrics_url: str

    @property
    def key_file(self) -> Path:
        return self.state_dir / KEY_FILE

    def keys(self) -> dict:
        """TorchServe's tokens: {"inference": ..., "management": ..., "API": ...}."""
        raw = json.loads(self.key_file.read_text())
        return {kind: entry["key"] if isinstance(entry, dict) else entry for kind, entry in raw.items()}

    @property
    def inference_key(self) -> str:
        return self.keys()["inference"]

    @property
    def predict_url(self) -> str:
        return f"{self.inference_url}/predictions/{self.model}"

    def curl_example(self) -> str:
        return (f"curl -s -H \"Authorization: Bearer $(python -c \"import json;print(json.load(open('{self.key_file}'))"
                f"['inference']['key'])\")\" -H 'Content-Type: application/json' "
                f"-d '{{\"category\": \"Sneaker\", \"count\": 4, \"seed\": 1}}' {self.predict_url}")


def _mar_version(mar: Path) -> str:
    with zipfile.ZipFile(mar) as archive:
        return json.loads(archive.read("MAR-INF/MANIFEST.json"))["model"]["modelVersion"]


def config_properties(settings: ServeSettings, store: Path, mar: Path, model: str) -> str:
    """The config.properties text for serving ``mar`` (inside ``store``) as ``model``."""
    models = {model: {_mar_version(mar): {
        "defaultVersion": True, "marName": mar.name,
        "minWorkers": settings.workers, "maxWorkers": settings.workers,
        "batchSize": settings.batch_size, "maxBatchDelay": settings.max_batch_delay_ms,
        "responseTimeout": settings.response_timeout_s,
    }}}
    lines = {
        "inference_address": f"http://{HOST}:{settings.inference_port}",
        "management_address": f"http://{HOST}:{settings.management_port}",
        "metrics_address": f"http://{HOST}:{settings.metrics_port}",
        # gRPC cannot be switched off: bind it to loopback on our own ports (two servers must not collide).
        "grpc_inference_address": HOST, "grpc_inference_port": str(settings.grpc_inference_port),
        "grpc_management_address": HOST, "grpc_management_port": str(settings.grpc_management_port),
        "model_store": str(store),
        "load_models": mar.name,
        "models": json.dumps(models),
        "enable_model_api": str(settings.enable_model_api).lower(),
        # Only archives already in the model store (ShellTorch: no remote URLs, no other paths).
        "allowed_urls": f"file://{re.escape(str(store))}/[^/]+\\.mar",
        "max_request_size": str(settings.max_request_size),
        "token_expiration_min": str(settings.token_expiration_min),
        "default_workers_per_model": str(settings.workers),
        "install_py_dep_per_model": "false",  # never pip-install from an archive
        "enable_envvars_config": "false",
        "disable_system_metrics": "true",
        "vmargs": "-Xmx512m -XX:+UseSerialGC -XX:-UsePerfData",
    }
    # .properties files treat a backslash as an escape: double them so the regex arrives intact.
    return "".join(f"{key}={value.replace(chr(92), chr(92) * 2)}\n" for key, value in lines.items())


def _rolling_file(name: str, location: str, layout: str) -> str:
    return (f'    <RollingFile name="{name}" fileName="${{env:{location}:-logs}}/{name}.log" '
            f'filePattern="${{env:{location}:-logs}}/{name}.%i.log.gz">\n'
            f'      <PatternLayout pattern="{layout}"/>\n'
            f'      <Policies><SizeBasedTriggeringPolicy size="100 MB"/></Policies>\n'
            f'      <DefaultRolloverStrategy max="5"/>\n    </RollingFile>\n')


def log4j_config() -> str:
    """TorchServe's log4j2 configuration: each line written once, to its own file.

    TorchServe's built-in one logs at DEBUG and copies every access-log and metric line into ts_log.log and
    stdout as well: about ten file writes per request, which cost the frontend as much CPU as the request
    itself. Here: access_log, ts_metrics, model_metrics and model_log once each; ts_log.log at INFO (worker
    starts, deaths and restarts stay in it: ``deploy status`` counts the deaths); anything else WARN and up.
    """
    detailed = "%d{ISO8601} [%-5p] %t %c - %m%n"
    brief = "%d{ISO8601} - %m%n"
    appenders = "".join(_rolling_file(name, location, layout) for name, location, layout in (
        ("access_log", "LOG_LOCATION", brief), ("model_log", "LOG_LOCATION", detailed), ("ts_log", "LOG_LOCATION", detailed),
        ("model_metrics", "METRICS_LOCATION", brief), ("ts_metrics", "METRICS_LOCATION", brief)))
    loggers = "".join(f'    <Logger name="{name}" level="{level}" additivity="false"><AppenderRef ref="{ref}"/></Logger>\n'
                      for name, level, ref in (("ACCESS_LOG", "info", "access_log"), ("MODEL_LOG", "info", "model_log"),
                                               ("MODEL_METRICS", "info", "model_metrics"), ("TS_METRICS", "info", "ts_metrics"),
                                               ("org.pytorch.serve", "info", "ts_log")))
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<!-- Written by productstudio.serving.server.log4j_config -->\n'
            f'<Configuration>\n  <Appenders>\n{appenders}  </Appenders>\n  <Loggers>\n{loggers}'
            f'    <Logger name="io.netty" level="error"/>\n    <Logger name="org.apache" level="off"/>\n'
            f'    <Root level="warn"><AppenderRef ref="ts_log"/></Root>\n  </Loggers>\n</Configuration>\n')


def _torchserve() -> str:
    beside = Path(sys.executable).with_name("torchserve")
    found = str(beside) if beside.exists() else shutil.which("torchserve")
    if not found:
        raise ServiceError("torchserve is not installed (pip install torchserve==0.12.0)")
    return found


def _env(state_dir: Path, settings: ServeSettings) -> dict:
    tmp = state_dir / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    return {**os.environ, "TMPDIR": str(tmp), "TEMP": str(tmp), "LOG_LOCATION": str(state_dir / "logs"),
            "METRICS_LOCATION": str(state_dir / "logs"), "PRODUCTSTUDIO_SERVE_THREADS": str(settings.threads),
            "TS_DECODE_INPUT_REQUEST": "false"}  # bodies reach the handler as bytes: one JSON decoder, ours


def _pid(state_dir: Path) -> int | None:
    path = state_dir / "tmp" / PID_FILE
    try:
        pid = int(path.read_text().split()[0])
        os.kill(pid, 0)
        return pid
    except (OSError, ValueError, IndexError):
        return None


def handle_for(settings: ServeSettings, state_dir: str | Path, model: str) -> ServerHandle:
    return ServerHandle(Path(state_dir).resolve(), model, f"http://{HOST}:{settings.inference_port}",
                        f"http://{HOST}:{settings.management_port}", f"http://{HOST}:{settings.metrics_port}")


def load_handle(state_dir: str | Path) -> ServerHandle | None:
    """The handle of the server last started from ``state_dir`` (its model and URLs), None if never started."""
    state_dir = Path(state_dir).resolve()
    try:
        saved = json.loads((state_dir / SERVER_FILE).read_text())
    except (OSError, ValueError):
        return None
    return ServerHandle(state_dir, saved["model"], saved["inference_url"], saved["management_url"], saved["metrics_url"])


def served_archive(state_dir: str | Path) -> Path:
    """The model archive served from ``state_dir``: the one ``start`` recorded, or the one archive in the state's
    model store for servers started before it did."""
    state_dir = Path(state_dir).resolve()
    try:
        recorded = json.loads((state_dir / SERVER_FILE).read_text()).get("archive")
    except (OSError, ValueError):
        recorded = None
    archives = [Path(recorded)] if recorded else sorted((state_dir / "model-store").glob("*.mar"))
    if len(archives) != 1 or not archives[0].is_file():
        raise MissingInput(f"{state_dir}: cannot tell which model archive is served (start it with productstudio serve)")
    return archives[0]


def served_config(state_dir: str | Path) -> dict:
    """config.json of the model archive served from ``state_dir`` (its categories, ...)."""
    with zipfile.ZipFile(served_archive(state_dir)) as archive:
        return json.loads(archive.read("config.json"))


def ping(handle: ServerHandle, timeout: float = 2.0) -> bool:
    # With token authorization on, even /ping needs the inference key (without it: 400).
    try:
        request = urllib.request.Request(f"{handle.inference_url}/ping",
                                         headers={"Authorization": f"Bearer {handle.inference_key}"})
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read()).get("status") == "Healthy"
    except (OSError, ValueError, KeyError):
        return False


def renew_key(handle: ServerHandle, kind: str = "inference", timeout: float = 10.0) -> str:
    """A fresh ``kind`` token ("inference" or "management"); returns it.

    TorchServe's keys expire after ``token_expiration_min``. Its management API hands out a new one for
    the non-expiring "API" key (GET /token?type=...) and rewrites key_file.json; the old one stops
    working at once.
    """
    if kind not in ("inference", "management"):
        raise ValueError(f"unknown token kind {kind!r} (inference or management)")
    keys = handle.keys()
    request = urllib.request.Request(f"{handle.management_url}/token?type={kind}",
                                     headers={"Authorization": f"Bearer {keys['API']}"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            response.read()
    except urllib.error.HTTPError as error:
        raise ServiceError(f"TorchServe refused a new {kind} key: HTTP {error.code} {error.read()[:200]!r}") from None
    renewed = handle.keys()[kind]
    if renewed == keys[kind]:
        raise ServiceError(f"TorchServe answered but {handle.key_file} still holds the old {kind} key")
    return renewed


def running_handle(state_dir: str | Path) -> ServerHandle:
    """The handle of the TorchServe running from ``state_dir``; RuntimeError when none runs."""
    handle = load_handle(state_dir)
    if handle is None or _pid(handle.state_dir) is None:
        raise MissingInput(f"no TorchServe running from {state_dir} (productstudio serve start)")
    return handle


def renew_keys(handle: ServerHandle) -> dict:
    """New inference and management keys: {"inference": ..., "management": ...}."""
    return {kind: renew_key(handle, kind) for kind in ("management", "inference")}


def key_expiry(handle: ServerHandle) -> dict:
    """{"inference": "<expiration time>", "management": ...} as TorchServe records them in key_file.json."""
    raw = json.loads(handle.key_file.read_text())
    return {kind: entry.get("expiration time") for kind, entry in raw.items() if isinstance(entry, dict) and kind != "API"}


def model_ready(handle: ServerHandle, timeout: float = 2.0) -> bool:
    """True once a worker of the model is READY (asked of the management API, with its token)."""
    try:
        request = urllib.request.Request(f"{handle.management_url}/models/{handle.model}",
                                         headers={"Authorization": f"Bearer {handle.keys()['management']}"})
        with urllib.request.urlopen(request, timeout=timeout) as response:
            described = json.loads(response.read())
        return any(w.get("status") == "READY" for entry in described for w in entry.get("workers", []))
    except (OSError, ValueError, KeyError):
        return False


def start(settings: ServeSettings, mar: str | Path, state_dir: str | Path, model: str | None = None,
          wait_s: float = 120.0) -> ServerHandle:
    """Start TorchServe in the background serving ``mar`` (copied into ``state_dir/model-store`` unless it is
    already there) and wait until the model answers; returns the handle (URLs, key file)."""
    state_dir, mar = Path(state_dir).resolve(), Path(mar).resolve()
    if not mar.exists():
        raise MissingInput(f"{mar}: no such model archive (run productstudio package)")
    model = model or mar.stem
    if _pid(state_dir):
        raise ServiceError(f"TorchServe already runs from {state_dir} (productstudio serve stop)")
    store = state_dir / "model-store"
    store.mkdir(parents=True, exist_ok=True)
    if mar.parent != store:
        shutil.copy2(mar, store / mar.name)
        mar = store / mar.name
    config = state_dir / "config.properties"
    config.write_text(config_properties(settings, store, mar, model))
    (state_dir / KEY_FILE).unlink(missing_ok=True)
    logs = state_dir / "logs"
    if logs.is_dir():  # logs/ is this start's (status counts its requests and worker deaths); keep one previous
        shutil.rmtree(state_dir / "logs.previous", ignore_errors=True)
        logs.rename(state_dir / "logs.previous")
    (state_dir / "log4j2.xml").write_text(log4j_config())
    command = [_torchserve(), "--start", "--ts-config", str(config), "--model-store", str(store), "--ncs",
               "--log-config", str(state_dir / "log4j2.xml")]
    if settings.enable_model_api:
        command.append("--enable-model-api")
    with open(state_dir / "torchserve.out", "w") as out:
        subprocess.run(command, cwd=state_dir, env=_env(state_dir, settings), stdout=out, stderr=subprocess.STDOUT, check=True)
    handle = handle_for(settings, state_dir, model)
    (state_dir / SERVER_FILE).write_text(json.dumps({"model": model, "inference_url": handle.inference_url,
                                                    "management_url": handle.management_url,
                                                    "metrics_url": handle.metrics_url, "archive": str(mar)}))
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if _pid(state_dir) is None:
            raise ServiceError(f"TorchServe exited while starting; see {state_dir / 'logs'} and {state_dir / 'torchserve.out'}")
        if handle.key_file.exists() and ping(handle) and model_ready(handle):
            return handle
        time.sleep(0.5)
    stop(state_dir)
    raise ServiceError(f"TorchServe did not get {model} ready within {wait_s:.0f} s; see {state_dir / 'logs'}")


def _family(pid: int) -> list:
    import psutil

    try:
        parent = psutil.Process(pid)
        return [parent, *parent.children(recursive=True)]
    except psutil.Error:
        return []


def stop(state_dir: str | Path, wait_s: float = 30.0) -> bool:
    """Stop the TorchServe started from ``state_dir`` and its workers; False when none ran."""
    import psutil

    state_dir = Path(state_dir).resolve()
    pid = _pid(state_dir)
    if pid is None:
        return False
    processes = _family(pid)  # the workers too: they must not outlive the frontend
    subprocess.run([_torchserve(), "--stop"], cwd=state_dir, env={**os.environ, "TMPDIR": str(state_dir / "tmp")},
                   capture_output=True, check=False)
    _, alive = psutil.wait_procs(processes, timeout=wait_s)
    for process in alive:
        process.kill()
    psutil.wait_procs(alive, timeout=5)
    (state_dir / KEY_FILE).unlink(missing_ok=True)
    return True


def status(state_dir: str | Path) -> dict:
    state_dir = Path(state_dir).resolve()
    handle = load_handle(state_dir)
    pid = _pid(state_dir)
    if handle is None:
        return {"running": pid is not None, "pid": pid, "state_dir": str(state_dir)}
    return {"model": handle.model, "running": pid is not None, "pid": pid, "healthy": pid is not None and ping(handle),
            "model_ready": pid is not None and model_ready(handle), "inference_url": handle.inference_url,
            "predict_url": handle.predict_url, "key_file": str(handle.key_file)}


def free_ports(n: int) -> list[int]:
    """n distinct free TCP ports on 127.0.0.1 (held open together so none is handed out twice)."""
    import socket

    sockets = [socket.socket() for _ in range(n)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports
