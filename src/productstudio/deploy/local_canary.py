"""Local canary: the champion and the challenger each in their own TorchServe, nginx in front, all on 127.0.0.1.

    start_canary(params, ".scratch/deploy", percent=10)  # archives from the registry aliases, 2 x TorchServe, nginx
    deploy_status(".scratch/deploy")                      # per side: requests, error rate, p50/p95/p99, TorchServe counters
    analyze(params, ".scratch/deploy")                    # error rate, p95, KID -> promote | rollback | wait
    promote(".scratch/deploy") / rollback(".scratch/deploy")
    renew_keys(".scratch/deploy")                         # before TorchServe's tokens expire
    watch(".scratch/deploy", every_s=5, failures=3)       # rolls back when the challenger's side goes down
    stop_canary(".scratch/deploy")

Layout of the state directory: ``stable/`` and ``canary/`` (TorchServe state dirs, see server.py), ``proxy/``
(nginx, see canary.py) and ``deploy.json`` (model name, versions, URLs, where the client key is).

Two TorchServe instances have two sets of tokens, so nginx checks one client key of its own
(``proxy/client_key``) and sends each side its own inference token. TorchServe's tokens expire after
serve.token_expiration_min: ``renew_keys`` (``productstudio deploy renew-keys [--every MIN]``) gets new ones
from each TorchServe and hands them to nginx with a graceful reload; clients keep their key.
"""

from __future__ import annotations

import json
import math
import re
import secrets
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from productstudio import paths, tracking
from productstudio.config import DeploySettings, Params, ProtocolSettings
from productstudio.errors import BadRequest, MissingInput, ServiceError
from productstudio.serving import server
from productstudio.deploy.nginx_proxy import SIDES, CanaryProxy, ProxyLimits
from productstudio.registry.model_registry import ROLLBACK_TAG

DEPLOY_FILE = "deploy.json"
CLIENT_KEY = "client_key"


def canary_serve_settings(params: Params):
    """The challenger's TorchServe settings: serve.* with deploy.canary_*_port."""
    d = params.deploy
    return params.serve.model_copy(update={"inference_port": d.canary_inference_port,
                                           "management_port": d.canary_management_port,
                                           "metrics_port": d.canary_metrics_port,
                                           "grpc_inference_port": d.canary_grpc_inference_port,
                                           "grpc_management_port": d.canary_grpc_management_port})


def registry_archives(params: Params, state_dir: str | Path, variant: str | None = None) -> dict:
    """Archive the champion and the challenger from the registry: {side: (mar path, registry version)}."""
    from productstudio.registry.model_registry import CHALLENGER, CHAMPION, resolve
    from productstudio.serving.archive import archive_from_registry

    name = params.register.model_name
    serve_name = params.serve.model_name or name
    variant = variant or params.serve.variant
    champion = resolve(f"models:/{name}@{CHAMPION}")
    challenger = resolve(f"models:/{name}@{CHALLENGER}")
    if champion.version == challenger.version:
        raise BadRequest(f"version {challenger.version} of '{name}' is both champion and challenger: nothing to canary")
    out = {}
    for side, mv in (("stable", champion), ("canary", challenger)):
        mar = archive_from_registry(f"models:/{name}/{mv.version}", Path(state_dir) / side / "model-store", variant, serve_name)
        out[side] = (mar, str(mv.version))
    return out


def start_canary(params: Params, state_dir: str | Path, percent: float, archives: dict | None = None,
                 wait_s: float = 180.0) -> dict:
    """Serve ``archives`` ({"stable": (mar, version), "canary": (mar, version)}; default: the registry's champion
    and challenger) and start nginx sending ``percent`` % to the canary. Returns what deploy.json records."""
    state = Path(state_dir).resolve()
    if CanaryProxy(state / "proxy").pid():
        raise ServiceError(f"a canary already runs from {state} (productstudio deploy stop)")
    archives = archives or registry_archives(params, state)
    name = params.serve.model_name or params.register.model_name
    handles = {}
    try:
        # Both servers start at once (each takes a while to get its worker ready).
        with ThreadPoolExecutor(2) as pool:
            futures = {side: pool.submit(server.start, settings, archives[side][0], state / side, name, wait_s)
                       for side, settings in (("stable", params.serve), ("canary", canary_serve_settings(params)))}
            errors = []
            for side, future in futures.items():
                try:
                    handles[side] = future.result()
                except Exception as error:  # noqa: BLE001  (stop the other one, then report)
                    errors.append(error)
            if errors:
                raise errors[0]
        client_key = secrets.token_urlsafe(24)
        key_file = state / "proxy" / CLIENT_KEY
        key_file.parent.mkdir(parents=True, exist_ok=True)
        key_file.write_text(client_key + "\n")
        key_file.chmod(0o600)
        proxy = CanaryProxy(state / "proxy")
        url = proxy.start(handles["stable"].inference_url, handles["canary"].inference_url, percent,
                          params.deploy.proxy_port, archives["stable"][1], archives["canary"][1],
                          max_body_bytes=params.serve.max_request_size, client_key=client_key,
                          upstream_keys={side: h.inference_key for side, h in handles.items()},
                          limits=ProxyLimits.from_settings(params.deploy))
    except BaseException:
        for side in SIDES:
            server.stop(state / side)
        raise
    record = {"model": name, "registered_model": params.register.model_name, "url": url,
              "predict_url": f"{url}/predictions/{name}", "key_file": str(key_file),
              "stable_version": archives["stable"][1], "canary_version": archives["canary"][1], "percent": percent,
              "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    (state / DEPLOY_FILE).write_text(json.dumps(record, indent=2) + "\n")
    return record


def renew_keys(state_dir: str | Path) -> dict:
    """New inference and management tokens from both TorchServe instances; nginx gets the inference ones
    with a graceful reload. Returns when each side's keys now expire.

    Requests that nginx forwards between a side's renewal and the reload still carry that side's old
    token and get TorchServe's 400: a window of milliseconds, once per renewal, which is far better
    than every request failing once the token expires.
    """
    state = Path(state_dir)
    proxy = _running_proxy(state)
    handles = {side: server.running_handle(state / side) for side in SIDES}
    proxy.set_upstream_keys({side: server.renew_keys(handle)["inference"] for side, handle in handles.items()})
    return {"renewed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "expiry": {side: server.key_expiry(handle) for side, handle in handles.items()}}


def load_deploy(state_dir: str | Path) -> dict:
    path = Path(state_dir) / DEPLOY_FILE
    if not path.is_file():
        raise MissingInput(f"no canary deployment in {state_dir} (productstudio deploy canary)")
    return json.loads(path.read_text())


def _record_percent(state_dir: str | Path, record: dict, percent: float) -> dict:
    record = {**record, "percent": percent}
    (Path(state_dir) / DEPLOY_FILE).write_text(json.dumps(record, indent=2) + "\n")
    return record


def _running_proxy(state_dir: str | Path) -> CanaryProxy:
    load_deploy(state_dir)
    proxy = CanaryProxy(Path(state_dir) / "proxy")
    if not proxy.pid():
        raise MissingInput(f"the canary proxy in {state_dir} is not running (productstudio deploy canary)")
    return proxy


def stop_canary(state_dir: str | Path) -> bool:
    """Stop nginx and both TorchServe instances; False when nothing ran."""
    state = Path(state_dir)
    proxy = CanaryProxy(state / "proxy")
    ran = proxy.pid() is not None
    proxy.stop()
    for side in SIDES:
        ran = server.stop(state / side) or ran
    return ran


# ------------------------------------------------------------------------------------------------
# Status: nginx's access log (per request) and TorchServe's own counters (Prometheus text).


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def side_stats(records: list[dict]) -> dict:
    """Per side: requests, 5xx errors, error rate and latency percentiles (ms) from nginx access-log records.
    Requests nginx answered itself (no upstream: 401 wrong proxy key, 413 too large) reached neither side."""
    out = {}
    for side in SIDES:
        mine = [r for r in records if r.get("side") == side and r.get("upstream")]
        times = [float(r["request_time"]) * 1000 for r in mine]
        errors = sum(1 for r in mine if str(r.get("status", "")).startswith("5"))
        out[side] = {"requests": len(mine), "errors": errors, "error_rate": errors / len(mine) if mine else None,
                     **{f"p{q}_ms": percentile(times, q) for q in (50, 95, 99)}}
    return out


_METRIC = re.compile(r" - (\w+)\.\w+:([0-9.eE+-]+)\|")
# What TorchServe's frontend logs (ts_log.log, INFO) when a model worker process goes away; it then starts a new one.
_WORKER_DIED = " Worker disconnected. "


def worker_deaths(logs_dir: str | Path) -> int:
    """How many times a model worker of this TorchServe died since it started (its logs/ is per start)."""
    path = Path(logs_dir) / "ts_log.log"
    if not path.is_file():
        return 0
    return sum(1 for line in path.read_text(errors="replace").splitlines() if _WORKER_DIED in line)


def torchserve_metrics(logs_dir: str | Path) -> dict:
    """TorchServe's own view from its metric logs (metrics_mode 'log', the default: its Prometheus endpoint stays
    empty): requests, 4xx/5xx, frontend latency and the handler's prediction time percentiles (ms)."""
    values: dict = {}
    for name in ("ts_metrics.log", "model_metrics.log"):
        path = Path(logs_dir) / name
        if path.is_file():
            for line in path.read_text(errors="replace").splitlines():
                match = _METRIC.search(line)
                if match:
                    values.setdefault(match[1], []).append(float(match[2]))
    latency = [v / 1000 for v in values.get("ts_inference_latency_microseconds", [])]
    prediction = values.get("PredictionTime", [])
    return {"requests": int(sum(values.get("ts_inference_requests_total", []))), "worker_deaths": worker_deaths(logs_dir),
            "errors_4xx": int(sum(values.get("Requests4XX", []))), "errors_5xx": int(sum(values.get("Requests5XX", []))),
            "latency_p50_ms": percentile(latency, 50), "latency_p95_ms": percentile(latency, 95),
            "prediction_p50_ms": percentile(prediction, 50), "prediction_p95_ms": percentile(prediction, 95)}


def deploy_status(state_dir: str | Path, since: int = 0) -> dict:
    state = Path(state_dir)
    record = load_deploy(state)
    proxy = CanaryProxy(state / "proxy")
    stats = side_stats(proxy.records(since))
    for side in SIDES:
        stats[side]["version"] = record[f"{side}_version"]
        stats[side]["torchserve"] = {**side_health(state / side), **torchserve_metrics(state / side / "logs")}
    running = proxy.pid() is not None
    status = {**record, "running": running, "percent": proxy.settings()["percent"] if running else None, "sides": stats}
    return {**status, "alerts": side_alerts(status)}


def side_health(side_dir: str | Path) -> dict:
    """Is this side's TorchServe running, and does it answer /ping (a worker of the model ready)?"""
    handle = server.load_handle(side_dir)
    running = server._pid(Path(side_dir)) is not None
    return {"running": running, "healthy": bool(running and handle and server.ping(handle))}


def side_alerts(status: dict) -> list[str]:
    """One line per side that is down or lost a worker, saying what traffic it still gets and what to do."""
    lines = []
    percent = status["percent"] if status["percent"] is not None else 0
    for side in SIDES:
        ts = status["sides"][side]["torchserve"]
        share = percent if side == "canary" else 100 - percent
        traffic = (f"nginx still sends it {share:g} % of requests" if status["running"] and share
                   else "it gets no traffic")
        remedy = {"canary": "productstudio deploy rollback (deploy watch does it by itself)",
                  "stable": "restart the canary (productstudio deploy stop; deploy canary)"}[side]
        if not ts["running"]:
            lines.append(f"{side} side v{status[side + '_version']} is DOWN: its TorchServe is not running; {traffic}"
                         + (f": {remedy}" if status["running"] and share else ""))
        elif not ts["healthy"]:
            lines.append(f"{side} side v{status[side + '_version']} is not ready: TorchServe runs but /ping fails "
                         f"(no model worker ready); {traffic}")
        if ts.get("worker_deaths"):
            lines.append(f"{side} side v{status[side + '_version']}: TorchServe lost its model worker "
                         f"{ts['worker_deaths']} time(s) and restarted it" + ("; deploy analyze will not promote it"
                                                                             if side == "canary" else ""))
    return lines


def format_status(status: dict) -> str:
    def ms(value):
        return "-" if value is None else f"{value:.1f}"

    lines = [*status.get("alerts", []),
             f"canary of {status['model']}: {status['url']} ({'running' if status['running'] else 'stopped'}), "
             f"{'-' if status['percent'] is None else status['percent']} % to the challenger; client key in {status['key_file']}",
             f"{'side':<7} {'version':>7} {'requests':>9} {'errors':>7} {'err rate':>8} {'p50 ms':>8} {'p95 ms':>8} "
             f"{'p99 ms':>8} {'TS requests':>12} {'TS 5xx':>7} {'TS p95 ms':>10} {'model p95 ms':>13}"]
    for side in SIDES:
        s = status["sides"][side]
        ts = s["torchserve"]
        rate = "-" if s["error_rate"] is None else f"{s['error_rate']:.2%}"
        lines.append(f"{side:<7} {s['version']:>7} {s['requests']:>9} {s['errors']:>7} {rate:>8} {ms(s['p50_ms']):>8} "
                     f"{ms(s['p95_ms']):>8} {ms(s['p99_ms']):>8} {ts['requests']:>12} {ts['errors_5xx']:>7} "
                     f"{ms(ts['latency_p95_ms']):>10} {ms(ts['prediction_p95_ms']):>13}")
    lines.append("requests/errors/p* from nginx's access log (since the canary started); TS: TorchServe's metric logs "
                 "(predictions only, not /ping); model: the handler's prediction time")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------
# The policy: a pure function of the measurements.


@dataclass(frozen=True)
class CanaryDecision:
    action: str  # promote | rollback | wait
    reason: str


def canary_decision(stable: dict, canary: dict, policy: DeploySettings) -> CanaryDecision:
    """Judge the canary against stable. Each side: {"requests", "error_rate", "p95_ms", "kid"} (kid may be None:
    not measured; optional "running"/"worker_deaths" from TorchServe). Rollback on the first failing rule; wait
    while the canary has too few requests. A side that crashed is never promoted, however few requests it lost."""
    if canary.get("running") is False:
        return CanaryDecision("rollback", "the canary's TorchServe is not running")
    if canary.get("worker_deaths"):
        return CanaryDecision("rollback", f"the canary's TorchServe lost its model worker {canary['worker_deaths']} "
                                          "time(s) (a crash or out of memory): not promoted")
    if canary["requests"] < policy.min_requests:
        return CanaryDecision("wait", f"canary served {canary['requests']} requests, fewer than min_requests {policy.min_requests}")
    error_gap = (canary["error_rate"] or 0.0) - (stable["error_rate"] or 0.0)
    if error_gap > policy.max_error_rate_increase:
        return CanaryDecision("rollback", f"canary error rate {canary['error_rate']:.2%} exceeds stable's "
                                          f"{stable['error_rate'] or 0:.2%} by more than {policy.max_error_rate_increase:.2%}")
    if (canary["p95_ms"] is not None and stable["p95_ms"] and canary["p95_ms"] > policy.max_p95_ratio * stable["p95_ms"]
            and canary["p95_ms"] - stable["p95_ms"] > policy.min_p95_increase_ms):
        return CanaryDecision("rollback", f"canary p95 {canary['p95_ms']:.1f} ms is over {policy.max_p95_ratio:g}x "
                                          f"stable's {stable['p95_ms']:.1f} ms (and {policy.min_p95_increase_ms:g} ms)")
    kid_known = canary.get("kid") is not None and stable.get("kid") is not None
    if kid_known and canary["kid"] - stable["kid"] > policy.max_kid_increase:
        return CanaryDecision("rollback", f"canary KID {canary['kid']:.4f} exceeds stable's {stable['kid']:.4f} "
                                          f"by more than {policy.max_kid_increase:g}")
    quality = f"KID {canary['kid']:.4f} vs {stable['kid']:.4f}" if kid_known else "KID not measured"
    p95 = "-" if canary["p95_ms"] is None else f"{canary['p95_ms']:.1f}"
    return CanaryDecision("promote", f"canary within policy: error rate +{max(error_gap, 0):.2%}, p95 {p95} ms, {quality}")


# ------------------------------------------------------------------------------------------------
# Analyze: the measurements above plus KID of images each side actually serves.


def sample_images(handle, count: int, categories: int, per_request: int = 25, seed: int = 0):
    """``count`` images (uint8, N x C x H x W) from a running TorchServe, spread over the model's
    ``categories`` (request i asks for category i mod ``categories``)."""
    import base64

    import numpy as np

    from productstudio.imaging import decode

    images, i = [], 0
    while len(images) < count:
        n = min(per_request, count - len(images))
        body = json.dumps({"category": i % categories, "count": n, "seed": seed + i * per_request}).encode()
        request = urllib.request.Request(handle.predict_url, data=body, method="POST",
                                         headers={"Content-Type": "application/json",
                                                  "Authorization": f"Bearer {handle.inference_key}"})
        with urllib.request.urlopen(request, timeout=120) as response:
            answer = json.loads(response.read())
        images.extend(decode(base64.b64decode(data)) for data in answer["images"])
        i += 1
    return np.stack(images)


def served_categories(state_dir: str | Path) -> int:
    """How many categories the model served from ``state_dir`` has (from the archive's config.json)."""
    from productstudio.models.io import category_names

    return len(category_names(server.served_config(state_dir)))


def served_kid(state_dir: str | Path, processed_dir: str | Path, real_cache: str | Path, samples: int,
               protocol: ProtocolSettings, features_dir: str | Path = paths.GENERATED_FEATURES) -> dict:
    """{side: KID} of ``samples`` served images against the first ``samples`` real test images: the
    metric ``kid<samples>_test``. The real features come from ``real_cache`` (the real_stats output, only
    read); a count it lacks is kept in ``features_dir/real``."""
    from productstudio.metrics.engine import MetricOptions, calc_metric
    from productstudio.metrics.features import extract_features
    from productstudio.metric_names import metric_name
    from productstudio.metrics.real_features import RealFeatures

    real = RealFeatures(processed_dir, real_cache, Path(features_dir) / "real", progress=False)
    name = metric_name("kid", samples, "test")
    out = {}
    for side in SIDES:
        handle = server.load_handle(Path(state_dir) / side)
        images = sample_images(handle, samples, served_categories(Path(state_dir) / side))
        generated = extract_features(images, progress=False)
        opts = MetricOptions(generated=lambda n, g=generated: g[:n], real=real.features,
                             kid_subset_size=protocol.kid_subset_size, kid_subsets=protocol.kid_subsets, seed=protocol.seed)
        out[side] = calc_metric(name, opts)["value"]
    return out


def analyze(params: Params, state_dir: str | Path, processed_dir: str | Path = "data/processed",
            real_cache: str | Path = "models/real_stats", samples: int | None = None) -> dict:
    """Measure both sides (access log since the canary started; KID of served images) and apply the policy."""
    status = deploy_status(state_dir)
    if not status["running"]:
        raise MissingInput(f"the canary proxy in {state_dir} is not running (productstudio deploy canary)")
    samples = params.deploy.kid_samples if samples is None else samples
    both_up = all(status["sides"][side]["torchserve"]["healthy"] for side in SIDES)  # KID needs both to answer
    kid = served_kid(state_dir, processed_dir, real_cache, samples, params.protocol) if samples and both_up else {}
    sides = {side: {**{k: status["sides"][side][k] for k in ("requests", "error_rate", "p95_ms")}, "kid": kid.get(side),
                    **{k: status["sides"][side]["torchserve"][k] for k in ("running", "worker_deaths")}}
             for side in SIDES}
    decision = canary_decision(sides["stable"], sides["canary"], params.deploy)
    return {"model": status["model"], "stable_version": status["stable_version"],
            "canary_version": status["canary_version"], "kid_samples": samples,
            "kid_reference": f"the first {samples} test images (cached real features)",
            "sides": sides, "recommendation": decision.action, "reason": decision.reason}


# ------------------------------------------------------------------------------------------------
# Promote / rollback: all traffic to one side, and the registry aliases to match.


def promote(state_dir: str | Path) -> dict:
    """The champion alias moves to the challenger's version, then all traffic goes to the challenger.

    The registry first: when MLflow cannot be reached nothing has changed (traffic included); a rerun
    after a failed reload sets the same alias again and finishes."""
    from productstudio.registry.model_registry import CHAMPION, client

    record = load_deploy(state_dir)
    proxy = _running_proxy(state_dir)
    mlflow_client = client()
    # The decision is recorded on the version before the alias moves (as promote_challenger does): a champion
    # always says how it became one.
    tags = {"promotion.decision": "promoted-by-canary",
            "promotion.reason": f"deploy promote: the canary had {proxy.settings()['percent']:g} % of requests beside v{record['stable_version']}",
            "promotion.champion_before": record["stable_version"],
            "promotion.decided_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    for key, value in tags.items():
        mlflow_client.set_model_version_tag(record["registered_model"], record["canary_version"], key, value)
    mlflow_client.set_registered_model_alias(record["registered_model"], CHAMPION, record["canary_version"])
    proxy.set_percent(100)
    return {**_record_percent(state_dir, record, 100), "champion": record["canary_version"]}


def rollback(state_dir: str | Path, reason: str = "manual rollback") -> dict:
    """All traffic back to the champion; the challenger version gets a tag saying so (the champion stays).

    Traffic first: a rollback must work while MLflow is down. If the tag cannot be written the error says
    that traffic is already back on the champion; a rerun writes the tag."""
    from productstudio.registry.model_registry import client

    record = load_deploy(state_dir)
    _running_proxy(state_dir).set_percent(0)
    record = _record_percent(state_dir, record, 0)
    when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    try:
        client().set_model_version_tag(record["registered_model"], record["canary_version"], ROLLBACK_TAG, f"{when}: {reason}")
    except Exception as error:
        down = tracking.server_error(error)  # MLflow not answering; anything else is a bug and keeps its traceback
        if down is None:
            raise
        raise ServiceError(f"all traffic is back on v{record['stable_version']}, but the registry tag on "
                           f"v{record['canary_version']} was not written: {down}") from None
    return {**record, "champion": record["stable_version"]}


def watch(state_dir: str | Path, every_s: float = 5.0, failures: int = 3, rounds: int | None = None, say=print) -> dict:
    """Check both sides every ``every_s`` seconds; roll back as soon as the challenger's side is down (its
    TorchServe gone at once, or /ping failing ``failures`` checks in a row: a worker TorchServe restarts
    answers again within a few seconds). Returns after a rollback, or after ``rounds`` checks (None: never).
    The stable side going down is said once per outage: there is nothing to fall back to."""
    state = Path(state_dir)
    misses = dict.fromkeys(SIDES, 0)
    stable_said = False  # the stable side's outage is said once, until it is back
    checks = 0
    while True:
        proxy = _running_proxy(state)
        record = load_deploy(state)
        percent = proxy.settings()["percent"]
        why = {}
        for side in SIDES:
            health = side_health(state / side)
            misses[side] = failures if not health["running"] else (0 if health["healthy"] else misses[side] + 1)
            if misses[side] >= failures:
                why[side] = "its TorchServe is not running" if not health["running"] else \
                    f"/ping failed {misses[side]} checks in a row"
        if "canary" in why and percent > 0:
            reason = f"deploy watch: canary side v{record['canary_version']} down ({why['canary']})"
            result = rollback(state, reason)
            say(f"{time.strftime('%H:%M:%S')} {reason}: rolled back, all traffic to v{record['stable_version']}")
            return {**result, "action": "rollback", "reason": reason}
        if "stable" in why and not stable_said:
            say(f"{time.strftime('%H:%M:%S')} stable side v{record['stable_version']} down ({why['stable']}); "
                f"{100 - percent:g} % of requests still go to it")
        stable_said = "stable" in why
        checks += 1
        if rounds is not None and checks >= rounds:
            return {**record, "percent": percent, "action": "none", "down": sorted(why)}
        time.sleep(every_s)
