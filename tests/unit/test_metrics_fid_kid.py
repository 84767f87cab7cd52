"""FID arithmetic, stats files, KID unbiasedness and metric names (no feature network: fast)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from productstudio.data.fashion_mnist import load_split
from productstudio.metrics.fid import FeatureStats, fid_from_features, frechet_distance, sidecar_path
from productstudio.metrics.kid import kernel_inception_distance, polynomial_kernel
from productstudio.metric_names import KNOWN_METRICS, parse_metric


@pytest.fixture(scope="module")
def fashion_test(fashion_dir):
    images, labels = load_split(fashion_dir, "test")
    return images.reshape(len(images), -1).astype(np.float64) / 255.0, labels


def test_fid_matches_closed_form_for_diagonal_gaussians():
    # For commuting (diagonal) covariances FID = |dmu|^2 + sum (sqrt(a) - sqrt(b))^2.
    rng = np.random.default_rng(0)
    var_a, var_b = rng.uniform(0.1, 3, 64), rng.uniform(0.1, 3, 64)
    mu_a, mu_b = rng.normal(size=64), rng.normal(size=64)
    expected = np.sum((mu_a - mu_b) ** 2) + np.sum((np.sqrt(var_a) - np.sqrt(var_b)) ** 2)
    got = frechet_distance(FeatureStats(mu_a, np.diag(var_a), 10), FeatureStats(mu_b, np.diag(var_b), 10))
    assert got == pytest.approx(expected, rel=1e-12)


def test_fid_on_pixels_is_zero_for_itself_and_symmetric(fashion_test):
    pixels, labels = fashion_test
    a = FeatureStats.from_features(pixels[labels == 7][:300])  # sneakers
    b = FeatureStats.from_features(pixels[labels == 9][:300])  # ankle boots
    assert abs(frechet_distance(a, a)) < 1e-9
    assert frechet_distance(a, b) == pytest.approx(frechet_distance(b, a), rel=1e-9)
    assert frechet_distance(a, b) > 1.0
    # The eigendecomposition route agrees with the exact value from the samples (fid_from_features: the
    # nuclear norm of Xa Xb^T, 300 samples < 784 dims). Not to 1e-12: eigenvalues below eps * |M| are
    # unresolvable by any eigensolver and sqrt amplifies them.
    exact = fid_from_features(pixels[labels == 7][:300], pixels[labels == 9][:300])
    assert frechet_distance(a, b) == pytest.approx(exact, rel=1e-7)


def test_stats_roundtrip_npz_without_pickle_and_sidecar(tmp_path, fashion_test):
    pixels, _ = fashion_test
    stats = FeatureStats.from_features(pixels[:50])
    path = stats.save(tmp_path / "real_stats.npz", protocol={"feature_network": "pixels", "split": "test"})
    loaded, protocol = FeatureStats.load(path)
    np.testing.assert_array_equal(loaded.mu, stats.mu)
    np.testing.assert_array_equal(loaded.sigma, stats.sigma)
    assert loaded.n == 50 and protocol == {"feature_network": "pixels", "split": "test"}
    side = json.loads(sidecar_path(path).read_text())
    assert side["n"] == 50 and side["dims"] == 784
    with np.load(path, allow_pickle=False) as data:
        assert sorted(data.files) == ["mu", "n", "sigma"]
        assert all(data[name].dtype != object for name in data.files)


def test_stats_reject_bad_shapes():
    with pytest.raises(ValueError, match="at least 2"):
        FeatureStats.from_features(np.zeros((1, 8)))
    with pytest.raises(ValueError, match="differ"):
        frechet_distance(FeatureStats(np.zeros(3), np.eye(3), 5), FeatureStats(np.zeros(4), np.eye(4), 5))


def test_kid_is_unbiased_on_small_subsets(fashion_test):
    """With subsets of 10 the biased (diagonal-including) estimate is far above zero; ours is not."""
    pixels, _ = fashion_test
    order = np.random.default_rng(0).permutation(len(pixels))
    a, b = pixels[order[:1000]], pixels[order[1000:2000]]
    result = kernel_inception_distance(a, b, subset_size=10, num_subsets=3000, seed=0)
    assert abs(result.mean) < 4 * result.std_error
    rng = np.random.default_rng(0)
    biased = []
    for _ in range(200):
        x, y = a[rng.choice(1000, 10, replace=False)], b[rng.choice(1000, 10, replace=False)]
        biased.append(polynomial_kernel(x, x).mean() + polynomial_kernel(y, y).mean() - 2 * polynomial_kernel(x, y).mean())
    assert np.mean(biased) > 10 * result.std_error


def test_kid_near_zero_for_halves_and_large_for_different_categories(fashion_test):
    pixels, labels = fashion_test
    order = np.random.default_rng(1).permutation(len(pixels))
    same = kernel_inception_distance(pixels[order[:600]], pixels[order[600:1200]], subset_size=200, num_subsets=20, seed=0)
    different = kernel_inception_distance(
        pixels[labels == 7][:600], pixels[labels == 9][:600], subset_size=200, num_subsets=20, seed=0
    )
    assert different.mean > 0.1 and different.mean > 20 * different.std_error
    assert abs(same.mean) < 0.01 * different.mean
    assert same.subset_size == 200 and same.num_subsets == 20
    # Seeded: the same call gives the same number; another seed another one.
    def small(seed):
        return kernel_inception_distance(pixels[:100], pixels[100:200], subset_size=20, num_subsets=5, seed=seed).mean

    assert small(0) == small(0) != small(1)
    assert kernel_inception_distance(pixels[:50], pixels[50:100], subset_size=1000, num_subsets=2, seed=0).subset_size == 25


def test_kid_std_error_is_real_when_subsets_are_as_large_as_the_sets():
    """1k vs 1k with the default subset size of 1000: every subset used to be the whole set (std error
    4e-17). Subsets are now half the set, and the std error is an error bar for the reported value."""
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((1000, 64)), rng.standard_normal((1000, 64))
    same = kernel_inception_distance(a, b, subset_size=1000, num_subsets=20, seed=0)
    assert same.subset_size == 500
    assert same.std_error > 0.5 * same.std > 0  # at half the set, the std error is about the subsets' spread
    assert abs(same.mean) < 3 * same.std_error  # same distribution: zero within its error bar
    shifted = kernel_inception_distance(a, b + 0.3, subset_size=1000, num_subsets=20, seed=0)
    assert shifted.mean > 10 * shifted.std_error


def test_kid_std_error_matches_the_spread_over_fresh_samples():
    """Calibration: over fresh draws of both sets, the reported values spread about as the reported
    standard error says (conservative, up to ~1.7x, when the distributions are equal)."""
    rng = np.random.default_rng(1)
    for shift, low, high in ((0.2, 0.7, 1.4), (0.0, 0.9, 2.5)):
        means, errors = [], []
        for draw in range(100):
            a, b = rng.standard_normal((200, 16)), rng.standard_normal((200, 16)) + shift
            result = kernel_inception_distance(a, b, subset_size=1000, num_subsets=20, seed=draw)
            means.append(result.mean)
            errors.append(result.std_error)
        ratio = np.mean(errors) / np.std(means)
        assert low < ratio < high, (shift, ratio)


def test_metric_names_say_count_and_split():
    spec = parse_metric("fid10k_test")
    assert (spec.kind, spec.num_generated, spec.split) == ("fid", 10_000, "test")
    assert parse_metric("kid2k_train").num_generated == 2000
    assert parse_metric("kid500_test").num_generated == 500
    for name in KNOWN_METRICS:
        parse_metric(name)
    for bad in ("fid10k", "fid10k_val", "is50k_test", "fid0_test", "fid10K_test"):
        with pytest.raises(ValueError, match="metric|samples"):
            parse_metric(bad)
