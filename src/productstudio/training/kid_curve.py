"""KID during training: the time-to-quality curve, cheap enough to measure every few hundred steps.

A few hundred generated images (fixed latents, categories in turn) against the real test features that
the ``real_stats`` stage cached for this data version. Small samples make KID noisy but, unlike FID,
not biased, so successive points of one run are comparable; the final numbers come from ``evaluate``.
The KID is the metric engine's (``metrics.engine``); the reference is every cached real test feature.

With ``selection`` (features of train images held out of training, ``train.select_best``) each point is also
measured against those, on the same generated features: that KID picks the generator to keep, so the test
set never takes part in a decision.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from productstudio.errors import MissingInput
from productstudio.metrics.engine import MetricOptions, calc_metric
from productstudio.metrics.features import extract_features
from productstudio.metrics.real_features import RealStatsCache

SPLIT = "test"
SUBSETS = 50


class TrainingKID:
    def __init__(self, real_stats_dir: str | Path, data_version: str, samples: int, seed: int, device, batch_size: int = 50):
        cache = RealStatsCache(real_stats_dir, device=str(device), batch_size=batch_size, progress=False)
        # Only read: the cache belongs to the real_stats stage (a DVC output).
        self.real = cache.largest(data_version, SPLIT)
        if self.real is None:
            raise MissingInput(
                f"{real_stats_dir}: no cached real {SPLIT} features for data version {data_version[:12]} "
                "(run 'productstudio real-stats' first)"
            )
        self.samples, self.seed, self.device, self.batch_size = samples, seed, device, batch_size
        self.name = f"kid{samples}_{SPLIT}"
        self.selection: np.ndarray | None = None  # features of the held-out train images, when a run selects by them
        self.selection_name = f"kid{samples}_heldout_train"

    def measure(self, generator) -> dict:
        from productstudio.models.sampling import generated_batches

        images = np.concatenate(list(generated_batches(generator, self.samples, self.seed, self.batch_size, self.device)))
        features = extract_features(images, batch_size=self.batch_size, device=self.device, progress=False)
        # Against all the cached real test features (more than the name's count: a steadier reference).
        kid = self._kid(features, self.real)
        result = {"kid": kid["value"], "kid_std_error": _error(kid), "num_generated": kid["num_generated"],
                  "num_real": kid["num_real"], "subset_size": kid["kid_subset_size"]}
        if self.selection is not None:
            held_out = self._kid(features, self.selection)
            result.update(selection_kid=held_out["value"], selection_kid_std_error=_error(held_out))
        return result

    def _kid(self, features: np.ndarray, real: np.ndarray) -> dict:
        opts = MetricOptions(generated=lambda n: features[:n], real=lambda split, n: (real, {}),
                             kid_subset_size=len(features), kid_subsets=SUBSETS, seed=self.seed)
        return calc_metric(self.name, opts)


def _error(kid: dict) -> float:
    return math.nan if kid["std_error"] is None else kid["std_error"]
