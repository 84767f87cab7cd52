"""The real_stats step: the real images' Inception features, cached once per data version (the only writer
of that cache), and the floor: real train vs real test at the metrics' counts, what a perfect generator scores."""

from __future__ import annotations

from pathlib import Path

from productstudio.artifacts import write_json_atomic
from productstudio.config import EvaluateSettings, ProtocolSettings
from productstudio.data import store
from productstudio.data.store import data_version
from productstudio.imaging import resolve_device
from productstudio.metric_names import parse_metric
from productstudio.metrics.engine import fid_kid_from_features
from productstudio.metrics.real_features import RealStatsCache

FLOOR = "floor.json"


def real_counts(settings: EvaluateSettings) -> dict[str, int]:
    """How many real images of each split the metrics (and the floor) need."""
    counts: dict[str, int] = {}
    for name in settings.metrics:
        spec = parse_metric(name)
        counts[spec.split] = max(counts.get(spec.split, 0), spec.num_generated)
    if settings.floor and "test" in counts:
        counts["train"] = max(counts.get("train", 0), counts["test"])
    return counts


def compute_real_stats(processed_dir: str | Path, cache_dir: str | Path, settings: EvaluateSettings,
                       protocol: ProtocolSettings, device: str = "auto") -> dict:
    """Fill the real-feature cache for this data version (a DVC output) and record the floor: the only
    function that writes into that cache."""
    version = data_version(processed_dir)
    cache = RealStatsCache(cache_dir, device=str(resolve_device(device)), batch_size=protocol.batch_size)
    real = {split: cache.features(lambda s=split: store.load_split(processed_dir, s)[0], data_version=version, split=split, count=n)
            for split, n in real_counts(settings).items()}
    result = {"data_version": version, "computed": cache.computed, "counts": {k: int(v.shape[0]) for k, v in real.items()}}
    if settings.floor and "train" in real and "test" in real:
        n = min(real["train"].shape[0], real["test"].shape[0])
        floor = fid_kid_from_features(real["train"][:n], real["test"][:n], kid_subset_size=protocol.kid_subset_size,
                                      kid_subsets=protocol.kid_subsets, seed=protocol.seed)
        result["floor"] = {**floor, "description": f"real train vs real test, {n} images each: what a perfect generator would score",
                           **{k: v for k, v in cache.protocol(cache.key(version, "test"), n).items() if k != "num_real"}}
    write_json_atomic(Path(cache_dir) / FLOOR, result)
    return result
