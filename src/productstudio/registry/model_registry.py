"""The MLflow Model Registry: register the generator, load it back, promote champion over challenger.

- ``register`` logs the generator as an MLflow pyfunc "from code" (``pyfunc_generator.py``; the
  weights stay safetensors, nothing is pickled) with a signature and an input example, registers it
  under ``register.model_name``, tags the version with its lineage (``data.version``, ``git.commit``,
  ``params.hash``, ``model.sha256``) and the evaluation metrics with their protocol, and gives it the
  alias ``challenger``. An int8 variant (a directory from the quantization step) is logged as a second
  artifact, ``int8``, of the *same* version: one version is one trained model, whatever its precision.
  Registering the same weights, data, params and commit again returns the existing version.
- ``load_registered("models:/<name>@champion")`` downloads a version and loads it with the library's own
  loader (``productstudio.models.load_generator``).
- ``promote`` measures challenger and champion under one protocol (``judge``), applies the policy
  (``promotion.decide``), records the decision on the challenger's version (tags ``promotion.*`` and
  ``promotion/decision.json`` in its run) and moves the alias ``champion`` when the policy says so.

Everything talks to ``MLFLOW_TRACKING_URI`` (default ``sqlite:///mlflow.db``): a file store or a server.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from productstudio.artifacts import sha256_file, write_json_atomic
from productstudio.config import Params, section_dict
from productstudio import tracking
from productstudio.data import store

CHALLENGER = "challenger"
CHAMPION = "champion"
MODEL_FILE = Path(__file__).with_name("pyfunc_generator.py")
ARTIFACT = "generator"  # the logged model's name inside its run
IDENTITY = ("data.version", "params.hash", "git.commit", "model.sha256")
TAG_LIMIT = 5000  # MLflow's maximum tag value length
_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+))$")


@dataclass(frozen=True)
class Registered:
    name: str
    version: str
    run_id: str
    created: bool
    tags: dict


def client():
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
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
    except MlflowException:
        return []
    return sorted(found, key=lambda mv: int(mv.version))


def latest_version(name: str, mlflow_client=None):
    """The newest version of ``name`` (with its tags), or None."""
    versions = _versions(mlflow_client or client(), name)
    return versions[-1] if versions else None


def _signature(config):
    import numpy as np
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema, TensorSpec

    return ModelSignature(
        inputs=Schema([ColSpec("long", "category"), ColSpec("long", "seed")]),
        outputs=Schema([TensorSpec(np.dtype(np.uint8), (-1, config.channels, config.image_size, config.image_size))]),
        params=ParamSchema([ParamSpec("variant", "string", "fp32")]),
    )


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
             int8_dir: str | Path | None = None) -> Registered:
    """Register the generator (and its int8 variant, when ``int8_dir`` exists) as a new version with
    the alias ``challenger``; the same weights/data/params/commit return the existing version."""
    import mlflow
    import pandas as pd

    from productstudio.models.io import load_generator

    generator_dir = Path(generator_dir)
    name = params.register.model_name
    generator, info = load_generator(generator_dir)  # fails early, with one line, on a broken directory
    int8 = Path(int8_dir) if int8_dir and Path(int8_dir).is_dir() else None
    tags = {**lineage(generator_dir, processed_dir, params), **_metric_tags(evaluation_dir),
            "model.kind": str(info.get("kind")), "variants": "fp32,int8" if int8 else "fp32"}
    if int8:
        tags["model.int8_sha256"] = directory_sha256(int8)
    mlflow_client = client()
    for mv in reversed(_versions(mlflow_client, name)):
        if all(mv.tags.get(key) == tags.get(key) for key in (*IDENTITY, "model.int8_sha256")):
            return Registered(name, str(mv.version), mv.run_id, False, dict(mv.tags))

    artifacts = {"generator": str(generator_dir)}
    if int8:
        artifacts["int8"] = str(int8)
    with tracking.start_run("register", tags={k: tags[k] for k in IDENTITY}) as run:
        mlflow.log_artifacts(str(evaluation_dir), "evaluation")
        model_info = mlflow.pyfunc.log_model(
            name=ARTIFACT,
            python_model=str(MODEL_FILE),
            artifacts=artifacts,
            signature=_signature(generator.config),
            input_example=pd.DataFrame({"category": [0, 1], "seed": [0, 1]}),
            pip_requirements=_pip_requirements(int8 is not None),
            registered_model_name=name,
        )
    version = str(model_info.registered_model_version)
    for key, value in tags.items():
        mlflow_client.set_model_version_tag(name, version, key, value)
    mlflow_client.set_registered_model_alias(name, CHALLENGER, version)
    return Registered(name, version, run.info.run_id, True, tags)


def resolve(uri: str, mlflow_client=None):
    """``models:/<name>@<alias>`` or ``models:/<name>/<version>`` -> the ModelVersion; one-line errors."""
    from mlflow.exceptions import MlflowException

    match = _URI.match(uri)
    if not match:
        raise ValueError(f"{uri!r}: expected models:/<name>@<alias> or models:/<name>/<version>")
    mlflow_client = mlflow_client or client()
    name, alias, version = match["name"], match["alias"], match["version"]
    if not _versions(mlflow_client, name):
        raise ValueError(f"{uri}: no registered model '{name}' in {tracking.tracking_uri()}")
    try:
        if alias:
            return mlflow_client.get_model_version_by_alias(name, alias)
        return mlflow_client.get_model_version(name, version)
    except MlflowException:
        hint = " (no champion yet: run productstudio promote)" if alias == CHAMPION else ""
        what = f"version has the alias '{alias}'" if alias else f"version {version}"
        raise ValueError(f"{uri}: no {what} of '{name}'{hint}") from None


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


def _generator_dir(model_dir: Path) -> Path:
    found = artifact_dir(model_dir, "generator")
    if found is None:
        raise FileNotFoundError(f"{model_dir}: the registered model holds no generator artifact")
    return found


def load_registered(uri: str, device: str = "cpu"):
    """Load ``models:/<name>@<alias>`` (or ``/<version>``) with the library's loader: (Generator, info)."""
    from productstudio.models.io import load_generator

    mlflow_client = client()
    mv = resolve(uri, mlflow_client)
    with tempfile.TemporaryDirectory(prefix="productstudio-model-") as tmp:
        generator, info = load_generator(_generator_dir(download(mv, tmp)), device)
    aliases = list(mlflow_client.get_model_version(mv.name, mv.version).aliases)
    return generator, {**info, "name": mv.name, "version": str(mv.version), "aliases": aliases, "run_id": mv.run_id,
                       "tags": dict(mv.tags)}


# ------------------------------------------------------------------------------------------------
# Promotion.


def _features(mlflow_client, mv, generator, config, key: dict, cache: Path, batch_size: int, device):
    """Generated features of a version: local cache, else the copy in its run, else Inception (then kept in both)."""
    import mlflow

    from productstudio.promotion import measure as judge

    file = judge.features_file(key)
    remote = f"promotion/{file}"
    if not (cache / file).is_file():
        try:
            mlflow.artifacts.download_artifacts(run_id=mv.run_id, artifact_path=remote, dst_path=str(cache / "dl"))
            (cache / "dl" / remote).replace(cache / file)
        except Exception:  # noqa: BLE001  (absent: compute it)
            pass
    had = (cache / file).is_file()
    features = judge.generated_features(generator, config, key, cache, batch_size, device)
    if not had:
        mlflow_client.log_artifact(mv.run_id, str(cache / file), "promotion")
    return features


def _measure_version(mlflow_client, mv, params: Params, metric: str, real, cache: Path, device) -> dict:
    from productstudio.metrics.fid import fid_from_features
    from productstudio.models.io import WEIGHTS, load_generator
    from productstudio.promotion import measure as judge

    real_features, real_labels, real_protocol = real
    seed, batch = params.evaluate.seed, params.evaluate.batch_size
    with tempfile.TemporaryDirectory(prefix="productstudio-model-") as tmp:
        model_dir = download(mv, tmp)
        generator_dir = _generator_dir(model_dir)
        generator, info = load_generator(generator_dir, device)
        key = judge.features_key(sha256_file(generator_dir / WEIGHTS), metric, seed)
        gen = _features(mlflow_client, mv, generator, generator.config, key, cache, batch, device)
        report = judge.measure(gen, real_features, real_labels, info["categories"], metric, seed,
                               params.promote.bootstrap, real_protocol)
        int8_dir = artifact_dir(model_dir, "int8")
        if int8_dir is not None:
            try:
                int8 = judge.load_int8(int8_dir)
                key8 = {**key, "weights_sha256": directory_sha256(int8_dir), "variant": "int8"}
                gen8 = _features(mlflow_client, mv, int8, generator.config, key8, cache, batch, "cpu")
                report["int8"] = {"fid": fid_from_features(gen8, real_features)}
            except Exception as error:  # noqa: BLE001  (the policy refuses a variant it cannot check)
                report["int8"] = {"error": str(error).splitlines()[0] if str(error) else type(error).__name__}
    report["version"] = str(mv.version)
    return report


def _alias(mlflow_client, name: str, alias: str):
    from mlflow.exceptions import MlflowException

    try:
        return mlflow_client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def promote(params: Params, processed_dir: str | Path, real_cache: str | Path, out_dir: str | Path,
            cache_dir: str | Path = ".scratch/promote", device: str = "auto") -> dict:
    """Judge the challenger against the champion and move ``champion`` when the policy says so."""
    from productstudio.models.io import resolve_device
    from productstudio.promotion import measure as judge
    from productstudio.promotion.policy import decide

    name = params.register.model_name
    mlflow_client = client()
    challenger = _alias(mlflow_client, name, CHALLENGER)
    if challenger is None:
        raise ValueError(f"'{name}' has no version with the alias '{CHALLENGER}' in {tracking.tracking_uri()}: "
                         "run productstudio register first")
    champion = _alias(mlflow_client, name, CHAMPION)
    result = {"model": name, "challenger": str(challenger.version), "champion_before": str(champion.version) if champion else None}
    if champion is not None and champion.version == challenger.version:
        result.update(promoted=False, champion_after=str(champion.version),
                      reason=f"version {challenger.version} is already the champion: nothing to decide")
        write_json_atomic(Path(out_dir) / "decision.json", result)
        return result

    dev = resolve_device(device)
    metric = judge.promotion_metric(params.promote, params.evaluate)
    cache = Path(cache_dir)
    real = judge.real_features(processed_dir, real_cache, cache / "real", metric, params.evaluate.batch_size, dev)
    ours = _measure_version(mlflow_client, challenger, params, metric, real, cache, dev)
    theirs = _measure_version(mlflow_client, champion, params, metric, real, cache, dev) if champion else None
    decision = decide(ours, theirs, {**params.promote.model_dump(), "metric": metric})
    if decision.promoted:
        mlflow_client.set_registered_model_alias(name, CHAMPION, challenger.version)
    result.update(promoted=decision.promoted, reason=decision.reason,
                  champion_after=str(challenger.version) if decision.promoted else result["champion_before"],
                  decided_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                  policy={**params.promote.model_dump(), "metric": metric}, decision=decision.to_dict(),
                  challenger_report=ours, champion_report=theirs)
    tags = {"promotion.decision": "promoted" if decision.promoted else "refused",
            "promotion.reason": decision.reason[:TAG_LIMIT],
            "promotion.champion_before": result["champion_before"] or "none",
            "promotion.metric": metric, "promotion.decided_at": result["decided_at"]}
    for key, value in tags.items():
        mlflow_client.set_model_version_tag(name, challenger.version, key, value)
    mlflow_client.log_dict(challenger.run_id, result, "promotion/decision.json")
    write_json_atomic(Path(out_dir) / "decision.json", result)
    return result


def registered_record(registered: Registered) -> dict:
    return asdict(registered)
