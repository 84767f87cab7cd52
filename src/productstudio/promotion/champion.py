"""Champion/challenger: measure the registry's 'challenger' and 'champion' under one protocol, apply the
policy, record the decision and move the 'champion' alias when the policy says so.

    promote_challenger(params, "data/processed", "models/real_stats", "reports/promote")

The generated images' features come from the generated-features cache that evaluate and quantize fill
(the challenger's fp32 and int8 features are usually there already), else from the copy kept in the
version's MLflow run (``promotion/<file>``), else from Inception; a computed entry is kept in both, so a
champion is never measured twice.

The decision is recorded (the version's run, its tags) before the 'champion' alias moves: whatever point a failing
server stops promotion at, no champion lacks its decision, and a rerun reaches the state of an uninterrupted run.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import numpy as np

from productstudio import paths, tracking
from productstudio.artifacts import sha256_file, write_json_atomic
from productstudio.config import Params
from productstudio.errors import MissingInput
from productstudio.imaging import resolve_device
from productstudio.metrics.generated_features import GeneratedFeatures
from productstudio.metric_names import parse_metric
from productstudio.metrics.real_features import RealFeatures
from productstudio.models.io import WEIGHTS
from productstudio.models.loader import INT8_ONNX, load
from productstudio.models.onnx_generator import INT8_FILE
from productstudio.models.sampling import generated_batches
from productstudio.promotion.policy import decide
from productstudio.promotion.report import int8_fid, promotion_metric, promotion_report
from productstudio.registry.model_registry import (CHALLENGER, CHAMPION, TAG_LIMIT, artifact_dir, client, download,
                                                   version_with_alias)


def _features(mlflow_client, mv, model, weights_sha256: str, count: int, seed: int, cache: GeneratedFeatures) -> np.ndarray:
    """Features of a version's first ``count`` generated images: the local cache, else the copy in its
    run, else Inception (then kept in both)."""
    import mlflow

    key = cache.key(weights_sha256, seed)
    file = cache.file(key, count)
    remote = f"promotion/{file.name}"
    if cache.missing(key, count):
        try:
            mlflow.artifacts.download_artifacts(run_id=mv.run_id, artifact_path=remote, dst_path=str(cache.root / "dl"))
            (cache.root / "dl" / remote).replace(file)
        except Exception as error:  # noqa: BLE001  (absent: compute it)
            if tracking.unreachable(error):  # but a server that does not answer will not take the result either
                raise
    had = file.is_file()
    features = cache.features(key, count, lambda n: generated_batches(model, n, seed, cache.batch_size, cache.device))
    if not had:
        mlflow_client.log_artifact(mv.run_id, str(file), "promotion")
    return features


def _measure_version(mlflow_client, mv, params: Params, metric: str, real: RealFeatures, features_dir: Path, device) -> dict:
    seed, batch, count = params.protocol.seed, params.protocol.batch_size, parse_metric(metric).num_generated
    with tempfile.TemporaryDirectory(prefix="productstudio-model-") as tmp:
        model_dir = download(mv, tmp)
        generator_dir = artifact_dir(model_dir, "generator")
        if generator_dir is None:
            raise MissingInput(f"{model_dir}: the registered model holds no generator artifact")
        generator, info = load(generator_dir, device)
        cache = GeneratedFeatures(features_dir, device=device, batch_size=batch)
        gen = _features(mlflow_client, mv, generator, sha256_file(generator_dir / WEIGHTS), count, seed, cache)
        report = promotion_report(gen, real, info["categories"], metric, seed, params.promote.bootstrap)
        int8_dir = artifact_dir(model_dir, "int8")
        if int8_dir is not None:
            try:
                int8, _ = load(int8_dir, kind=INT8_ONNX)  # ONNX Runtime on the CPU, as the quantize step measured it
                cache8 = GeneratedFeatures(features_dir, device="cpu", batch_size=batch)
                gen8 = _features(mlflow_client, mv, int8, sha256_file(int8_dir / INT8_FILE), count, seed, cache8)
                report["int8"] = int8_fid(gen8, real, metric)
            except Exception as error:  # noqa: BLE001  (the policy refuses a variant it cannot check)
                report["int8"] = {"error": str(error).splitlines()[0] if str(error) else type(error).__name__}
    report["version"] = str(mv.version)
    return report


def promote_challenger(params: Params, processed_dir: str | Path, real_cache: str | Path, out_dir: str | Path,
                       features_dir: str | Path = paths.GENERATED_FEATURES, device: str = "auto") -> dict:
    """Judge the challenger against the champion and move ``champion`` when the policy says so.

    ``real_cache``: the real_stats output, only read (other counts go to ``features_dir/real``);
    ``features_dir``: the generated-features cache. Writes ``out_dir/decision.json``; returns the same.
    The tracking server failing part way is a one-line ``ServiceError`` (``tracking.server_calls``)."""
    name = params.register.model_name
    mlflow_client = client()
    with tracking.server_calls(f"promoting the challenger of '{name}'",
                               "the 'champion' alias moves only once the decision is recorded"):
        result = _promote(mlflow_client, name, params, processed_dir, real_cache, Path(features_dir), device)
    write_json_atomic(Path(out_dir) / "decision.json", result)
    return result


def _promote(mlflow_client, name: str, params: Params, processed_dir, real_cache, features_dir: Path, device: str) -> dict:
    challenger = version_with_alias(mlflow_client, name, CHALLENGER)
    if challenger is None:
        raise MissingInput(f"'{name}' has no version with the alias '{CHALLENGER}' in {tracking.tracking_uri()}: "
                           "run productstudio register first")
    champion = version_with_alias(mlflow_client, name, CHAMPION)
    result = {"model": name, "challenger": str(challenger.version), "champion_before": str(champion.version) if champion else None}
    if champion is not None and champion.version == challenger.version:
        # Promoted already, perhaps by a run that failed before writing decision.json: the recorded decision.
        recorded = _recorded_decision(mlflow_client, challenger)
        if recorded is not None:
            return recorded
        result.update(promoted=False, champion_after=str(champion.version),
                      reason=f"version {challenger.version} is already the champion: nothing to decide")
        return result

    dev = resolve_device(device)
    metric = promotion_metric(params.promote, params.evaluate)
    real = RealFeatures(processed_dir, real_cache, features_dir / "real", device=str(dev), batch_size=params.protocol.batch_size)
    ours = _measure_version(mlflow_client, challenger, params, metric, real, features_dir, dev)
    theirs = _measure_version(mlflow_client, champion, params, metric, real, features_dir, dev) if champion else None
    policy = {**params.promote.model_dump(), "metric": metric}
    decision = decide(ours, theirs, policy)
    result.update(promoted=decision.promoted, reason=decision.reason,
                  champion_after=str(challenger.version) if decision.promoted else result["champion_before"],
                  decided_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                  policy=policy, decision=decision.to_dict(), challenger_report=ours, champion_report=theirs)
    commit_decision(mlflow_client, challenger, result)
    return result


def commit_decision(mlflow_client, challenger, result: dict) -> None:
    """Record the decision, then act on it: ``promotion/decision.json`` in the version's run and the
    ``promotion.*`` tags first, the 'champion' alias last (the commit point). Stopped anywhere, the registry holds
    no champion without its decision; every call is idempotent, so a rerun does it all again."""
    tags = {"promotion.decision": "promoted" if result["promoted"] else "refused",
            "promotion.reason": result["reason"][:TAG_LIMIT],
            "promotion.champion_before": result["champion_before"] or "none",
            "promotion.metric": result["policy"]["metric"], "promotion.decided_at": result["decided_at"]}
    mlflow_client.log_dict(challenger.run_id, result, "promotion/decision.json")
    for key, value in tags.items():
        mlflow_client.set_model_version_tag(result["model"], challenger.version, key, value)
    if result["promoted"]:
        mlflow_client.set_registered_model_alias(result["model"], CHAMPION, challenger.version)


def _recorded_decision(mlflow_client, mv) -> dict | None:
    """The decision that promoted ``mv`` (its run's ``promotion/decision.json``), or None (the alias came from
    elsewhere, e.g. ``deploy promote``)."""
    if mv.tags.get("promotion.decision") != "promoted":
        return None
    with tempfile.TemporaryDirectory(prefix="productstudio-decision-") as tmp:
        try:
            path = mlflow_client.download_artifacts(mv.run_id, "promotion/decision.json", tmp)
        except Exception as error:  # noqa: BLE001  (not there: no recorded decision)
            if tracking.unreachable(error):
                raise
            return None
        recorded = json.loads(Path(path).read_text())
    ours = recorded.get("model") == mv.name and recorded.get("challenger") == str(mv.version)
    return recorded if ours and recorded.get("promoted") else None
