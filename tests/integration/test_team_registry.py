"""The team registry for real: PostgreSQL (Debian's), S3 (moto's server) and an MLflow server, started and
stopped by ``productstudio.deploy.team_registry`` on 127.0.0.1. Against it: register, promote (measured, as in
test_registry.py), ``load_registered("models:/...@champion")``, ``package --alias champion``, the nginx canary,
and two processes registering at the same moment. What landed where is checked in the bucket (boto3) and in
the database (psycopg); at the end nothing the stack started is left running.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import psutil
import pytest
import yaml

from productstudio.cli import main
from productstudio.deploy import team_registry
from tests.conftest import REPO_ROOT
from tests.integration.team_services import canary_params, install_postgresql, leftovers, race
from tests.integration.team_services import team_registry as running_team_registry
from tests.integration.test_registry import NAME, _promote, _register, tiny  # noqa: F401  (tiny: the trained models)

pytestmark = pytest.mark.slow
CLIENT_SECRETS = ("MLFLOW_S3_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE", "PGPASSFILE")


@pytest.fixture(scope="module")
def team(tmp_path_factory):
    install_postgresql()
    state = tmp_path_factory.mktemp("team") / "registry"
    with running_team_registry(state) as record:
        yield {**record, "state": state}


@pytest.fixture
def client_env(team, tmp_path, monkeypatch):
    """A client of the team server: MLFLOW_TRACKING_URI only, no S3 or database credentials."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", team["tracking_uri"])
    for name in CLIENT_SECRETS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    return team


def _bucket_keys(state) -> list[str]:
    s3 = team_registry.s3_client(state)
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=team_registry.BUCKET)
    return [item["Key"] for page in pages for item in page.get("Contents", [])]


def test_everything_listens_on_loopback_only_with_private_credentials(team):
    from productstudio.steps.team_registry import format_start

    state = team["state"]
    status = team_registry.status(state)
    assert status["running"] and status["mlflow"]["healthy"] and status["postgres"]["running"] and status["s3"]["running"]
    assert f"export MLFLOW_TRACKING_URI={team['tracking_uri']}" in format_start(team)
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    for name in ("credentials.json", "pgpass"):
        assert stat.S_IMODE((state / name).stat().st_mode) == 0o600, name
    passwords = json.loads((state / "credentials.json").read_text()).values()
    for pid in team_registry.processes(state):
        try:
            process = psutil.Process(pid)
            command, listening = " ".join(process.cmdline()), [c for c in process.net_connections("inet")
                                                                if c.status == psutil.CONN_LISTEN]
        except psutil.Error:
            continue  # a short-lived helper
        assert not any(password in command for password in passwords), "a password on a command line"
        assert all(c.laddr.ip == "127.0.0.1" for c in listening), (command, listening)
    assert not any(password in (state / "logs" / "mlflow.log").read_text() for password in passwords)
    # PostgreSQL wants the password (scram): a wrong one is refused.
    import psycopg

    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(host="127.0.0.1", port=team["postgres"]["port"], user="mlflow", password="wrong", dbname="mlflow",
                        connect_timeout=10)


def test_register_promote_load_and_package_against_the_team_server(client_env, tiny, tmp_path, capsys):  # noqa: F811
    from productstudio.registry.model_registry import load_registered

    state = client_env["state"]
    assert _register(tiny, "weak") == 0
    assert "registered test-generator version 1" in capsys.readouterr().out
    assert _promote(tiny, tmp_path / "promote") == 0
    assert "promoted as the first champion" in capsys.readouterr().out
    assert _register(tiny, "good") == 0
    assert _promote(tiny, tmp_path / "promote") == 0
    assert "test-generator version 2: promoted" in capsys.readouterr().out

    generator, info = load_registered(f"models:/{NAME}@champion")
    assert info["version"] == "2" and info["tags"]["promotion.decision"] == "promoted"
    assert main(["package", "--params", str(tiny / "params.yaml"), "--alias", "champion", "--store", str(tmp_path / "store")]) == 0
    with zipfile.ZipFile(tmp_path / "store" / f"{NAME}.mar") as archive:
        assert json.loads(archive.read("MAR-INF/MANIFEST.json"))["model"]["modelVersion"] == "2"
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "mlruns").exists(), "everything went to the server"

    # The artifacts are in the bucket (under the server's prefix) ...
    keys = _bucket_keys(state)
    assert sum(key.startswith("mlflow/") and key.endswith("generator.safetensors") for key in keys) == 2, keys
    assert any(key.endswith("promotion/decision.json") for key in keys)
    # ... and runs, versions, aliases and tags in PostgreSQL.
    with team_registry.connect(state) as conn:
        versions = conn.execute("SELECT version, run_id FROM model_versions WHERE name = %s ORDER BY version", (NAME,)).fetchall()
        assert [version for version, _ in versions] == [1, 2]
        runs = conn.execute("SELECT artifact_uri FROM runs WHERE run_uuid = ANY(%s)", ([run for _, run in versions],)).fetchall()
        assert len(runs) == 2 and all(uri.startswith("mlflow-artifacts:") for uri, in runs), runs  # proxied by the server
        aliases = dict(conn.execute("SELECT alias, version FROM registered_model_aliases WHERE name = %s", (NAME,)).fetchall())
        assert aliases == {"champion": 2, "challenger": 2}
        decision = conn.execute("SELECT value FROM model_version_tags WHERE name = %s AND version = 2 AND key = %s",
                                (NAME, "promotion.decision")).fetchone()
        assert decision == ("promoted",)


def _call(url: str, key: str, body: dict | None = None):
    request = urllib.request.Request(url, data=json.dumps(body).encode() if body else None, method="POST" if body else "GET",
                                     headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


def test_canary_of_champion_and_challenger_from_the_team_registry(client_env, tiny, tmp_path, capsys):  # noqa: F811
    from productstudio.config import load_params
    from productstudio.deploy import local_canary
    from productstudio.serving.server import free_ports

    subprocess.run(["bash", str(REPO_ROOT / "scripts" / "install-nginx")], check=True, timeout=300)
    assert _register(tiny, "worse") == 0  # version 3, the challenger; version 2 stays champion
    assert "registered test-generator version 3" in capsys.readouterr().out
    params = canary_params(load_params(tiny / "params.yaml"), free_ports(11))
    state = tmp_path / "deploy"
    try:
        record = local_canary.start_canary(params, state, percent=50, wait_s=400)
        assert (record["stable_version"], record["canary_version"]) == ("2", "3")
        key = Path(record["key_file"]).read_text().strip()
        seen = {}
        for i in range(30):
            body = {"category": i % 10, "count": 1, "seed": i} if i % 10 == 0 else None
            status, headers, answer = _call(record["predict_url"] if body else record["url"] + "/ping", key, body)
            assert status == 200, answer
            seen[headers["X-Model-Side"]] = headers["X-Model-Version"]
        assert seen == {"stable": "2", "canary": "3"}
        assert main(["deploy", "rollback", "--state", str(state), "--reason", "team test"]) == 0
        assert main(["deploy", "promote", "--state", str(state)]) == 0
    finally:
        local_canary.stop_canary(state)
    with team_registry.connect(client_env["state"]) as conn:
        rollback = conn.execute("SELECT value FROM model_version_tags WHERE name = %s AND version = 3 AND key = %s",
                                (NAME, local_canary.ROLLBACK_TAG)).fetchone()
        assert rollback and rollback[0].endswith(": team test")
        champion = conn.execute("SELECT version FROM registered_model_aliases WHERE name = %s AND alias = 'champion'",
                                (NAME,)).fetchone()
        assert champion == (3,)


def _race_params(root: Path, directory: Path, name: str) -> Path:
    raw = yaml.safe_load((root / "params.yaml").read_text())
    raw["register"]["model_name"] = name
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _register_argv(root: Path, params: Path, model: str) -> list[str]:
    return ["register", "--params", str(params), "--generator", str(root / model / "generator"),
            "--evaluation", str(root / "evaluation"), "--processed", str(root / "processed")]


@pytest.mark.parametrize("store", ["team server", "sqlite"])
def test_two_processes_registering_at_once(store, request, tiny, tmp_path, monkeypatch):  # noqa: F811
    """Round 0: both register the same model (one version, both get it). Round 1: each registers its own model
    (two versions; 'challenger' on the newer)."""
    from productstudio.registry.model_registry import client as registry_client

    if store == "sqlite":
        monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'race.db'}")
        monkeypatch.chdir(tmp_path)
        # MLflow's own schema migration of a new sqlite file is not safe from two processes: create it first.
        registry_client().search_experiments()  # the tracking tables (the registry's come with them)
    else:
        request.getfixturevalue("client_env")
    same, two = _race_params(tiny, tmp_path, "race-same"), _race_params(tiny, tmp_path, "race-two")
    out_a, out_b = race([_register_argv(tiny, same, "good"), _register_argv(tiny, two, "weak")],
                        [_register_argv(tiny, same, "good"), _register_argv(tiny, two, "worse")],
                        tmp_path / "barrier", {**os.environ}, tmp_path)
    for out in (out_a, out_b):
        assert "race-same version 1 " in out and "round 0: exit 0" in out and "round 1: exit 0" in out, out

    client = registry_client()  # MLFLOW_TRACKING_URI: an earlier test may have set mlflow's global URI elsewhere
    assert [str(mv.version) for mv in client.search_model_versions("name='race-same'")] == ["1"]
    assert str(client.get_model_version_by_alias("race-same", "challenger").version) == "1"
    two_versions = sorted(int(mv.version) for mv in client.search_model_versions("name='race-two'"))
    assert two_versions == [1, 2]
    assert str(client.get_model_version_by_alias("race-two", "challenger").version) == "2"
    assert {f"registered race-two version {v} " in out_a + out_b for v in (1, 2)} == {True}
    if store == "sqlite":
        return
    with team_registry.connect(request.getfixturevalue("team")["state"]) as conn:
        rows = conn.execute("SELECT name, version, current_stage FROM model_versions WHERE name LIKE 'race-%' "
                            "ORDER BY name, version").fetchall()
        # MLflow keeps a deleted version as a row: a twin that both racers created, deleted again by the younger.
        assert [(name, version) for name, version, stage in rows if stage != "Deleted_Internal"] == [
            ("race-same", 1), ("race-two", 1), ("race-two", 2)]
        assert [(name, version) for name, version, stage in rows if stage == "Deleted_Internal"] in ([], [("race-same", 2)])
        aliases = conn.execute("SELECT name, alias, version FROM registered_model_aliases WHERE name LIKE 'race-%' "
                               "ORDER BY name").fetchall()
        assert aliases == [("race-same", "challenger", 1), ("race-two", "challenger", 2)]


def test_a_twin_and_a_stale_alias_are_undone_on_sqlite(tiny, tmp_path, monkeypatch, capsys):  # noqa: F811
    """The two halves of the race, made to happen for sure: a process whose first look missed a version that
    another process registered meanwhile (its own becomes a twin, deleted again), and a 'challenger' written
    from a stale listing (corrected on the second look)."""
    from mlflow.entities import ViewType

    from productstudio.registry import model_registry

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.chdir(tmp_path)
    assert _register(tiny, "weak") == 0
    capsys.readouterr()
    real = model_registry._versions
    looks = []

    def first_look_missed_it(mlflow_client, name):
        looks.append(name)
        return [] if len(looks) == 1 else real(mlflow_client, name)

    monkeypatch.setattr(model_registry, "_versions", first_look_missed_it)
    assert _register(tiny, "weak") == 0
    assert "version 1 already holds these weights" in capsys.readouterr().out
    client = model_registry.client()
    assert [str(mv.version) for mv in client.search_model_versions(f"name='{NAME}'")] == ["1"]
    experiment = client.get_experiment_by_name("productstudio").experiment_id
    assert len(client.search_runs([experiment], run_view_type=ViewType.DELETED_ONLY)) == 1  # the twin's run

    monkeypatch.setattr(model_registry, "_versions", real)
    assert _register(tiny, "worse") == 0  # version 3 (the deleted twin keeps its number), challenger
    looks.clear()

    def first_look_is_stale(mlflow_client, name):
        looks.append(name)
        return real(mlflow_client, name)[:1] if len(looks) == 1 else real(mlflow_client, name)

    monkeypatch.setattr(model_registry, "_versions", first_look_is_stale)
    newest = model_registry._hand_challenger(client, NAME)  # writes version 1 first, then sees version 2
    assert str(newest.version) == "3" and len(looks) == 4
    assert str(client.get_model_version_by_alias(NAME, "challenger").version) == "3"


def test_stop_leaves_nothing_running(team, capsys):
    state = team["state"]
    started = team_registry.processes(state)
    assert len(started) >= 3
    assert main(["registry", "status", "--state", str(state)]) == 0
    capsys.readouterr()
    assert main(["registry", "stop", "--state", str(state)]) == 0
    out = capsys.readouterr().out
    assert "stopped: mlflow, s3, postgres" in out and "dropped the database cluster" in out
    assert not leftovers(started)
    assert not Path(team["postgres"]["cluster"]).exists() and not (state / "credentials.json").exists()
    assert main(["registry", "status", "--state", str(state)]) == 3
