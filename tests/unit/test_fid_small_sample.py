import numpy as np

from productstudio.metrics.fid import FeatureStats, fid_from_features, frechet_distance


def test_low_rank_fid_equals_the_eigendecomposition_route():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((60, 300)) @ rng.standard_normal((300, 300)) * 0.1
    b = rng.standard_normal((45, 300)) * 0.7 + 0.3
    expected = frechet_distance(FeatureStats.from_features(a), FeatureStats.from_features(b))
    assert abs(fid_from_features(a, b) - expected) <= 1e-8 * abs(expected)
    assert abs(fid_from_features(a, a)) < 1e-8
