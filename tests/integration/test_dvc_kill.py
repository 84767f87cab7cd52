"""kill -9 in the middle of each DVC stage in turn: the next `dvc repro` finishes with the outputs of an uninterrupted run.

Two identical scratch projects (tests/integration/dvc_project.py). The reference runs `dvc repro register` once.
The other runs it, is killed (SIGKILL to the whole process group: DVC and the stage's command) while a stage is
half done, runs it again, is killed in the next stage, and so on through ingest, validate, preprocess, train (after
its first checkpoint, so the rerun resumes), evaluate, quantize and register (twice: while the model is being logged,
and once the version exists). Then one last `dvc repro register` must finish, `dvc status` be clean, and every output
equal the reference's, apart from the fields listed in WALL_CLOCK, which differ between any two runs.
"""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import sqlite3
import subprocess
import time
from contextlib import closing
from pathlib import Path

import pytest

from productstudio.artifacts import code_version
from tests.integration.dvc_project import DVC, make_project, run

pytestmark = pytest.mark.slow

TARGET = "register"  # pulls ingest .. quantize; not the baseline, promote or the editing stages
MODEL_NAME = "product-studio-generator"  # params.yaml register.model_name


def _any(root: Path, pattern: str) -> bool:
    return any(root.glob(pattern))


def _db_count(root: Path, sql: str) -> int:
    """A count from the project's MLflow sqlite store (read-only; 0 while it is locked or not created yet)."""
    try:
        with closing(sqlite3.connect(f"file:{root.parent / 'mlflow.db'}?mode=ro", uri=True, timeout=0.2)) as db:
            return db.execute(sql).fetchone()[0]
    except sqlite3.Error:
        return 0


# (stage, what shows the stage is half done, in words, the check). Each check is false before its stage starts.
KILLS = [
    ("ingest", "data/raw created, its manifest not yet written", lambda r: (r / "data/raw").is_dir()),
    ("validate", "reports/validation/metadata.csv written, the suite not yet run",
     lambda r: (r / "reports/validation/metadata.csv").exists()),
    ("preprocess", "shards being written into the staging directory data/.processed.*.tmp",
     lambda r: _any(r / "data", ".processed.*.tmp/*")),
    ("train", "checkpoint step 10 of 20 on disk", lambda r: (r / "models/train/checkpoints/step-00000010.pt").exists()),
    ("evaluate", "generated-image features being cached (.scratch/generated-features)",
     lambda r: _any(r / ".scratch/generated-features", "generated-*.json")),
    ("quantize", "ONNX export begun in the staging directory models/.quantized.*.tmp",
     lambda r: _any(r / "models", ".quantized.*.tmp/*")),
    ("register", "MLflow run 'register' started, the model being logged",
     lambda r: _db_count(r, "select count(*) from runs where name = 'register'") > 0),
    # The version is created with its tags; the alias follows within tens of ms, so the kill may land before or after
    # it (the kill report says which); registered.json is written after both.
    ("register", "model version created (with its tags), registered.json not yet written",
     lambda r: _db_count(r, "select count(*) from model_versions") > 0),
]

# Fields that differ between any two uninterrupted runs: wall-clock measurements (or what follows from one) and
# MLflow run ids; everything else must be equal. {file: {dotted JSON key or CSV column: why}}. A listed key that
# is missing fails the comparison, so this list stays exact.
TIMED = "measured wall-clock time"
RUN_ID = "MLflow run id (random)"
WALL_CLOCK = {
    "models/train/manifest.json": {"summary.minutes": TIMED, "summary.images_per_s": TIMED, "mlflow_run_id": RUN_ID},
    "reports/train/train_loss.csv": {"images_per_s": TIMED},
    "reports/train/train_kid.csv": {"train_minutes": TIMED},
    "reports/evaluate/evaluation.json": {"mlflow_run_id": RUN_ID, "training_mlflow_run_id": RUN_ID},
    "models/quantized/manifest.json": {"inputs.mlflow_run_id": RUN_ID},
    "models/quantized/quantization.json": {
        "latency_b1_ms": TIMED, "throughput_b64_img_s": TIMED, "speedup": "ratios of the timings",
        "fp32_reference": "which fp32 memory format timed faster (the speed-ups' baseline)",
        "target.speedup_b64": "ratio of the timings", "target.speedup_met": "whether that timed ratio met its target",
        "target.met": "whether that timed ratio (and FID) met the target",
    },
    "reports/quantize/metrics.json": {
        **{key: TIMED for key in ("latency_b1_ms_fp32_eager", "latency_b1_ms_fp32_onnxruntime", "latency_b1_ms_int8",
                                  "throughput_b64_fp32_eager", "throughput_b64_fp32_onnxruntime", "throughput_b64_int8")},
        **{key: "ratio of the timings" for key in (
            "speedup_b1_int8_vs_fp32_eager", "speedup_b1_int8_vs_fp32_onnxruntime",
            "speedup_b64_fp32_onnxruntime_vs_fp32_eager", "speedup_b64_int8_vs_fp32_eager",
            "speedup_b64_int8_vs_fp32_onnxruntime")},
        "target_met": "whether the timed speed-up met its target",
    },
    "reports/register/registered.json": {
        "run_id": RUN_ID,
        "tags.model.int8_sha256": "hash of models/quantized, whose quantization.json holds the timings above",
        # Not a timing: whether *this* call created the version. After a kill once the version existed, the rerun
        # finds it (created by the killed call) and says so; the registry itself is compared below (_registry).
        "created": "whether this call or the interrupted one created the version",
    },
}
# Great Expectations' data docs: their file names and pages carry the validation run's time, and the pages random
# element ids (uuid4); both are replaced by <volatile>. The outcomes themselves are in reports/validation/report.json,
# compared byte for byte.
DATA_DOCS = "reports/validation/data_docs/"
GE_VOLATILE = re.compile(r"\d{8}T\d{6}\.\d{6}Z|\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d(?: UTC|Z)|'_run_time_sort': [\d.]+"
                         r"|[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}")
# Compared by name only: a checkpoint also holds the seconds spent; the weights it leads to are compared.
NAMES_ONLY = ("models/train/checkpoints/",)
COMPARED = ("data", "models", "reports")  # every file under these, hidden leftovers included


def _drop(data: dict, dotted: str) -> None:
    """Remove the key ``a.b.c`` (a key may itself contain dots: model.int8_sha256)."""
    if dotted in data:
        del data[dotted]
        return
    head = next((key for key in data if dotted.startswith(key + ".") and isinstance(data[key], dict)), None)
    assert head is not None, f"{dotted}: not in the file; update WALL_CLOCK"
    _drop(data[head], dotted[len(head) + 1:])


def _comparable(root: Path, rel: str, moved: bool = False):
    path = root / rel
    excluded = WALL_CLOCK.get(rel, {})
    if moved and rel.endswith("manifest.json"):
        excluded = {**excluded, "code_version": "the checkout's HEAD moved during the test"}
    if rel.startswith(NAMES_ONLY):
        return None
    if rel.startswith(DATA_DOCS):
        return re.sub(GE_VOLATILE.pattern.encode(), b"<volatile>", path.read_bytes())  # some are fonts and images
    if rel.endswith(".json") and excluded:
        data = json.loads(path.read_text())
        for key in excluded:
            _drop(data, key)
        return data
    if rel.endswith(".csv") and excluded:
        rows = list(csv.DictReader(path.open()))
        assert rows and set(excluded) <= set(rows[0]), f"{rel}: update WALL_CLOCK"
        return [{k: v for k, v in row.items() if k not in excluded} for row in rows]
    return path.read_bytes()


def _files(root: Path) -> dict[str, str]:
    """Every file under COMPARED by its path (data docs' with the run time replaced) -> its real path."""
    files = {}
    for top in COMPARED:
        for path in (root / top).rglob("*"):
            if path.is_file():
                rel = str(path.relative_to(root))
                files[GE_VOLATILE.sub("<volatile>", rel) if rel.startswith(DATA_DOCS) else rel] = rel
    return files


def _differences(reference: Path, recovered: Path, moved: bool) -> list[str]:
    """What differs; ``moved``: the checkout's HEAD changed during the test, so manifests' code_version may differ."""
    ref_files, rec_files = _files(reference), _files(recovered)
    assert "models/train/generator/generator.safetensors" in ref_files, f"{reference}: no outputs to compare"
    problems = [f"only in the reference: {f}" for f in sorted(ref_files.keys() - rec_files.keys())]
    problems += [f"only after the kills: {f}" for f in sorted(rec_files.keys() - ref_files.keys())]
    problems += [f"differs: {name}" for name in sorted(ref_files.keys() & rec_files.keys())
                 if _comparable(reference, ref_files[name], moved) != _comparable(recovered, rec_files[name], moved)]
    return problems


def _after_kill(root: Path) -> str:
    """What a kill left: staging/temporary leftovers beside the outputs, and the registry's state."""
    leftovers = sorted(str(p.relative_to(root)) for top in COMPARED for p in (root / top).rglob(".*.tmp"))
    versions, aliases, running = (_db_count(root, f"select count(*) from {table}") for table in (
        "model_versions", "registered_model_aliases", "runs where status = 'RUNNING'"))
    registry = f"{versions} version(s), {aliases} alias(es), {running} run(s) RUNNING"
    return f"leftovers {leftovers or 'none'}; registry {registry}"


def _registry(root: Path, generator: Path) -> dict:
    """The model's aliases and versions (tags, the run's status, what its artifacts hold) in the project's store;
    ``generator``: the weights every version must hold."""
    import mlflow
    from mlflow import MlflowClient

    from productstudio.artifacts import sha256_file
    from productstudio.registry import model_registry

    uri = f"sqlite:///{root.parent / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    versions = sorted(client.search_model_versions(f"name='{MODEL_NAME}'"), key=lambda mv: int(mv.version))
    aliases = client.get_registered_model(MODEL_NAME).aliases
    state = {"aliases": {alias: str(version) for alias, version in aliases.items()}, "versions": {}}
    for mv in versions:
        tags = dict(mv.tags)
        # The version's own artifact location (a models:/ URI would go through the default registry, not this one).
        model_dir = Path(mlflow.artifacts.download_artifacts(
            artifact_uri=client.get_model_version_download_uri(MODEL_NAME, mv.version),
            dst_path=str(root.parent / f"version-{mv.version}")))
        weights = model_registry.artifact_dir(model_dir, "generator")
        int8 = model_registry.artifact_dir(model_dir, "int8")
        state["versions"][str(mv.version)] = {
            "tags": {k: v for k, v in tags.items() if k != "model.int8_sha256"},  # see WALL_CLOCK
            "identity tags missing": [k for k in model_registry.IDENTITY if not tags.get(k)],
            "run": client.get_run(mv.run_id).info.status,
            "weights match model.sha256 and the pipeline's": weights is not None and
            sha256_file(weights / "generator.safetensors") == tags.get("model.sha256") == sha256_file(generator),
            "int8 artifact": int8 is not None and (int8 / "generator.int8.onnx").is_file(),
        }
    return state


def _start(root: Path, env: dict, log: Path) -> subprocess.Popen:
    """`dvc repro` in its own process group (so one killpg reaches DVC and the stage's command), output to ``log``."""
    with log.open("w") as out:
        return subprocess.Popen(DVC + ["repro", TARGET], cwd=root, env={**env, "PYTHONUNBUFFERED": "1"},
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def _kill_during(root: Path, env: dict, stage: str, half_done, log: Path, limit_s: float = 600) -> float:
    """Run `dvc repro` and SIGKILL its process group once ``stage`` runs and ``half_done(root)``; seconds into
    the stage when killed."""
    assert not half_done(root), f"{stage}: the sign of a half-done stage is there before it started"
    proc = _start(root, env, log)
    began, in_stage = time.monotonic(), None
    try:
        while True:
            if in_stage is None and f"Running stage '{stage}'" in log.read_text():
                in_stage = time.monotonic()
            if in_stage is not None and half_done(root):
                os.killpg(proc.pid, signal.SIGKILL)
                break
            assert proc.poll() is None, f"dvc repro ended before the kill in {stage}:\n{log.read_text()}"
            assert time.monotonic() - began < limit_s, f"no kill in {stage} within {limit_s} s:\n{log.read_text()}"
            time.sleep(0.01)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    return time.monotonic() - in_stage


@pytest.mark.timeout(1500)  # about 5 minutes on 2 idle cores; each repro is bounded too (600 s)
def test_kill_9_in_each_stage_then_repro_matches_an_uninterrupted_run(tmp_path, fashion_dir, clothing_dir):
    started, head = time.monotonic(), code_version()  # what the stages' manifests record (the installed checkout)
    reference, ref_env = make_project(tmp_path / "reference", fashion_dir, clothing_dir)
    reference_log = run(DVC + ["repro", TARGET], reference, ref_env)
    reference_s = time.monotonic() - started
    # The kills follow the order DVC runs the stages in (fixed by the project's PYTHONHASHSEED, so the killed
    # project's runs keep the reference's order): a stage that ran before the previous kill cannot be killed.
    order = [line.split("'")[1] for line in reference_log.splitlines() if line.startswith("Running stage")]
    assert [stage for stage in order if stage in {s for s, _, _ in KILLS}] == list(dict.fromkeys(
        s for s, _, _ in KILLS)), f"DVC's stage order {order} is not the order of KILLS"

    root, env = make_project(tmp_path / "killed", fashion_dir, clothing_dir)
    logs, killed = [], []
    for number, (stage, what, half_done) in enumerate(KILLS):
        logs.append(tmp_path / f"repro-{number}.log")
        seconds = _kill_during(root, env, stage, half_done, logs[-1])
        killed.append(f"{stage}: killed {seconds:.2f} s into the stage ({what}); {_after_kill(root)}")
    final = run(DVC + ["repro", TARGET], root, env)
    reruns = [log.read_text() for log in logs[1:]] + [final]
    report = "\n".join(killed)
    print(f"\nreference run {reference_s:.0f} s; kills:\n{report}\nlast repro:\n{final}")

    # Each killed stage was not taken as done: the next repro ran it again (train resuming from its checkpoint).
    for (stage, _, _), rerun in zip(KILLS, reruns):
        assert f"Running stage '{stage}'" in rerun, f"{stage} was not rerun after the kill:\n{rerun}"
    train_rerun = reruns[[stage for stage, _, _ in KILLS].index("train")]
    assert "resuming from" in train_rerun and "step 10" in train_rerun, train_rerun

    assert "up to date" in run(DVC + ["status", TARGET], root, env)
    assert "Running stage" not in run(DVC + ["repro", TARGET], root, env)

    # The outputs are the uninterrupted run's, byte for byte (apart from WALL_CLOCK), leftovers included.
    # Another commit to this checkout meanwhile (a shared working tree, not CI) changes only code_version.
    moved = code_version() != head
    differences = _differences(reference, root, moved)
    assert differences == [], f"{differences}\n{report}"
    # The registry: the same versions (no twin, no orphan), each with its identity tags, weights and int8 artifact.
    generator = "models/train/generator/generator.safetensors"
    expected, recovered = _registry(reference, reference / generator), _registry(root, root / generator)
    assert expected["aliases"] == {"challenger": "1"} and list(expected["versions"]) == ["1"], expected
    assert all(v["run"] == "FINISHED" and v["int8 artifact"] and v["weights match model.sha256 and the pipeline's"]
               and not v["identity tags missing"] for v in expected["versions"].values()), expected
    assert recovered == expected, report
    # What the kill while logging left: its run, still RUNNING, which no version points to (their runs are FINISHED).
    assert _db_count(root, "select count(*) from runs where status = 'RUNNING'") == 1
    assert _db_count(root, "select count(*) from runs where status = 'RUNNING' and name = 'register'") == 1
    print(f"test took {time.monotonic() - started:.0f} s")
