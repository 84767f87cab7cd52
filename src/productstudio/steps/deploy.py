"""Commands 'deploy <target>': KServe manifests, a Kubeflow Trainer TrainJob, and a local canary (champion and
challenger behind nginx)."""

from __future__ import annotations

import time
from pathlib import Path

from productstudio import paths
from productstudio.errors import ParamsError
from productstudio.steps.step import Arg, Step

HELP = "deploy registered versions: Kubernetes (KServe) manifests; canary through nginx; a TrainJob for training"
DESCRIPTION = ("Deployment of registered model versions. 'deploy kserve' writes KServe InferenceService manifests; "
               "'deploy trainjob' a Kubeflow Trainer TrainJob that trains on a cluster.")

STATE = Arg("--state", "both TorchServe state dirs, nginx's, deploy.json", paths.DEPLOY_STATE)


def _check_percent(percent: float) -> None:
    if not 0 <= percent <= 100:
        raise ParamsError(f"--percent {percent}: the canary share must be in 0..100")


def run_kserve(params, model: str | None, alias: str, canary_alias: str | None, percent: int | None, out: Path,
               crd: Path | None, example: bool) -> dict:
    from productstudio.deploy import kserve
    from productstudio.errors import MissingInput

    options = kserve.options_from_settings(params.deploy)
    if example:  # the committed examples: fixed versions, no registry needed
        stable, canary, percent = kserve.EXAMPLE_STABLE, kserve.EXAMPLE_CANARY, kserve.EXAMPLE_PERCENT
    else:
        percent = percent if percent is not None else params.deploy.canary_percent
        _check_percent(percent)
        name = model or params.register.model_name
        stable = kserve.from_registry(f"models:/{name}@{alias}")
        canary = kserve.from_registry(f"models:/{name}@{canary_alias}") if canary_alias else None
    crd = crd or kserve.default_crd_path()
    if not Path(crd).is_file():
        raise MissingInput(f"{crd}: the KServe CRD to validate against is missing (--crd PATH)")
    written = kserve.write_manifests(out, stable, options, canary, percent if canary else None, crd)
    return {"written": written, "crd": Path(crd)}


def format_kserve(result: dict) -> str:
    return "\n".join(f"wrote {path} (checked against {result['crd'].name})" for path in result["written"])


KSERVE = Step(
    name="kserve",
    help="write KServe InferenceService YAML for the champion (and a canary step for the challenger)",
    description="Resolve --alias (and --canary-alias) in the MLflow Model Registry (MLFLOW_TRACKING_URI) and write "
    "OUT/<service>-stable.yaml: an InferenceService whose pytorch predictor (KServe's TorchServe runtime) loads "
    "<deploy.kserve_storage_prefix>/<model>/<version>/ (config/config.properties and model-store/<model>.mar, as "
    "'productstudio package' builds them), with the version's lineage (data version, git commit, hashes) as "
    "annotations, CPU/memory requests and limits, a non-root unprivileged container. With --canary-alias also "
    "OUT/<service>-canary.yaml: the same InferenceService with the challenger's storageUri and "
    "canaryTrafficPercent P; applying it makes KServe send P % to the challenger and keep the rest on the last "
    "rolled-out revision (KServe's Knative mode only). Every manifest is validated against the KServe CRD's schema "
    "(--crd) plus checks the CRD leaves out (unknown fields, percent in 0..100, security settings) before it is "
    "written. Settings: params.yaml 'deploy' (kserve_*). TorchServe's token authorization is off inside the pod "
    "(its keys are per pod and expire): authenticate at the mesh, see deploy/kserve/README.md.",
    run=run_kserve,
    format=format_kserve,
    params=("deploy", "register.model_name"),
    args=(
        Arg("--model", "registered model name (default: params.yaml register.model_name)", type=str),
        Arg("--alias", "alias of the version serving 100 %", "champion", str),
        Arg("--canary-alias", "alias of the version to canary, e.g. challenger (default: no canary)", type=str),
        Arg("--percent", "canary share of traffic, 0..100 (default: params.yaml deploy.canary_percent)", type=int),
        Arg("--out", "directory for the YAML files", paths.KSERVE_OUT),
        Arg("--crd", "InferenceService CRD to validate against (default: ../shared/schemas/kserve/...)"),
        Arg("--example", "render the committed examples (fixed versions 3 and 4, no registry) instead", action="store_true"),
    ),
)


TRAINJOB_OUT = Path("deploy/kubeflow-trainer/trainjob.yaml")


def run_trainjob(params, out: Path, data_md5: str | None, crd: Path | None, runtimes: Path | None,
                 example: bool) -> dict:
    from productstudio.config import section_dict
    from productstudio.deploy import trainjob

    if example:  # the committed example: a fixed data hash, so it does not follow dvc.lock
        data_md5 = trainjob.EXAMPLE_DATA_MD5
    elif data_md5 is None:
        data_md5 = trainjob.data_md5_from_lock(Path("dvc.lock"))
    manifest = trainjob.render_trainjob(params.trainjob, section_dict(params.train), data_md5)
    crd, runtimes = crd or trainjob.default_crd_path(), runtimes or trainjob.default_runtimes_path()
    path = trainjob.write_trainjob(out, manifest, crd, runtimes, flags=" --example" if example else "")
    return {"path": path, "crd": Path(crd), "runtimes": Path(runtimes), "settings": params.trainjob, "data_md5": data_md5}


def format_trainjob(r: dict) -> str:
    s = r["settings"]
    return "\n".join([
        f"wrote {r['path']} (checked against {r['crd'].name} and {r['runtimes'].name})",
        f"TrainJob {s.namespace}/{s.name}: {s.num_nodes} node(s) x {s.proc_per_node} process(es) on runtime {s.runtime}, "
        f"data {r['data_md5']} from {s.data_remote}, result to {s.output_uri.rstrip('/')}/{s.name}/",
        f"apply with: kubectl apply -f {r['path']}",
    ])


TRAINJOB = Step(
    name="trainjob",
    help="write a Kubeflow Trainer TrainJob that runs 'productstudio train' under torchrun on N nodes",
    description="Write OUT: a TrainJob (trainer.kubeflow.org/v1alpha1) on the torch-distributed "
    "ClusterTrainingRuntime (params.yaml trainjob.runtime) with trainjob.num_nodes pods of "
    "trainjob.resources_per_node (requests = limits) from trainjob.image. Each pod runs a bash script: it writes the "
    "'train' params into params.yaml, pulls data/processed by its DVC hash (--data-md5, default: dvc.lock's) from "
    "the DVC remote trainjob.data_remote, runs 'torchrun --module productstudio.cli train' (torchrun takes nodes, "
    "processes per node, node rank and master address from the runtime's PET_* variables; "
    "trainjob.proc_per_node processes per node), and on node 0 copies the training directory and loss curves to "
    "<trainjob.output_uri>/<name>/. MLflow: MLFLOW_TRACKING_URI = trainjob.mlflow_tracking_uri (empty: "
    "--no-mlflow). Credentials (trainjob.secret_keys) come from the Secret trainjob.credentials_secret, never "
    "literal. The manifest is validated against the TrainJob CRD's schema (--crd) and the rules it lacks (a DNS-1035 "
    "name, at least one node, processes per node at most the GPUs (or CPUs) per node, resource quantities, an image "
    "with a tag or digest and not :latest, valid env names, no literal secrets, a runtimeRef naming a "
    "ClusterTrainingRuntime in --runtimes) before it is written. Nothing is applied: 'kubectl apply -f OUT'.",
    run=run_trainjob,
    format=format_trainjob,
    params=("trainjob", "train"),
    args=(
        Arg("--out", "the TrainJob YAML to write", TRAINJOB_OUT),
        Arg("--data-md5", "DVC hash (<md5>.dir) of the processed data to train on (default: data/processed's in "
            "./dvc.lock; push it first with 'dvc push')", type=str),
        Arg("--crd", "TrainJob CRD to validate against (default: "
            "../shared/schemas/kubeflow-trainer/trainer.kubeflow.org_trainjobs.yaml)"),
        Arg("--runtimes", "ClusterTrainingRuntime manifest the runtimeRef must name a runtime of (default: "
            "../shared/schemas/kubeflow-trainer/torch_distributed.yaml)"),
        Arg("--example", "render the committed example deploy/kubeflow-trainer/trainjob.yaml (a fixed data hash, "
            "no dvc.lock needed) instead", action="store_true"),
    ),
)


def run_canary(params, state: Path, percent: float | None) -> dict:
    from productstudio.deploy import local_canary

    percent = percent if percent is not None else params.deploy.canary_percent
    _check_percent(percent)
    return {**local_canary.start_canary(params, state, percent), "percent": percent, "state": state}


def format_canary(r: dict) -> str:
    return "\n".join([
        f"canary of {r['model']}: champion v{r['stable_version']} and challenger v{r['canary_version']} "
        f"behind nginx at {r['url']}, {r['percent']:g} % to the challenger",
        f"client key in {r['key_file']} (nginx checks it and sends each TorchServe its own token). Example:",
        f"  curl -si -H \"Authorization: Bearer $(cat {r['key_file']})\" -H 'Content-Type: application/json' "
        f"-d '{{\"category\": \"Sneaker\", \"count\": 1}}' {r['predict_url']} | grep -i x-model",
        f"then: productstudio deploy status | analyze | promote | rollback | stop --state {r['state']}",
    ])


CANARY = Step(
    name="canary",
    help="serve champion and challenger locally behind nginx, P % of requests to the challenger",
    description="Archive the registry's champion and challenger (MLFLOW_TRACKING_URI), start one TorchServe for each "
    "(serve.*_port and deploy.canary_*_port) and nginx on 127.0.0.1:deploy.proxy_port splitting requests with "
    "split_clients. Clients send the proxy's key (STATE/proxy/client_key); responses carry X-Model-Side and "
    "X-Model-Version.",
    run=run_canary,
    format=format_canary,
    params=("deploy", "serve", "register.model_name"),
    args=(STATE, Arg("--percent", "share of requests to the challenger, 0..100 (default: deploy.canary_percent)", type=float)),
)


def run_status(state: Path, json: bool) -> dict:
    from productstudio.deploy import local_canary

    return {"status": local_canary.deploy_status(state), "json": json}


def format_status(r: dict) -> str:
    import json

    from productstudio.deploy import local_canary

    return json.dumps(r["status"], indent=2) if r["json"] else local_canary.format_status(r["status"])


STATUS = Step(
    name="status",
    help="per-version requests, error rate, latency percentiles (nginx log, TorchServe metrics)",
    description="Counts, error rates and p50/p95/p99 per side from nginx's access log, and TorchServe's own counts. "
    "Exits 3 when no canary is running.",
    run=run_status,
    format=format_status,
    exit_code=lambda r: 0 if r["status"]["running"] else 3,
    args=(STATE, Arg("--json", "print JSON", action="store_true")),
)


def run_analyze(params, state: Path, samples: int | None, processed: Path, real_stats: Path) -> dict:
    from productstudio.deploy import local_canary

    return local_canary.analyze(params, state, processed, real_stats, samples)


def format_analyze(result: dict) -> str:
    lines = []
    for side in ("stable", "canary"):
        s = result["sides"][side]
        rate = "-" if s["error_rate"] is None else f"{s['error_rate']:.2%}"
        p95 = "-" if s["p95_ms"] is None else f"{s['p95_ms']:.1f} ms"
        kid = "-" if s["kid"] is None else f"{s['kid']:.4f} (kid{result['kid_samples']}_test)"
        lines.append(f"{side:<7} v{result[side + '_version']}: {s['requests']} requests, error rate {rate}, p95 {p95}, KID {kid}")
    lines.append(f"recommendation: {result['recommendation']}: {result['reason']}")
    return "\n".join(lines)


ANALYZE = Step(
    name="analyze",
    help="compare canary with stable (error rate, p95, KID of served images) and recommend promote or rollback",
    description="Policy: params.yaml deploy (min_requests, max_error_rate_increase, max_p95_ratio, kid_samples, "
    "max_kid_increase). KID: kid_samples images served by each side against the cached real test features.",
    run=run_analyze,
    format=format_analyze,
    params=("deploy", "protocol"),
    args=(
        STATE,
        Arg("--samples", "images per side for KID; 0 skips it (default: deploy.kid_samples)", type=int),
        Arg("--processed", "processed dataset", paths.PROCESSED),
        Arg("--real-stats", "real feature cache, read only", paths.REAL_STATS),
    ),
)


def run_promote(state: Path) -> dict:
    from productstudio.deploy import local_canary

    return local_canary.promote(state)


PROMOTE = Step(
    name="promote",
    help="all traffic to the challenger; champion alias -> challenger's version",
    description="Sends every request to the challenger's TorchServe and moves the registry's 'champion' alias to its version.",
    run=run_promote,
    format=lambda r: f"all traffic to v{r['canary_version']}; {r['registered_model']}@champion -> v{r['champion']}",
    args=(STATE,),
)


def run_rollback(state: Path, reason: str) -> dict:
    from productstudio.deploy import local_canary

    return {**local_canary.rollback(state, reason), "tag": local_canary.ROLLBACK_TAG}


ROLLBACK = Step(
    name="rollback",
    help="all traffic to the champion; tag the challenger version with the rollback",
    description="Sends every request back to the champion's TorchServe; the champion alias stays where it is and the "
    "challenger's version is tagged with the reason.",
    run=run_rollback,
    format=lambda r: (f"all traffic to v{r['stable_version']} (champion unchanged); v{r['canary_version']} tagged "
                      f"{r['tag']}"),
    args=(STATE, Arg("--reason", "recorded in the tag", "manual rollback", str)),
)


def run_renew_keys(state: Path, every: float | None) -> dict:
    from productstudio.deploy import local_canary

    if every is not None and every <= 0:
        raise ParamsError(f"--every {every}: must be a positive number of minutes")
    while True:
        result = local_canary.renew_keys(state)
        expiry = ", ".join(f"{side} {times.get('inference')}" for side, times in result["expiry"].items())
        print(f"{result['renewed_at']}: new TorchServe keys handed to nginx; inference keys expire: {expiry}", flush=True)
        if not every:
            return result
        time.sleep(every * 60)


RENEW_KEYS = Step(
    name="renew-keys",
    help="new TorchServe tokens for both sides, handed to nginx (run before serve.token_expiration_min)",
    description="TorchServe's inference and management keys expire after serve.token_expiration_min (60 by default). "
    "This asks each TorchServe for new ones (with its non-expiring API key) and reloads nginx with them; clients keep "
    "the proxy's key. With --every it repeats until interrupted (e.g. --every 45 for 60-minute keys).",
    run=run_renew_keys,
    args=(STATE, Arg("--every", "repeat every this many minutes (default: once)", type=float)),
)


def run_watch(params, state: Path, once: bool) -> dict:
    from productstudio.deploy import local_canary

    d = params.deploy
    if not once:
        print(f"watching {state}: both sides every {d.watch_every_s:g} s; rolls back when the challenger's side is down",
              flush=True)
    return local_canary.watch(state, d.watch_every_s, d.watch_failures, rounds=1 if once else None)


def format_watch(r: dict) -> str:
    if r["action"] == "rollback":
        return f"rolled back: {r['reason']}"
    return "both sides up" if not r["down"] else f"down: {', '.join(r['down'])} side (see productstudio deploy status)"


WATCH = Step(
    name="watch",
    help="watch both sides; roll back at once when the challenger's TorchServe goes down",
    description="Checks each side's TorchServe every deploy.watch_every_s seconds (running, and /ping with its key). "
    "When the challenger's side is gone, or fails deploy.watch_failures checks in a row, all traffic goes back to "
    "the champion and the challenger's version is tagged, as 'deploy rollback' does. Runs until it rolls back; "
    "--once checks once (for cron). Exits 4 when it rolled back or a side is down.",
    run=run_watch,
    format=format_watch,
    exit_code=lambda r: 4 if r["action"] == "rollback" or r.get("down") else 0,
    params=("deploy",),
    args=(STATE, Arg("--once", "check once and exit", action="store_true")),
)


def run_stop(state: Path) -> dict:
    from productstudio.deploy import local_canary

    return {"stopped": local_canary.stop_canary(state), "state": state}


STOP = Step(
    name="stop",
    help="stop nginx and both TorchServe instances",
    description="Stops what 'deploy canary' started (nginx and both TorchServe instances).",
    run=run_stop,
    format=lambda r: "canary stopped" if r["stopped"] else f"no canary running from {r['state']}",
    args=(STATE,),
)

TARGETS = (KSERVE, TRAINJOB, CANARY, STATUS, ANALYZE, PROMOTE, ROLLBACK, WATCH, RENEW_KEYS, STOP)
