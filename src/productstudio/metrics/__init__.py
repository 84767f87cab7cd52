"""Evaluation metrics: Inception features, FID, KID, PSNR/SSIM, and one registry of named metrics.

    from productstudio.metrics import RealStatsCache, compute_metrics
    cache = RealStatsCache("data/metrics_cache")
    records = compute_metrics(["fid2k_test", "kid2k_test"], generated_uint8, {"test": test_images},
                              data_version=data_hash, cache=cache)

Every record carries its sample counts, reference split, feature network (+ sha256), resize method
and data version; see ``registry``.
"""

# Imported on first use (PEP 562), so that ``productstudio.metrics.names`` (read when params.yaml is
# validated) does not pull in torch.
_EXPORTS = {
    "extract_features": "features", "load_inception": "features", "network_info": "features", "to_uint8": "features",
    "FeatureStats": "fid", "fid_from_features": "fid", "frechet_distance": "fid",
    "psnr": "image_quality", "ssim": "image_quality",
    "KIDResult": "kid", "kernel_inception_distance": "kid",
    "KNOWN_METRICS": "names", "MetricSpec": "names", "parse_metric": "names",
    "RealStatsCache": "registry", "compute_metric": "registry", "compute_metrics": "registry",
    "fid_kid_between": "registry", "fid_kid_from_features": "registry", "summary": "registry",
}


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)


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
    "fid_from_features",
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
