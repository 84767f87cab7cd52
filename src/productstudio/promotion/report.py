"""The promotion report of one model: what ``promotion.policy.decide`` compares.

Champion and challenger are measured under one protocol: the same named FID metric, the same latent
seeds and categories in turn (``models.sampling.generated_batches``, as the evaluate step uses), the
same real features (the real_stats cache of this data version). The FID's uncertainty is a bootstrap
over the *generated* features (resampled with replacement, real side fixed): the real set is shared by
both models, so its own sampling noise mostly cancels in the comparison. Every number comes from the
metric engine (``metrics.engine``).
"""

from __future__ import annotations

import numpy as np

from productstudio.config import EvaluateSettings, PromoteSettings
from productstudio.errors import ParamsError
from productstudio.metrics.engine import MetricOptions, calc_metric
from productstudio.metric_names import parse_metric
from productstudio.models.sampling import generated_labels

# What of the real side's protocol a report carries (both reports must agree on it).
PROTOCOL_KEYS = ("num_real", "split", "data_version", "feature_network", "feature_network_sha256", "resize_method")


def promotion_metric(promote: PromoteSettings, evaluate: EvaluateSettings) -> str:
    """The named FID metric promotion uses: promote.metric, else the first FID in evaluate.metrics."""
    if promote.metric:
        return promote.metric
    for name in evaluate.metrics:
        if parse_metric(name).kind == "fid":
            return name
    raise ParamsError("promote.metric is null and evaluate.metrics has no FID metric: name one, e.g. fid1k_test")


def bootstrap_std(metric: str, opts: MetricOptions, resamples: int, seed: int) -> float:
    """Standard deviation of ``metric`` over ``resamples`` bootstrap resamples of the generated features."""
    count = parse_metric(metric).num_generated
    features = opts.generated_features(count)
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(resamples):
        resampled = features[rng.integers(0, len(features), len(features))]
        values.append(calc_metric(metric, MetricOptions(generated=lambda n, f=resampled: f[:n], real=opts.real))["value"])
    return float(np.std(values, ddof=1))


def promotion_report(gen: np.ndarray, real_features, categories: list[str], metric: str, seed: int,
                     resamples: int) -> dict:
    """The report of one model from its generated features (categories in turn, as generated).

    ``real_features``: ``RealFeatures`` (or anything with ``features(split, n)`` and ``labels(split, n)``)."""
    labels = generated_labels(len(gen), len(categories))
    opts = MetricOptions(generated=lambda n: gen[:n], real=real_features.features,
                         generated_labels=lambda n: labels[:n], real_labels=real_features.labels)
    spec = parse_metric(metric)
    overall = calc_metric(metric, opts)
    per_category = {}
    for index, name in enumerate(categories):
        narrowed = opts.for_category(index)
        sizes = (len(narrowed.generated_features(spec.num_generated)),
                 len(narrowed.real_features(spec.split, spec.num_real_requested)[0]))
        if min(sizes) >= 2:
            per_category[name] = calc_metric(metric, narrowed)["value"]
    real_protocol = overall["protocol"]
    protocol = {"metric": metric, "num_generated": int(len(gen)), "latent_seed": seed, "bootstrap": resamples,
                "categories": list(categories), **{k: real_protocol[k] for k in PROTOCOL_KEYS if k in real_protocol}}
    return {"metric": metric, "fid": overall["value"], "fid_std": bootstrap_std(metric, opts, resamples, seed),
            "per_category": per_category, "int8": None, "protocol": protocol}


def int8_fid(gen8: np.ndarray, real_features, metric: str) -> dict:
    """The int8 variant's part of a report: its FID under the same protocol."""
    opts = MetricOptions(generated=lambda n: gen8[:n], real=real_features.features)
    return {"fid": calc_metric(metric, opts)["value"]}
