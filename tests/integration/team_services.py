"""Helpers for tests that run the team services for real: PostgreSQL (Debian's), the S3 stand-in (moto) and an
MLflow server, started and stopped by the library (productstudio.deploy.team_registry); processes racing
each other on a registry; a canary's params on free ports."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import psutil

from tests.conftest import REPO_ROOT


def install_postgresql() -> Path:
    """scripts/install-postgresql (a no-op when Debian's server binaries are there): their directory."""
    result = subprocess.run(["bash", str(REPO_ROOT / "scripts" / "install-postgresql")], capture_output=True, text=True,
                            timeout=900)
    assert result.returncode == 0, result.stderr
    return Path(result.stdout.strip().splitlines()[-1])


@contextmanager
def team_registry(state_dir: Path, **options):
    """The whole stack from ``team_registry.start``; on the way out it is stopped (database dropped) and no
    process it started may be left."""
    from productstudio.deploy import team_registry as team

    record = team.start(state_dir, port=0, **options)
    started = team.processes(state_dir)
    try:
        yield record
    finally:
        team.stop(state_dir, purge=True)
        assert not leftovers(started), "team registry processes left running"


def leftovers(pids: list[int], wait_s: float = 10.0) -> list[int]:
    """The pids still alive after up to ``wait_s`` (exiting processes take a moment)."""
    deadline = time.monotonic() + wait_s
    while (alive := [pid for pid in pids if psutil.pid_exists(pid)]) and time.monotonic() < deadline:
        time.sleep(0.2)
    return alive


# One process of a race: pay the imports, then for each round say 'ready' and wait for 'go' (a file each), then
# run that round's productstudio command. Both processes of a round are released by the same file.
RACER = """
import json, sys, time
from pathlib import Path
import mlflow, torch  # noqa: F401  (imported before the start line, not after it)
from productstudio.cli import main
from productstudio.registry import model_registry  # noqa: F401
barrier, rounds = Path(sys.argv[1]), json.loads(sys.argv[2])
for number, argv in enumerate(rounds):
    (barrier / f"ready-{number}-{sys.argv[3]}").touch()
    while not (barrier / f"go-{number}").exists():
        time.sleep(0.005)
    print(f"round {number}: exit {main(argv)}", flush=True)
"""


def race(rounds_a: list[list[str]], rounds_b: list[list[str]], barrier: Path, env: dict, cwd: Path,
         timeout: float = 300) -> tuple[str, str]:
    """Run two processes, A and B, through the same rounds; round i of both starts at the same moment.
    Returns both outputs; fails unless both exit 0."""
    barrier.mkdir(parents=True, exist_ok=True)
    processes = {}
    for side, rounds in (("a", rounds_a), ("b", rounds_b)):
        with open(barrier / f"{side}.out", "w") as out, open(barrier / f"{side}.err", "w") as err:  # files: no pipe to fill
            processes[side] = subprocess.Popen([sys.executable, "-c", RACER, str(barrier), json.dumps(rounds), side],
                                               stdout=out, stderr=err, env=env, cwd=cwd)
    deadline = time.monotonic() + timeout
    try:
        for number in range(len(rounds_a)):
            # A racer that died (or never gets ready) ends the race: the other would wait for ever.
            while not all((barrier / f"ready-{number}-{side}").exists() for side in processes):
                if any(p.poll() is not None for p in processes.values()) or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            else:
                (barrier / f"go-{number}").touch()
                continue
            break
        for p in processes.values():
            try:
                p.wait(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
    finally:
        for p in processes.values():
            if p.poll() is None:
                p.kill()
                p.wait()
    outputs = {side: ((barrier / f"{side}.out").read_text(), (barrier / f"{side}.err").read_text()) for side in processes}
    for side, p in processes.items():
        assert p.returncode == 0, f"racer {side} (exit {p.returncode}): {outputs[side][0][-2000:]}{outputs[side][1][-3000:]}"
    return outputs["a"][0], outputs["b"][0]


def canary_params(params, ports: list[int]):
    """``params`` with serve.* and deploy.canary_*/proxy ports taken from 11 free ``ports``."""
    serve_keys = ("inference_port", "management_port", "metrics_port", "grpc_inference_port", "grpc_management_port")
    deploy_keys = ("canary_inference_port", "canary_management_port", "canary_metrics_port", "canary_grpc_inference_port",
                   "canary_grpc_management_port", "proxy_port")
    return params.model_copy(update={
        "serve": params.serve.model_copy(update={**dict(zip(serve_keys, ports[:5])), "max_batch_delay_ms": 1}),
        "deploy": params.deploy.model_copy(update=dict(zip(deploy_keys, ports[5:11]))),
    })


def two_generator_registry(root: Path, name: str, generators: dict, categories: list[str]):
    """A sqlite registry at ``root/mlflow.db`` holding ``generators`` ({"1": Generator, "2": ...}) as versions of
    ``name``, v1 champion and v2 challenger, with MLFLOW_TRACKING_URI pointing at it: (client, MonkeyPatch to undo)."""
    import pytest
    from mlflow import MlflowClient

    from productstudio.models.io import save_generator

    uri = f"sqlite:///{root / 'mlflow.db'}"
    patch = pytest.MonkeyPatch()
    patch.setenv("MLFLOW_TRACKING_URI", uri)
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    client.create_registered_model(name)
    for version, generator in generators.items():
        model_dir = root / "models" / version
        save_generator(generator, model_dir / "artifacts" / "generator", categories=categories)
        client.create_model_version(name, str(model_dir))
    client.set_registered_model_alias(name, "champion", "1")
    client.set_registered_model_alias(name, "challenger", "2")
    return client, patch
