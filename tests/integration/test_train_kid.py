"""KID during training (the time-to-quality curve) from the real_stats stage's cache, on tiny real data."""

import csv
import math

import pytest

from productstudio.config import parse_params
from productstudio.data.preprocess import preprocess
from productstudio.data.raw import ingest
from productstudio.metrics.real_stats import compute_real_stats
from productstudio.training.loop import train
from productstudio.validation.validate import validate

TINY = {"latent_dim": 16, "g_width": 8, "d_width": 8, "batch_size": 16, "threads": 1, "log_every": 10, "seed": 3}


@pytest.fixture(scope="module")
def data(tmp_path_factory, fashion_dir):
    root = tmp_path_factory.mktemp("kid")
    params = parse_params({"ingest": {"fashion_mnist_dir": str(fashion_dir), "limit_per_category": 4},
                           "validate": {"max_leak_fraction": 0.05},
                           "evaluate": {"metrics": ["kid40_test"], "floor": False}})
    ingest(params.ingest, root / "raw")
    validate(root / "raw", root / "validation", params.validate)
    preprocess(root / "raw", root / "validation", root / "processed", params.preprocess)
    compute_real_stats(root / "processed", root / "stats", params.evaluate, params.protocol, device="cpu")
    return root


def test_kid_curve_is_written_every_kid_every_steps_and_at_the_end(data, tmp_path):
    settings = parse_params({"train": {**TINY, "max_steps": 25, "kid_every": 10, "kid_samples": 12}}).train
    train(settings, data / "processed", tmp_path / "out", tmp_path / "plots", track=False, real_stats_dir=data / "stats")
    with open(tmp_path / "plots/train_kid.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["step"] for r in rows] == ["10", "20", "25"]
    minutes = [float(r["train_minutes"]) for r in rows]
    assert minutes == sorted(minutes) and minutes[0] > 0
    # An untrained generator is far from real images: KID well above its own error bar.
    assert all(math.isfinite(float(r["kid"])) for r in rows)
    assert float(rows[0]["kid"]) > 2 * float(rows[0]["kid_std_error"]) > 0


def test_without_cached_features_training_goes_on_without_kid(data, tmp_path, capsys):
    settings = parse_params({"train": {**TINY, "max_steps": 10, "kid_every": 5}}).train
    train(settings, data / "processed", tmp_path / "out", tmp_path / "plots", track=False, real_stats_dir=tmp_path / "empty")
    assert "periodic KID off" in capsys.readouterr().out
    assert not (tmp_path / "plots/train_kid.csv").exists()
    assert (tmp_path / "out/generator/generator.safetensors").exists()
