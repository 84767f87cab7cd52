"""One metric engine (after stylegan2-ada's ``metric_main``): ``@register_metric`` and ``calc_metric(name, opts)``.

A metric name says what is measured. Feature metrics are ``(fid|kid)<count>[k]_(train|test)``:
``fid10k_test`` is FID between 10,000 generated images and the first 10,000 images of the ``test`` split
(fewer when the split is smaller; the record says how many); ``kid2k_train`` is KID between 2,000
generated and the first 2,000 training images. Reference metrics compare images with their references
pair by pair: ``psnr`` and ``ssim`` (a VAE's reconstructions against the real images, int8 outputs
against fp32 ones; mask IoU next).

Every result is a record (a JSON-able dict): the value, the standard error where there is one (KID), the
sample counts, and the real side's protocol (feature network and its file's sha256, resize method, data
version, how the real images were selected). FID from few samples is strongly biased upwards
(Fashion-MNIST train vs test: about 12.3 at 2k, 2.5 at 10k): compare FIDs only at the same counts, and
read the floor from ``fid_kid_between`` on two real sets at those counts.

Callers describe where the data comes from (``MetricOptions``): the generated side's features (a
``GeneratedFeatures`` cache), the real side's (``RealFeatures``), or a pair of image sets; the engine
computes. ``MetricOptions.category`` narrows both sides to one category for per-category numbers.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import torch

from productstudio.metrics import features as feats
from productstudio.metrics import image_quality
from productstudio.metrics.fid import FeatureStats, fid_from_features, frechet_distance
from productstudio.metrics.kid import kernel_inception_distance
from productstudio.metric_names import REFERENCE_METRICS, MetricSpec, parse_metric
from productstudio.metrics.real_features import network_fields


@dataclass(frozen=True)
class MetricOptions:
    """Where a metric's data comes from, and the protocol settings it is computed with.

    - ``generated(n)``: features (n, d) of the first n generated images (feature metrics).
    - ``real(split, n)``: features of the first n real images of ``split`` and their protocol (a dict).
    - ``images``, ``references``, ``data_range``: the image pairs of a reference metric.
    - ``generated_labels(n)`` / ``real_labels(split, n)``: the categories of those images, in order;
      with ``category`` set, both sides keep that category only (see ``for_category``).
    """

    generated: Callable[[int], np.ndarray] | None = None
    real: Callable[[str, int], tuple[np.ndarray, dict]] | None = None
    images: object = None
    references: object = None
    data_range: float | None = None
    kid_subset_size: int = 1000
    kid_subsets: int = 50
    seed: int = 0
    generated_labels: Callable[[int], np.ndarray] | None = None
    real_labels: Callable[[str, int], np.ndarray] | None = None
    category: int | None = None

    def for_category(self, category: int) -> "MetricOptions":
        return dataclasses.replace(self, category=category)

    def generated_features(self, count: int) -> np.ndarray:
        if self.generated is None:
            raise ValueError("this metric needs generated features: MetricOptions(generated=...)")
        features = self.generated(count)
        if self.category is None:
            return features
        return features[self.generated_labels(len(features)) == self.category]

    def real_features(self, split: str, count: int) -> tuple[np.ndarray, dict]:
        if self.real is None:
            raise ValueError("this metric needs real features: MetricOptions(real=...)")
        features, protocol = self.real(split, count)
        if self.category is None:
            return features, protocol
        return features[self.real_labels(split, len(features)) == self.category], protocol


_METRICS: dict[str, Callable[[MetricSpec | str, MetricOptions], dict]] = {}


def register_metric(kind: str):
    """Register ``fn(spec, opts) -> record fields`` as the metric ``kind`` (fid, kid, psnr, ...)."""

    def register(fn):
        _METRICS[kind] = fn
        return fn

    return register


def _parse(name: str) -> tuple[str, MetricSpec | str]:
    if name in REFERENCE_METRICS:
        return name, name
    spec = parse_metric(name)
    return spec.kind, spec


def calc_metric(name: str, opts: MetricOptions) -> dict:
    """The record of the metric ``name`` computed from ``opts``: ``{"metric": name, "kind": ..., "value": ...}``."""
    kind, spec = _parse(name)
    return {"metric": name, "kind": kind, **_METRICS[kind](spec, opts)}


def calc_metrics(names: Iterable[str], opts: MetricOptions) -> list[dict]:
    return [calc_metric(name, opts) for name in names]


def _json_number(value: float) -> float | None:
    return None if value is None or math.isnan(value) else float(value)


# --------------------------------------------------------------------------------------------------
# Feature metrics: generated vs real.


def _sides(spec: MetricSpec, opts: MetricOptions) -> tuple[np.ndarray, np.ndarray, dict]:
    fake = opts.generated_features(spec.num_generated)
    real, protocol = opts.real_features(spec.split, spec.num_real_requested)
    return fake, real, {"num_generated": int(len(fake)), "num_real": int(len(real)), "reference_split": spec.split,
                        "protocol": protocol}


@register_metric("fid")
def fid(spec: MetricSpec, opts: MetricOptions) -> dict:
    fake, real, fields = _sides(spec, opts)
    # fid_from_features: exact, and a small SVD instead of 2048-d eigendecompositions below 2048 samples.
    return {"value": fid_from_features(fake, real), "std_error": None, **fields}


@register_metric("kid")
def kid(spec: MetricSpec, opts: MetricOptions) -> dict:
    fake, real, fields = _sides(spec, opts)
    result = kernel_inception_distance(fake, real, subset_size=opts.kid_subset_size, num_subsets=opts.kid_subsets,
                                       seed=opts.seed)
    # kid_subset_size is the size used: at most half the smaller set (see metrics.kid); one subset: no error.
    return {"value": result.mean, "std_error": _json_number(result.std_error), "kid_subset_size": result.subset_size,
            "kid_subset_size_requested": opts.kid_subset_size, "kid_subsets": result.num_subsets, "seed": opts.seed,
            **fields}


# --------------------------------------------------------------------------------------------------
# Reference metrics: images against their references, pair by pair.


def _per_image(values: torch.Tensor, data_range: float) -> dict:
    finite = values[torch.isfinite(values)]
    return {"value": float(values.mean()), "mean_finite": float(finite.mean()) if len(finite) else math.inf,
            "std": float(values.std()), "min": float(values.min()), "num_images": int(len(values)),
            "data_range": data_range}


@register_metric("psnr")
def psnr(name: str, opts: MetricOptions) -> dict:
    """Mean per-image PSNR in dB (inf for an identical pair; ``mean_finite`` leaves those out)."""
    return _per_image(image_quality.psnr(opts.images, opts.references, data_range=opts.data_range), opts.data_range)


@register_metric("ssim")
def ssim(name: str, opts: MetricOptions) -> dict:
    """Mean per-image SSIM (skimage's Gaussian-weighted convention, see ``image_quality``)."""
    return _per_image(image_quality.ssim(opts.images, opts.references, data_range=opts.data_range), opts.data_range)


# --------------------------------------------------------------------------------------------------
# Records as files: the flat numbers DVC tracks; the floor of two real sets.


def summary(records: Iterable[dict]) -> dict[str, float]:
    """Flat ``{name: value, name_std_error: ...}`` for a DVC metrics file (the records hold the rest)."""
    flat: dict[str, float] = {}
    for record in records:
        flat[record["metric"]] = record["value"]
        if record.get("std_error") is not None:
            flat[f"{record['metric']}_std_error"] = record["std_error"]
    return flat


def fid_kid_from_features(features_a: np.ndarray, features_b: np.ndarray, *, kid_subset_size: int = 1000,
                          kid_subsets: int = 100, seed: int = 0) -> dict:
    """FID and KID between two feature sets, e.g. real train vs real test: the floor.

    The FID here is the full-covariance one (``frechet_distance``), as the real_stats stage has always
    written it: the same quantity as the ``fid`` metric's, kept so that stage's output stays bit-identical.
    """
    result = kernel_inception_distance(features_a, features_b, subset_size=kid_subset_size, num_subsets=kid_subsets,
                                       seed=seed)
    return {
        "fid": frechet_distance(FeatureStats.from_features(features_a), FeatureStats.from_features(features_b)),
        "kid": result.mean,
        "kid_std_error": _json_number(result.std_error),
        "kid_subset_size": result.subset_size,
        "kid_subsets": result.num_subsets,
        "seed": seed,
        "num_a": int(features_a.shape[0]),
        "num_b": int(features_b.shape[0]),
    }


def fid_kid_between(images_a, images_b, *, batch_size: int = 32, device: str = "cpu", kid_subset_size: int = 1000,
                    kid_subsets: int = 100, seed: int = 0, progress: bool = True) -> dict:
    """FID and KID between two sets of uint8 images, e.g. Fashion-MNIST train vs test: the floor a
    perfect generator would reach at these sample counts."""
    features_a = feats.extract_features(images_a, batch_size=batch_size, device=device, progress=progress)
    features_b = feats.extract_features(images_b, batch_size=batch_size, device=device, progress=progress)
    result = fid_kid_from_features(features_a, features_b, kid_subset_size=kid_subset_size, kid_subsets=kid_subsets,
                                   seed=seed)
    return {**result, **network_fields()}
