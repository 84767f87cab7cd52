"""Measure a generator for promotion: the report ``promotion.decide`` compares.

Champion and challenger are measured under one protocol: the same named FID metric, the same latent
seeds and categories in turn (``metrics.evaluate.generated_batches``, as the evaluate step uses), the
same real features (the real_stats cache of this data version). The FID's uncertainty is a bootstrap
over the *generated* features (resampled with replacement, real side fixed): the real set is shared
by both models, so its own sampling noise mostly cancels in the comparison.

Inception is slow on a CPU (about 7 images/s), so generated features are cached on disk per
(weights sha256, seed, count, feature network); the registry keeps a copy beside each version
(``productstudio.registry.model_registry``) so a champion is never re-extracted.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from productstudio.config import EvaluateSettings, PromoteSettings
from productstudio.metrics.names import parse_metric


def promotion_metric(promote: PromoteSettings, evaluate: EvaluateSettings) -> str:
    """The named FID metric promotion uses: promote.metric, else the first FID in evaluate.metrics."""
    if promote.metric:
        return promote.metric
    for name in evaluate.metrics:
        if parse_metric(name).kind == "fid":
            return name
    raise ValueError("promote.metric is null and evaluate.metrics has no FID metric: name one, e.g. fid1k_test")


def features_key(weights_sha256: str, metric: str, seed: int) -> dict:
    from productstudio.metrics import features as feats

    info = feats.network_info()
    return {"weights_sha256": weights_sha256, "num_generated": parse_metric(metric).num_generated, "latent_seed": seed,
            "feature_network_sha256": info.sha256, "resize_method": info.resize_method}


def features_file(key: dict) -> str:
    return "features-" + hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16] + ".npy"


class _WithConfig:
    """Give a model without ``.config`` (e.g. an int8 module) the fp32 generator's config, so that
    ``generated_batches`` feeds it exactly the same latents."""

    def __init__(self, model, config):
        self.model, self.config = model, config

    def __call__(self, z, y):
        return self.model(z, y)


def generated_features(generator, config, key: dict, cache_dir: str | Path | None, batch_size: int, device) -> np.ndarray:
    from productstudio.metrics import features as feats
    from productstudio.metrics.evaluate import generated_batches

    path = Path(cache_dir) / features_file(key) if cache_dir else None
    if path is not None and path.is_file():
        return np.load(path, allow_pickle=False).astype(np.float64)
    model = generator if hasattr(generator, "config") else _WithConfig(generator, config)
    images = np.concatenate(list(generated_batches(model, key["num_generated"], key["latent_seed"], batch_size, device)))
    result = feats.extract_features(images, batch_size=batch_size, device=device)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npy")
        np.save(tmp, result.astype(np.float32), allow_pickle=False)  # float32: what the network computes
        tmp.replace(path)
    return result.astype(np.float64)


def real_features(processed_dir: str | Path, real_cache: str | Path, private_cache: str | Path, metric: str, batch_size: int, device):
    """The real side from the real_stats cache (a DVC output, only read here); a count it does not hold
    is computed into ``private_cache`` instead, never into another stage's output."""
    from productstudio.data import store
    from productstudio.metrics.engine import RealStatsCache
    from productstudio.data.store import data_version

    spec, version = parse_metric(metric), data_version(processed_dir)
    shared = RealStatsCache(real_cache, device=str(device), batch_size=batch_size)
    cache = shared if shared.lookup(version, spec.split, spec.num_generated) else RealStatsCache(
        private_cache, device=str(device), batch_size=batch_size)
    images, labels = store.load_split(processed_dir, spec.split, mmap=True)
    real = cache.features(lambda: images, data_version=version, split=spec.split, count=spec.num_generated)
    protocol = cache.protocol(cache.key(version, spec.split), len(real))
    return real, np.asarray(labels[: len(real)]), protocol


def bootstrap_fid(gen: np.ndarray, real: np.ndarray, resamples: int, seed: int) -> float:
    from productstudio.metrics.fid import fid_from_features

    rng = np.random.default_rng(seed)
    values = [fid_from_features(gen[rng.integers(0, len(gen), len(gen))], real) for _ in range(resamples)]
    return float(np.std(values, ddof=1))


def measure(gen: np.ndarray, real: np.ndarray, real_labels: np.ndarray, categories: list[str], metric: str,
            seed: int, resamples: int, real_protocol: dict) -> dict:
    """The promotion report of one model from its generated features (categories in turn, as generated)."""
    from productstudio.metrics.evaluate import generated_labels
    from productstudio.metrics.fid import fid_from_features

    labels = generated_labels(len(gen), len(categories))
    per_category = {}
    for index, name in enumerate(categories):
        a, b = gen[labels == index], real[real_labels == index]
        if len(a) >= 2 and len(b) >= 2:
            per_category[name] = fid_from_features(a, b)
    protocol = {"metric": metric, "num_generated": int(len(gen)), "latent_seed": seed, "bootstrap": resamples,
                "categories": list(categories),
                **{k: real_protocol[k] for k in ("num_real", "split", "data_version", "feature_network",
                                                  "feature_network_sha256", "resize_method") if k in real_protocol}}
    return {"metric": metric, "fid": fid_from_features(gen, real), "fid_std": bootstrap_fid(gen, real, resamples, seed),
            "per_category": per_category, "int8": None, "protocol": protocol}


def load_int8(directory: str | Path):
    """The int8 variant's module, through the quantization package's own loader."""
    try:
        from productstudio.quantization import quantize as quantization
    except ImportError:
        raise RuntimeError("productstudio.quantization is not installed: cannot load the int8 variant") from None
    for name in ("load_quantized_generator", "load_quantized"):
        loader = getattr(quantization, name, None)
        if loader is not None:
            loaded = loader(directory)
            return loaded[0] if isinstance(loaded, tuple) else loaded
    raise RuntimeError("productstudio.quantization has no load_quantized_generator/load_quantized")
