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


def _kid_rows(plots):
    with open(plots / "train_kid.csv") as handle:
        return list(csv.DictReader(handle))


def test_select_best_keeps_the_generator_with_the_lowest_held_out_kid_across_a_resume(data, tmp_path):
    import json

    from safetensors.torch import load_file

    train_settings = {**TINY, "kid_every": 5, "kid_samples": 12, "select_best": 8, "checkpoint_every": 5}
    out, plots = tmp_path / "out", tmp_path / "plots"
    first = train(parse_params({"train": {**train_settings, "max_steps": 15}}).train, data / "processed", out, plots,
                  track=False, real_stats_dir=data / "stats")
    # Extended by a second call (a constant learning rate makes max_steps resumable): the best so far is remembered.
    manifest = train(parse_params({"train": {**train_settings, "max_steps": 30}}).train, data / "processed", out, plots,
                     track=False, real_stats_dir=data / "stats")
    rows = _kid_rows(plots)
    assert [r["step"] for r in rows] == ["5", "10", "15", "20", "25", "30"]
    held_out = {int(r["step"]): float(r["kid_heldout_train"]) for r in rows}
    best_step = min(held_out, key=held_out.get)
    summary = manifest["summary"]
    assert summary["selected_step"] == best_step and summary["held_out_train_images"] == 8
    assert first["summary"]["selected_step"] == min((s for s in held_out if s <= 15), key=held_out.get)
    # The held-out KID is its own measurement, not the test one copied.
    assert any(float(r["kid_heldout_train"]) != float(r["kid"]) for r in rows)
    assert json.loads((out / "generator/config.json").read_text())["step"] == best_step
    saved = load_file(out / "generator/generator.safetensors")
    kept = load_file(out / "best-generator/generator.safetensors")
    assert saved.keys() == kept.keys() and all((saved[k] == kept[k]).all() for k in saved)
    if best_step != 30:  # an earlier generator is shipped: its own sample grid says so
        assert manifest["sample_grid"] == f"samples/selected-step-{best_step:08d}.png"


def test_select_best_without_kid_points_is_refused_in_one_line(data, tmp_path):
    from productstudio.errors import ParamsError

    with pytest.raises(ValueError, match="select_best needs KID points"):
        parse_params({"train": {**TINY, "select_best": 8, "kid_every": 0}})
    settings = parse_params({"train": {**TINY, "max_steps": 5, "select_best": 8}}).train
    with pytest.raises(ParamsError, match="needs the KID points"):
        train(settings, data / "processed", tmp_path / "out", tmp_path / "plots", track=False, real_stats_dir=None)
    too_many = parse_params({"train": {**TINY, "max_steps": 5, "select_best": 10_000}}).train
    with pytest.raises(ParamsError, match="smaller than the train split"):
        train(too_many, data / "processed", tmp_path / "out", tmp_path / "plots", track=False, real_stats_dir=data / "stats")
