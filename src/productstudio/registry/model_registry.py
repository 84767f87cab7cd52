"""The MLflow Model Registry: register the generator, resolve and download versions, load them back.

- ``register`` logs the generator as an MLflow pyfunc "from code" (the task's file in ``registry/pyfunc/``;
  the weights stay safetensors, nothing is pickled) with a signature and an input example, registers it
  under ``register.model_name``, tags the version with its lineage (``data.version``, ``git.commit``,
  ``params.hash``, ``model.sha256``) and the evaluation metrics with their protocol, and gives it the
  alias ``challenger``. An int8 variant (a directory from the quantization step) is logged as a second
  artifact, ``int8``, of the *same* version: one version is one trained model, whatever its precision.
  Registering the same weights, data, params and commit again returns the existing version. Two processes
  registering at once (a shared server) stay consistent: see ``register``.
- ``load_registered("models:/<name>@champion")`` downloads a version and loads it with the library's own
  loader (``productstudio.models.loader.load``).
- ``version_with_alias`` finds the 'champion' or 'challenger'; promotion itself (measuring both, the
  policy, moving the alias) is ``productstudio.promotion.champion.promote_challenger``.

Everything talks to ``MLFLOW_TRACKING_URI`` (default ``sqlite:///mlflow.db``): a file store or a server.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from productstudio.artifacts import sha256_file
from productstudio.config import Params, section_dict
from productstudio import tracking
from productstudio.data import store
from productstudio.errors import BadRequest, MissingInput

CHALLENGER = "challenger"
CHAMPION = "champion"
ARTIFACT = "generator"  # the logged model's name inside its run
IDENTITY = ("data.version", "params.hash", "git.commit", "model.sha256")
ROLLBACK_TAG = "canary.rollback"  # set on a challenger version when its canary is rolled back (deploy rollback)
TAG_LIMIT = 5000  # MLflow's maximum tag value length
MODEL_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+))$")  # models:/<name>@<alias> or /<version>


@dataclass(frozen=True)
class Registered:
    name: str
    version: str
    run_id: str
    created: bool
    tags: dict


def client():
    """An MlflowClient on ``MLFLOW_TRACKING_URI``, with the project's bounded retries and timeouts
    (``tracking.bound_http``: a variable the user set wins)."""
    tracking.bound_http()
    import mlflow
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(tracking.tracking_uri())
    return MlflowClient(tracking_uri=tracking.tracking_uri(), registry_uri=tracking.tracking_uri())


def params_hash(params: Params) -> str:
    """sha256 of the params that shape the trained model (preprocess + train), canonical JSON."""
    data = {"preprocess": section_dict(params.preprocess), "train": section_dict(params.train)}
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def directory_sha256(directory: str | Path) -> str:
    """One hash for a directory: its files' relative paths and sha256s."""
    directory = Path(directory)
    listing = [(str(p.relative_to(directory)), sha256_file(p)) for p in sorted(directory.rglob("*")) if p.is_file()]
    return hashlib.sha256(json.dumps(listing).encode()).hexdigest()


def lineage(generator_dir: str | Path, processed_dir: str | Path, params: Params) -> dict:
    from productstudio.models.io import WEIGHTS

    return {
        "data.version": store.data_version(processed_dir),
        "params.hash": params_hash(params),
        "git.commit": tracking.git_commit(),
        "model.sha256": sha256_file(Path(generator_dir) / WEIGHTS),
    }


def _metric_tags(evaluation_dir: str | Path) -> dict:
    """metrics.<name> for every number in metrics.json, and metrics.protocol: how each one was measured."""
    evaluation_dir = Path(evaluation_dir)
    flat = json.loads((evaluation_dir / "metrics.json").read_text())
    tags = {f"metrics.{k}": repr(float(v)) for k, v in flat.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    report = json.loads((evaluation_dir / "evaluation.json").read_text())
    keep = ("num_generated", "num_real", "reference_split", "latent_seed", "data_version", "feature_network",
            "feature_network_sha256", "resize_method", "kid_subset_size", "kid_subsets")
    protocol = {r["metric"]: {k: r[k] for k in keep if k in r} for r in report.get("metrics", [])}
    tags["metrics.protocol"] = json.dumps(protocol, sort_keys=True)[:TAG_LIMIT]
    return tags


def _versions(mlflow_client, name: str) -> list:
    from mlflow.exceptions import MlflowException

    try:
        found = mlflow_client.search_model_versions(f"name='{name}'")
    except MlflowException as error:
        if tracking.unreachable(error):  # a server that does not answer is not a model without versions
            raise
        return []
    return sorted(found, key=lambda mv: int(mv.version))


def _identity(mv_tags: dict) -> tuple | None:
    """What makes two versions the same model; None for a version registered by other means (no lineage tags)."""
    key = tuple(mv_tags.get(k) for k in (*IDENTITY, "model.int8_sha256"))
    return key if mv_tags.get("model.sha256") else None


def _distinct(versions: list) -> list:
    """The versions (oldest first) that are not a younger twin of an older version with the same identity."""
    seen, kept = set(), []
    for mv in versions:
        key = _identity(mv.tags)
        if key is None or key not in seen:
            kept.append(mv)
        seen.add(key)
    return kept


def _hand_challenger(mlflow_client, name: str, attempts: int = 5):
    """Give 'challenger' to the newest distinct version; returns it.

    MLflow's REST API has no compare-and-set for aliases, so two processes registering at once could each
    write their own version last. Instead each writes the newest version it sees, then looks again: the last
    writer's second look sees every version created before its write, so the alias ends on the newest.

    The alias's first write races too: MLflow looks for the alias row, then inserts it, so the slower of two
    processes gets the database's unique-key error; its row now exists, and the next attempt updates it."""
    from mlflow.exceptions import MlflowException

    newest = None
    for attempt in range(attempts):
        newest = _distinct(_versions(mlflow_client, name))[-1]
        try:
            mlflow_client.set_registered_model_alias(name, CHALLENGER, str(newest.version))
        except MlflowException as error:
            if not _alias_created_meanwhile(error) or attempt == attempts - 1:
                raise
            continue
        if _distinct(_versions(mlflow_client, name))[-1].version == newest.version:
            break
    return newest


def _alias_created_meanwhile(error: Exception) -> bool:
    """Whether ``error`` is the store refusing a second alias row (PostgreSQL's or SQLite's unique-key error)."""
    text = str(error)
    return "registered_model_alias" in text and any(
        phrase in text for phrase in ("UniqueViolation", "duplicate key", "UNIQUE constraint failed"))


def latest_version(name: str, mlflow_client=None):
    """The newest version of ``name`` (with its tags), or None."""
    versions = _versions(mlflow_client or client(), name)
    return versions[-1] if versions else None


def _pip_requirements(int8: bool) -> list[str]:
    # Explicit: inferring them costs ~10 s. productstudio itself comes from the serving image.
    from importlib.metadata import PackageNotFoundError, version

    packages = ["mlflow", "torch", "safetensors", "numpy", "pandas"] + (["onnxruntime"] if int8 else [])
    found = []
    for package in packages:
        try:
            found.append(f"{package}=={version(package)}")
        except PackageNotFoundError:
            found.append(package)
    return found


def register(generator_dir: str | Path, evaluation_dir: str | Path, processed_dir: str | Path, params: Params,
             int8_dir: str | Path | None = None, task: str = "generate") -> Registered:
    """Register the generator (and its int8 variant, when ``int8_dir`` exists) as a new version with
    the alias ``challenger``, logged as ``task``'s pyfunc; the same weights/data/params/commit return the
    existing version.

    Safe when several processes register at once against one store, without a lock (none reaches through
    MLflow's REST API): a version is created with its identity tags in one step, so if two calls with the same
    model both get past the first check, the older version is the model's and the younger twin is deleted
    again (both calls return the older one); 'challenger' goes to the newest distinct version.

    Safe when the server fails part way (down, hung, 5xx after ``tracking.bound_http``'s retries: one-line
    ``ServiceError``): a version never exists without its weights (logged before it is created) or its tags
    (created with it), and a rerun finishes the job: the version that exists already gets 'challenger' then.
    What a failure can leave behind is a run that no version points to."""
    from productstudio.models.loader import load
    from productstudio.registry.pyfunc.tasks import PYFUNC_TASKS

    generator_dir = Path(generator_dir)
    name = params.register.model_name
    pyfunc = PYFUNC_TASKS[task]
    _, info = load(generator_dir)  # fails early, with one line, on a broken directory
    int8 = Path(int8_dir) if int8_dir and Path(int8_dir).is_dir() else None
    tags = {**lineage(generator_dir, processed_dir, params), **_metric_tags(evaluation_dir),
            "model.kind": str(info.get("kind")), "variants": "fp32,int8" if int8 else "fp32"}
    if int8:
        tags["model.int8_sha256"] = directory_sha256(int8)
    mlflow_client = client()
    with tracking.server_calls(f"registering '{name}'", "no version is left without its weights or tags"):
        return _register(mlflow_client, name, tags, generator_dir, Path(evaluation_dir), int8, pyfunc, info)


def _register(mlflow_client, name: str, tags: dict, generator_dir: Path, evaluation_dir: Path, int8: Path | None, pyfunc,
              info) -> Registered:
    import mlflow
    import pandas as pd

    for mv in _versions(mlflow_client, name):  # oldest first: a twin being deleted is never the answer
        if _identity(mv.tags) == _identity(tags):
            # A run that failed after creating this version did not hand it the alias: finish its job (idempotent).
            _hand_challenger(mlflow_client, name)
            return Registered(name, str(mv.version), mv.run_id, False, dict(mv.tags))

    artifacts = {"generator": str(generator_dir)}
    if int8:
        artifacts["int8"] = str(int8)
    with tracking.start_run("register", tags={k: tags[k] for k in IDENTITY}) as run:
        mlflow.log_artifacts(str(evaluation_dir), "evaluation")
        mlflow.pyfunc.log_model(
            name=ARTIFACT,
            python_model=str(pyfunc.code),
            artifacts=artifacts,
            signature=pyfunc.signature(info),
            input_example=pd.DataFrame(pyfunc.input_example),
            pip_requirements=_pip_requirements(int8 is not None),
        )
    # The tags travel with the creation (one transaction in the store): no version is ever seen without its identity.
    created = mlflow.register_model(f"runs:/{run.info.run_id}/{ARTIFACT}", name, tags=tags)
    first = next((mv for mv in _versions(mlflow_client, name) if _identity(mv.tags) == _identity(tags)), created)
    if str(first.version) != str(created.version):  # registered meanwhile by another process: keep theirs
        mlflow_client.delete_model_version(name, str(created.version))
        ours = first.run_id == run.info.run_id  # a retried create (its answer lost) made the twin from our own run
        if not ours:
            mlflow_client.delete_run(run.info.run_id)
        _hand_challenger(mlflow_client, name)
        return Registered(name, str(first.version), first.run_id, ours, dict(first.tags))
    _hand_challenger(mlflow_client, name)
    return Registered(name, str(created.version), run.info.run_id, True, tags)


def resolve(uri: str, mlflow_client=None):
    """``models:/<name>@<alias>`` or ``models:/<name>/<version>`` -> the ModelVersion; one-line errors."""
    from mlflow.exceptions import MlflowException

    match = MODEL_URI.match(uri)
    if not match:
        raise BadRequest(f"{uri!r}: expected models:/<name>@<alias> or models:/<name>/<version>")
    mlflow_client = mlflow_client or client()
    name, alias, version = match["name"], match["alias"], match["version"]
    if not _versions(mlflow_client, name):
        raise BadRequest(f"{uri}: no registered model '{name}' in {tracking.tracking_uri()}")
    try:
        if alias:
            return mlflow_client.get_model_version_by_alias(name, alias)
        return mlflow_client.get_model_version(name, version)
    except MlflowException as error:
        if tracking.unreachable(error):
            raise
        hint = " (no champion yet: run productstudio promote)" if alias == CHAMPION else ""
        what = f"version has the alias '{alias}'" if alias else f"version {version}"
        raise BadRequest(f"{uri}: no {what} of '{name}'{hint}") from None


def download(mv, dst: str | Path) -> Path:
    """The version's MLflow model directory (MLmodel, python_model code, artifacts/generator, ...)."""
    import mlflow

    return Path(mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{mv.name}/{mv.version}", dst_path=str(dst)))


def artifact_dir(model_dir: Path, key: str) -> Path | None:
    """Where a pyfunc artifact landed in a downloaded MLflow model, or None. MLflow names the folder after
    the logged directory (``models/quantized`` -> ``artifacts/quantized``), not after the key: read the
    MLmodel's artifact map."""
    import yaml

    mlmodel = model_dir / "MLmodel"
    if mlmodel.exists():
        flavor = (yaml.safe_load(mlmodel.read_text()).get("flavors") or {}).get("python_function") or {}
        entry = (flavor.get("artifacts") or {}).get(key)
        if entry and (model_dir / entry["path"]).is_dir():
            return model_dir / entry["path"]
    fallback = model_dir / "artifacts" / key
    return fallback if fallback.is_dir() else None


def load_registered(uri: str, device: str = "cpu"):
    """Load ``models:/<name>@<alias>`` (or ``/<version>``) with the library's loader: (Generator, info)."""
    from productstudio.models.loader import load

    mlflow_client = client()
    mv = resolve(uri, mlflow_client)
    with tempfile.TemporaryDirectory(prefix="productstudio-model-") as tmp:
        generator_dir = artifact_dir(download(mv, tmp), "generator")
        if generator_dir is None:
            raise MissingInput(f"{uri} (version {mv.version}): the registered model holds no generator artifact")
        generator, info = load(generator_dir, device)
    aliases = list(mlflow_client.get_model_version(mv.name, mv.version).aliases)
    return generator, {**info, "name": mv.name, "version": str(mv.version), "aliases": aliases, "run_id": mv.run_id,
                       "tags": dict(mv.tags)}


def version_with_alias(mlflow_client, name: str, alias: str):
    """The version of ``name`` that holds ``alias``, or None."""
    from mlflow.exceptions import MlflowException

    try:
        return mlflow_client.get_model_version_by_alias(name, alias)
    except MlflowException as error:
        if tracking.unreachable(error):  # not "no such alias"
            raise
        return None


def registered_record(registered: Registered) -> dict:
    return asdict(registered)


def versions_overview(name: str, mlflow_client=None) -> list[dict]:
    """Every version of ``name``, newest first, as people read it: its aliases, ``metrics.*`` numbers, how they were
    measured (``metrics.protocol``), the promotion decision and reason, and a canary rollback note if any."""
    mlflow_client = mlflow_client or client()
    versions = _versions(mlflow_client, name)
    # search_model_versions leaves ModelVersion.aliases empty; the registered model holds them
    aliases = dict(getattr(mlflow_client.get_registered_model(name), "aliases", None) or {}) if versions else {}
    rows = []
    for mv in reversed(versions):
        tags = dict(mv.tags or {})
        metrics = {key[len("metrics."):]: float(value) for key, value in tags.items()
                   if key.startswith("metrics.") and key != "metrics.protocol" and _is_number(value)}
        try:
            protocol = json.loads(tags.get("metrics.protocol", "{}"))
        except ValueError:
            protocol = {}
        rows.append({"version": str(mv.version), "aliases": sorted(a for a, v in aliases.items() if str(v) == str(mv.version)),
                     "created": int(mv.creation_timestamp or 0), "metrics": metrics, "protocol": protocol,
                     "decision": tags.get("promotion.decision"), "reason": tags.get("promotion.reason"),
                     "decided_at": tags.get("promotion.decided_at"), "rollback": tags.get(ROLLBACK_TAG),
                     "data_version": tags.get("data.version"), "git_commit": tags.get("git.commit")})
    return rows


def _is_number(text: str) -> bool:
    try:
        float(text)
    except (TypeError, ValueError):
        return False
    return True
