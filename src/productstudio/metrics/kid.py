"""Kernel Inception Distance: the unbiased MMD^2 with the cubic polynomial kernel, over random subsets.

k(x, y) = (x . y / d + 1)^3. For one subset of m vectors from each side,

    MMD^2_u = sum_{i != j} k(x_i, x_j) / (m (m-1)) + sum_{i != j} k(y_i, y_j) / (m (m-1))
              - 2 sum_{i, j} k(x_i, y_j) / m^2

which is unbiased (its expectation is the population MMD^2, 0 for identical distributions, so a
single estimate can be slightly negative). The reported value is the mean over ``num_subsets`` subsets
(each drawn without replacement, independently of the others, from a seeded generator) and its
standard error ``std / sqrt(num_subsets)``. Subsets may overlap, so the standard error describes the
subset-sampling spread, not a fully independent replication.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class KIDResult:
    mean: float
    std_error: float  # nan when num_subsets == 1
    std: float
    subset_size: int
    num_subsets: int
    seed: int


def polynomial_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    d = x.shape[1]
    return (x @ y.T / d + 1.0) ** 3


def mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 between two equally sized sets with the KID kernel."""
    m = x.shape[0]
    if m < 2 or y.shape[0] != m:
        raise ValueError(f"need two sets of the same size >= 2; got {x.shape[0]} and {y.shape[0]}")
    k_xx = polynomial_kernel(x, x)
    k_yy = polynomial_kernel(y, y)
    k_xy = polynomial_kernel(x, y)
    within = (k_xx.sum() - np.trace(k_xx) + k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
    return float(within - 2.0 * k_xy.mean())


def kernel_inception_distance(
    features_a: np.ndarray,
    features_b: np.ndarray,
    subset_size: int = 1000,
    num_subsets: int = 100,
    seed: int = 0,
) -> KIDResult:
    """KID between two feature sets (n_a, d) and (n_b, d); subset_size is capped at the smaller n."""
    a = np.asarray(features_a, dtype=np.float64)
    b = np.asarray(features_b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"features must be (n, d) with the same d; got {a.shape} and {b.shape}")
    if num_subsets < 1:
        raise ValueError("num_subsets must be >= 1")
    m = min(subset_size, a.shape[0], b.shape[0])
    if m < 2:
        raise ValueError(f"KID needs at least 2 vectors on each side; got {a.shape[0]} and {b.shape[0]}")
    rng = np.random.default_rng(seed)
    values = np.empty(num_subsets, dtype=np.float64)
    for index in range(num_subsets):
        x = a[rng.choice(a.shape[0], m, replace=False)]
        y = b[rng.choice(b.shape[0], m, replace=False)]
        values[index] = mmd2_unbiased(x, y)
    std = float(values.std(ddof=1)) if num_subsets > 1 else math.nan
    return KIDResult(
        mean=float(values.mean()),
        std_error=std / math.sqrt(num_subsets) if num_subsets > 1 else math.nan,
        std=std,
        subset_size=m,
        num_subsets=num_subsets,
        seed=seed,
    )
