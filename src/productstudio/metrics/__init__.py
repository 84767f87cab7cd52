"""Evaluation metrics: Inception features, FID, KID, PSNR/SSIM, and one registry of named metrics.

    from productstudio.metrics import RealStatsCache, compute_metrics
    cache = RealStatsCache("data/metrics_cache")
    records = compute_metrics(["fid2k_test", "kid2k_test"], generated_uint8, {"test": test_images},
                              data_version=data_hash, cache=cache)

Every record carries its sample counts, reference split, feature network (+ sha256), resize method
and data version; see ``registry``.
"""

from productstudio.metrics.features import extract_features, load_inception, network_info, to_uint8
from productstudio.metrics.fid import FeatureStats, frechet_distance
from productstudio.metrics.image_quality import psnr, ssim
from productstudio.metrics.kid import KIDResult, kernel_inception_distance
from productstudio.metrics.registry import (
    KNOWN_METRICS,
    MetricSpec,
    RealStatsCache,
    compute_metric,
    compute_metrics,
    fid_kid_between,
    fid_kid_from_features,
    parse_metric,
    summary,
)

__all__ = [
    "KNOWN_METRICS",
    "FeatureStats",
    "KIDResult",
    "MetricSpec",
    "RealStatsCache",
    "compute_metric",
    "compute_metrics",
    "extract_features",
    "fid_kid_between",
    "fid_kid_from_features",
    "frechet_distance",
    "kernel_inception_distance",
    "load_inception",
    "network_info",
    "parse_metric",
    "psnr",
    "ssim",
    "summary",
    "to_uint8",
]
