"""A registry a team can share: MLflow's tracking server on PostgreSQL, artifacts in S3, everything on 127.0.0.1.

    record = start(".scratch/registry")   # PostgreSQL (Debian's, our own cluster), a local S3 stand-in, mlflow server
    record["tracking_uri"]                # http://127.0.0.1:5000: what clients put in MLFLOW_TRACKING_URI
    status(".scratch/registry")
    stop(".scratch/registry")             # stops exactly what start started

- **PostgreSQL**: a cluster of its own (``initdb``), listening on 127.0.0.1 only (no Unix socket), password
  authentication (scram-sha-256) for two generated passwords: the superuser ``postgres`` and the role ``mlflow``
  that owns the database ``mlflow``. PostgreSQL refuses to run as root, so as root the cluster belongs to the
  user ``postgres`` and lives in its home (``~postgres/productstudio/<hash of the state dir>``); otherwise in
  ``STATE/postgres``. The server's database URI holds no password: libpq reads it from ``STATE/pgpass``.
- **S3**: ``artifacts`` (``s3://bucket/prefix``, with ``s3_endpoint`` for an S3-compatible service and the AWS_*
  credentials of the environment), or by default a local stand-in: moto's S3 server on 127.0.0.1 with the bucket
  ``productstudio-registry``. moto keeps objects in memory, so with the stand-in the whole stack is throwaway:
  ``stop`` drops the database too (runs must not outlive their artifacts). With a real bucket the cluster stays
  until ``stop(purge=True)``.
- **MLflow**: ``mlflow server --serve-artifacts``: clients upload and download artifacts through the tracking
  server, so they need neither S3 nor database credentials, only ``MLFLOW_TRACKING_URI``.

The state directory (0700) holds state.json (pids, ports, locations), credentials.json and pgpass (0600) and
logs/. MLflow's built-in basic auth is not switched on: its app needs Flask-WTF (``mlflow[auth]``), which the
locked package set lacks, so the server is only as private as 127.0.0.1.
"""

from __future__ import annotations

import hashlib
import json
import os
import pwd
import secrets
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from productstudio.errors import ServiceError

HOST = "127.0.0.1"
STATE_FILE = "state.json"
CREDENTIALS = "credentials.json"
PGPASS = "pgpass"
BUCKET = "productstudio-registry"
DATABASE = "mlflow"  # the database and the role that owns it
ADMIN = "postgres"
MOTO_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "moto", "AWS_SECRET_ACCESS_KEY": "moto", "AWS_DEFAULT_REGION": "us-east-1"}


# ------------------------------------------------------------------------------------------------
# Small helpers: private files, processes we started, waiting for a port to answer.


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to a file only its owner can read (created 0600, never world-readable in between)."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)


def _spawn(command: list[str], log: Path, env: dict, cwd: Path) -> dict:
    """Start ``command`` in the background, in its own session (it outlives the CLI that started it)."""
    import psutil

    with open(log, "ab") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                   cwd=cwd, start_new_session=True)
    # pid and start time: a pid alone may be reused by another program after a reboot.
    return {"pid": process.pid, "started": psutil.Process(process.pid).create_time()}


def _process(entry: dict | None):
    """The psutil.Process recorded in ``entry`` if it still runs (same pid *and* start time), else None."""
    import psutil

    if not entry or "pid" not in entry:  # a real bucket: no S3 process of ours
        return None
    try:
        process = psutil.Process(entry["pid"])
        if abs(process.create_time() - entry["started"]) < 0.01 and process.status() != psutil.STATUS_ZOMBIE:
            return process
    except psutil.Error:
        pass
    return None


def _kill(entry: dict | None, wait_s: float = 15.0) -> bool:
    """Stop a process we started and its children (uvicorn and its workers); False when it no longer ran."""
    import psutil

    process = _process(entry)
    if process is None:
        return False
    try:
        family = [process, *process.children(recursive=True)]
    except psutil.Error:
        family = [process]
    try:
        process.terminate()  # mlflow server hands SIGTERM on to uvicorn, which stops its workers itself
    except psutil.Error:
        pass
    _, alive = psutil.wait_procs(family, timeout=wait_s)
    for member in alive:
        try:
            member.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(alive, timeout=5)
    return True


def _answers(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status < 500
    except urllib.error.HTTPError as error:
        return error.code < 500  # S3 answers '/' with an error document: it is up
    except OSError:
        return False


def _wait_http(url: str, entry: dict, name: str, log: Path, wait_s: float) -> None:
    deadline = time.monotonic() + wait_s
    while not _answers(url):
        if _process(entry) is None:
            raise ServiceError(f"{name} exited while starting; see {log}")
        if time.monotonic() > deadline:
            raise ServiceError(f"{name} did not answer at {url} within {wait_s:.0f} s; see {log}")
        time.sleep(0.5)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


# ------------------------------------------------------------------------------------------------
# PostgreSQL: Debian's binaries, a cluster of our own.


def postgres_bin() -> Path:
    """The directory of initdb and pg_ctl: $PG_BIN, else Debian's newest /usr/lib/postgresql/*/bin, else PATH."""
    if os.environ.get("PG_BIN"):
        candidates = [Path(os.environ["PG_BIN"])]
    else:
        debian = Path("/usr/lib/postgresql").glob("*/bin")
        candidates = sorted(debian, key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0, reverse=True)
        if shutil.which("initdb"):
            candidates.append(Path(shutil.which("initdb")).parent)
    for candidate in candidates:
        if (candidate / "initdb").is_file() and (candidate / "pg_ctl").is_file():
            return candidate
    raise ServiceError("PostgreSQL's initdb and pg_ctl were not found: run 'make postgresql' "
                       "(scripts/install-postgresql) or set PG_BIN to their directory")


def _postgres_user():
    """None when we may run PostgreSQL ourselves; the 'postgres' account when we are root."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(ADMIN)
    except KeyError:
        raise ServiceError("PostgreSQL refuses to run as root and there is no 'postgres' user to run it "
                           "(apt-get install postgresql creates one)") from None


def cluster_dir(state_dir: Path) -> Path:
    user = _postgres_user()
    if user is None:
        return state_dir / "postgres"
    # The user 'postgres' cannot reach most of root's directories (pytest's are 0700): its own home it can.
    home = Path(user.pw_dir)
    if not home.is_dir():
        raise ServiceError(f"the user 'postgres' has no home directory ({home}) to keep a cluster in")
    return home / "productstudio" / hashlib.sha256(str(state_dir).encode()).hexdigest()[:12]


def _pg_run(command: list, cwd: Path, what: str, log: Path) -> subprocess.CompletedProcess:
    user = _postgres_user()
    ids = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []} if user else {}
    result = subprocess.run([str(c) for c in command], cwd=cwd, capture_output=True, text=True, timeout=120, **ids)
    if result.returncode != 0:
        last = ((result.stderr or result.stdout).strip().splitlines() or ["no output"])[-1]
        raise ServiceError(f"{what} failed: {last} (see {log})")
    return result


def _make_owned_dir(path: Path) -> None:
    """Create ``path`` (0700) owned by whoever runs PostgreSQL: as root ~postgres/productstudio/<hash>."""
    user = _postgres_user()
    if user is None:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        return
    for part in (path.parent, path):
        part.mkdir(exist_ok=True, mode=0o700)
        os.chown(part, user.pw_uid, user.pw_gid)


def _init_cluster(bin_dir: Path, cluster: Path, admin_password: str) -> None:
    data = cluster / "data"
    _make_owned_dir(cluster)
    password_file = cluster / "initdb-password"
    _write_private(password_file, admin_password + "\n")
    user = _postgres_user()
    if user:
        os.chown(password_file, user.pw_uid, user.pw_gid)
    try:
        _pg_run([bin_dir / "initdb", "-D", data, "-U", ADMIN, f"--pwfile={password_file}", "--auth=scram-sha-256",
                 "-E", "UTF8", "--no-locale"], cluster, "initdb", cluster)
    except BaseException:
        shutil.rmtree(data, ignore_errors=True)  # half a cluster would block the next initdb
        raise
    finally:
        password_file.unlink(missing_ok=True)
    # Rewriting the files initdb made keeps their owner. Only TCP on loopback, only with a password.
    (data / "pg_hba.conf").write_text("# productstudio team registry: loopback only, passwords (scram-sha-256)\n"
                                      "host all all 127.0.0.1/32 scram-sha-256\n")
    with open(data / "postgresql.conf", "a") as conf:
        conf.write("\n# productstudio team registry\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = ''\n"
                   "password_encryption = 'scram-sha-256'\n")


def _postgres_pid(cluster: Path) -> int | None:
    import psutil

    try:
        pid = int((cluster / "data" / "postmaster.pid").read_text().split()[0])
        return pid if psutil.pid_exists(pid) else None
    except (OSError, ValueError, IndexError):
        return None


def _start_postgres(bin_dir: Path, cluster: Path, port: int) -> None:
    log = cluster / "postgres.log"
    _pg_run([bin_dir / "pg_ctl", "-D", cluster / "data", "-l", log, "-w", "-t", "60", "-o", f"-p {port}", "start"],
            cluster, "pg_ctl start", log)


def _stop_postgres(bin_dir: Path, cluster: Path) -> bool:
    import psutil

    pid = _postgres_pid(cluster)
    if pid is None:
        return False
    _pg_run([bin_dir / "pg_ctl", "-D", cluster / "data", "-m", "fast", "-w", "-t", "60", "stop"], cluster, "pg_ctl stop",
            cluster / "postgres.log")
    try:  # pg_ctl returns once the pid file is gone; the postmaster exits a moment later
        psutil.Process(pid).wait(timeout=30)
    except psutil.Error:
        pass
    return True


def _create_database(port: int, credentials: dict) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(host=HOST, port=port, user=ADMIN, password=credentials["postgres"], dbname="postgres",
                         autocommit=True, connect_timeout=10) as conn:
        if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (DATABASE,)).fetchone():
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(DATABASE),
                                                                            sql.Literal(credentials[DATABASE])))
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)).fetchone():
            conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(DATABASE), sql.Identifier(DATABASE)))


def connect(state_dir: str | Path):
    """A psycopg connection to the registry's database as its owner (for inspection and tests)."""
    import psycopg

    state_dir = Path(state_dir).resolve()
    record = _load(state_dir)
    if not record or not record.get("postgres"):
        raise ServiceError(f"no team registry database recorded in {state_dir} (productstudio registry start)")
    credentials = json.loads((state_dir / CREDENTIALS).read_text())
    return psycopg.connect(host=HOST, port=record["postgres"]["port"], user=DATABASE, password=credentials[DATABASE],
                           dbname=DATABASE, connect_timeout=10)


# ------------------------------------------------------------------------------------------------
# The S3 stand-in (moto) and the MLflow server.


def _spawn_moto(state_dir: Path, port: int) -> dict:
    log = state_dir / "logs" / "s3.log"
    entry = _spawn([sys.executable, "-m", "moto.server", "-H", HOST, "-p", str(port)], log,
                   {**os.environ, **MOTO_CREDENTIALS}, state_dir)
    return {**entry, "port": port, "endpoint": f"http://{HOST}:{port}", "log": str(log), "local": True}


def _moto_client(endpoint: str):
    import boto3

    return boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=MOTO_CREDENTIALS["AWS_ACCESS_KEY_ID"],
                        aws_secret_access_key=MOTO_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
                        region_name=MOTO_CREDENTIALS["AWS_DEFAULT_REGION"])


def s3_client(state_dir: str | Path):
    """A boto3 S3 client for the registry's stand-in bucket (tests look at what landed there)."""
    record = _load(Path(state_dir).resolve())
    s3 = (record or {}).get("s3") or {}
    if not s3.get("local") or not s3.get("endpoint"):
        raise ServiceError(f"{state_dir}: no local S3 stand-in recorded")
    return _moto_client(s3["endpoint"])


def _spawn_mlflow(state_dir: Path, port: int, backend_uri: str, artifacts: str, s3_env: dict, workers: int) -> dict:
    log = state_dir / "logs" / "mlflow.log"
    command = [sys.executable, "-m", "mlflow", "server", "--host", HOST, "--port", str(port), "--workers", str(workers),
               "--backend-store-uri", backend_uri, "--artifacts-destination", artifacts, "--serve-artifacts"]
    # Job execution (a huey runner for MLflow's GenAI jobs) is not used by a model registry: fewer processes.
    env = {**os.environ, **s3_env, "PGPASSFILE": str(state_dir / PGPASS), "MLFLOW_DISABLE_TELEMETRY": "true",
           "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    env.pop("MLFLOW_TRACKING_URI", None)
    return {**_spawn(command, log, env, state_dir), "port": port, "log": str(log), "backend_store_uri": backend_uri}


# ------------------------------------------------------------------------------------------------
# start / stop / status


def _load(state_dir: Path) -> dict | None:
    try:
        return json.loads((state_dir / STATE_FILE).read_text())
    except (OSError, ValueError):
        return None


def _save(state_dir: Path, record: dict) -> None:
    (state_dir / STATE_FILE).write_text(json.dumps(record, indent=2) + "\n")


def _running(record: dict | None) -> list[str]:
    if not record:
        return []
    names = [name for name in ("mlflow", "s3") if _process(record.get(name))]
    if record.get("postgres") and _postgres_pid(Path(record["postgres"]["cluster"])):
        names.append("postgres")
    return names


def start(state_dir: str | Path, port: int = 5000, artifacts: str | None = None, s3_endpoint: str | None = None,
          workers: int = 1, wait_s: float = 180.0) -> dict:
    """Start PostgreSQL, the S3 stand-in (unless ``artifacts`` names a real bucket) and the MLflow server on
    127.0.0.1:``port`` (0: a free one). Returns what state.json records; ``tracking_uri`` is for the clients."""
    state_dir = Path(state_dir).resolve()
    if running := _running(_load(state_dir)):
        raise ServiceError(f"a team registry already runs from {state_dir} ({', '.join(running)}): "
                           "productstudio registry stop")
    if artifacts is not None and not artifacts.startswith("s3://"):
        raise ServiceError(f"--artifacts-destination {artifacts}: expected s3://bucket/prefix")
    state_dir.mkdir(parents=True, exist_ok=True)
    state_dir.chmod(0o700)
    (state_dir / "logs").mkdir(exist_ok=True)
    bin_dir = postgres_bin()
    cluster = cluster_dir(state_dir)
    # Whether the stack is throwaway (the in-memory stand-in) is known now: a failed start must not drop a kept cluster.
    record: dict = {"state_dir": str(state_dir), "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "s3": {"local": artifacts is None, "artifacts": artifacts, "endpoint": s3_endpoint}}
    try:
        # PostgreSQL: a new cluster with new passwords, or the kept one with its passwords.
        if (cluster / "data" / "PG_VERSION").exists():
            try:
                credentials = json.loads((state_dir / CREDENTIALS).read_text())
            except (OSError, ValueError):
                raise ServiceError(f"{cluster} holds a cluster but {state_dir / CREDENTIALS} is gone: "
                                   "productstudio registry stop --purge drops it") from None
        else:
            credentials = {ADMIN: secrets.token_urlsafe(24), DATABASE: secrets.token_urlsafe(24)}
            _write_private(state_dir / CREDENTIALS, json.dumps(credentials, indent=2) + "\n")
            _init_cluster(bin_dir, cluster, credentials[ADMIN])
        pg_port = free_port()
        record["postgres"] = {"cluster": str(cluster), "bin": str(bin_dir), "port": pg_port,
                              "version": (cluster / "data" / "PG_VERSION").read_text().strip(),
                              "log": str(cluster / "postgres.log")}
        _save(state_dir, record)  # from here on 'stop' knows what to stop
        _start_postgres(bin_dir, cluster, pg_port)
        _create_database(pg_port, credentials)
        _write_private(state_dir / PGPASS, f"{HOST}:{pg_port}:{DATABASE}:{DATABASE}:{credentials[DATABASE]}\n")

        # S3: the stand-in, or the bucket given (credentials from the environment, as boto3 finds them).
        if artifacts is None:
            artifacts = f"s3://{BUCKET}/mlflow"
            record["s3"] = {**_spawn_moto(state_dir, free_port()), "artifacts": artifacts}
            s3_env = {**MOTO_CREDENTIALS, "MLFLOW_S3_ENDPOINT_URL": record["s3"]["endpoint"]}
        else:
            s3_env = {"MLFLOW_S3_ENDPOINT_URL": s3_endpoint} if s3_endpoint else {}
        _save(state_dir, record)

        # MLflow starts while moto does (it only talks to S3 when asked for artifacts).
        backend_uri = f"postgresql+psycopg://{DATABASE}@{HOST}:{pg_port}/{DATABASE}"  # password: pgpass
        port = port or free_port()
        record["mlflow"] = _spawn_mlflow(state_dir, port, backend_uri, artifacts, s3_env, workers)
        record["tracking_uri"] = f"http://{HOST}:{port}"
        _save(state_dir, record)
        if record["s3"]["local"]:
            s3 = record["s3"]
            _wait_http(s3["endpoint"] + "/", s3, "the S3 stand-in (moto)", Path(s3["log"]), wait_s)
            _moto_client(s3["endpoint"]).create_bucket(Bucket=BUCKET)
        _wait_http(record["tracking_uri"] + "/health", record["mlflow"], "mlflow server", Path(record["mlflow"]["log"]),
                   wait_s)
    except BaseException:
        stop(state_dir)
        raise
    return record


def stop(state_dir: str | Path, purge: bool = False) -> dict:
    """Stop the MLflow server, the S3 stand-in and PostgreSQL started from ``state_dir``. With the stand-in (its
    objects were in memory) or ``purge`` the database goes too. Returns what stopped and what was dropped."""
    state_dir = Path(state_dir).resolve()
    record = _load(state_dir)
    if record is None:
        return {"stopped": [], "dropped": None, "state_dir": str(state_dir)}
    stopped = [name for name in ("mlflow", "s3") if _kill(record.get(name))]
    dropped = None
    postgres = record.get("postgres")
    if postgres:
        cluster = Path(postgres["cluster"])
        if _stop_postgres(Path(postgres["bin"]), cluster):
            stopped.append("postgres")
        if purge or (record.get("s3") or {}).get("local", True):
            shutil.rmtree(cluster, ignore_errors=True)
            for name in (CREDENTIALS, PGPASS):
                (state_dir / name).unlink(missing_ok=True)
            dropped = str(cluster)
    record["stopped_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    _save(state_dir, record)
    return {"stopped": stopped, "dropped": dropped, "state_dir": str(state_dir)}


def status(state_dir: str | Path) -> dict:
    """What runs from ``state_dir``: each service's pid and whether it answers, the tracking URI."""
    state_dir = Path(state_dir).resolve()
    record = _load(state_dir)
    if record is None:
        return {"running": False, "state_dir": str(state_dir)}
    running = _running(record)
    local_s3 = (record.get("s3") or {}).get("local", True)
    out = {"running": {"mlflow", "postgres"} <= set(running) and ("s3" in running or not local_s3),
           "state_dir": str(state_dir), "tracking_uri": record.get("tracking_uri")}
    if record.get("mlflow"):
        out["mlflow"] = {"pid": record["mlflow"]["pid"], "running": "mlflow" in running,
                         "healthy": "mlflow" in running and _answers(record["tracking_uri"] + "/health"),
                         "log": record["mlflow"]["log"]}
    if record.get("postgres"):
        pg = record["postgres"]
        out["postgres"] = {"pid": _postgres_pid(Path(pg["cluster"])), "running": "postgres" in running,
                           "address": f"{HOST}:{pg['port']}", "database": DATABASE, "version": pg["version"],
                           "log": pg["log"]}
    s3 = record.get("s3") or {}
    if s3.get("artifacts"):
        out["s3"] = {"artifacts": s3["artifacts"], "endpoint": s3.get("endpoint"), "local": s3["local"]}
        if s3["local"]:
            out["s3"].update(pid=s3.get("pid"), running="s3" in running)
    return out


def processes(state_dir: str | Path) -> list[int]:
    """The pids of everything running from ``state_dir``, children included (tests check none is left)."""
    import psutil

    record = _load(Path(state_dir).resolve()) or {}
    pids = [process.pid for process in (_process(record.get(name)) for name in ("mlflow", "s3")) if process]
    if record.get("postgres") and (pid := _postgres_pid(Path(record["postgres"]["cluster"]))):
        pids.append(pid)
    found = []
    for pid in pids:
        try:
            found += [pid, *(child.pid for child in psutil.Process(pid).children(recursive=True))]
        except psutil.Error:
            pass
    return found
