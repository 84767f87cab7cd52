"""KID during training: the time-to-quality curve, cheap enough to measure every few hundred steps.

A few hundred generated images (fixed latents, categories in turn) against the real test features that
the ``real_stats`` stage cached for this data version. Small samples make KID noisy but, unlike FID,
not biased, so successive points of one run are comparable; the final numbers come from ``evaluate``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from productstudio.metrics.kid import kernel_inception_distance

SPLIT = "test"
SUBSETS = 50


class TrainingKID:
    def __init__(self, real_stats_dir: str | Path, data_version: str, samples: int, seed: int, device, batch_size: int = 50):
        from productstudio.metrics.engine import RealStatsCache

        cache = RealStatsCache(real_stats_dir, device=str(device), batch_size=batch_size, progress=False)
        # Only read: the cache belongs to the real_stats stage (a DVC output).
        self.real = cache.largest(data_version, SPLIT)
        if self.real is None:
            raise FileNotFoundError(
                f"{real_stats_dir}: no cached real {SPLIT} features for data version {data_version[:12]} "
                "(run 'productstudio real-stats' first)"
            )
        self.samples, self.seed, self.device, self.batch_size = samples, seed, device, batch_size
        self.name = f"kid{samples}_{SPLIT}"

    def measure(self, generator) -> dict:
        from productstudio.metrics.evaluate import generated_batches
        from productstudio.metrics.features import extract_features

        images = np.concatenate(list(generated_batches(generator, self.samples, self.seed, self.batch_size, self.device)))
        features = extract_features(images, batch_size=self.batch_size, device=self.device, progress=False)
        kid = kernel_inception_distance(features, self.real, subset_size=len(features), num_subsets=SUBSETS, seed=self.seed)
        return {"kid": kid.mean, "kid_std_error": kid.std_error, "num_generated": len(features),
                "num_real": len(self.real), "subset_size": kid.subset_size}
