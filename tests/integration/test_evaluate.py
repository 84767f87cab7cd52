"""The evaluate step on a tiny trained generator: named metrics with their protocol, per category,
domain-classifier metrics, the real-vs-real floor, the real-feature cache and MLflow logging."""

import json

import pytest

from productstudio.config import parse_params
from productstudio.data.fashion_mnist import CATEGORIES
from productstudio.data.preprocess import preprocess
from productstudio.data.raw import ingest
from productstudio.metrics.evaluate import evaluate
from productstudio.metrics.real_stats import compute_real_stats
from productstudio.training.classifier import train_classifier
from productstudio.training.loop import train
from productstudio.validation.validate import validate

SMALL = {"metrics": ["fid30_test", "kid30_test"], "classifier_epochs": 1}
PROTOCOL = {"kid_subset_size": 10, "kid_subsets": 5, "batch_size": 30}


@pytest.fixture(scope="module")
def trained(tmp_path_factory, fashion_dir):
    root = tmp_path_factory.mktemp("eval")
    params = parse_params({
        "ingest": {"fashion_mnist_dir": str(fashion_dir), "limit_per_category": 20},
        "validate": {"max_leak_fraction": 0.05},
        "train": {"max_steps": 20, "g_width": 8, "d_width": 8, "latent_dim": 16, "batch_size": 16, "threads": 2},
        "evaluate": SMALL,
        "protocol": PROTOCOL,
    })
    ingest(params.ingest, root / "raw")
    validate(root / "raw", root / "validation", params.validate)
    preprocess(root / "raw", root / "validation", root / "processed", params.preprocess)
    train(params.train, root / "processed", root / "train", root / "plots", track=False)
    train_classifier(root / "processed", root / "classifier", epochs=10, batch_size=32)
    return root, params


def test_real_stats_cache_and_floor(trained):
    root, params = trained
    first = compute_real_stats(root / "processed", root / "stats", params.evaluate, params.protocol)
    assert first["computed"] == 2 and first["counts"] == {"test": 30, "train": 30}
    floor = first["floor"]
    assert floor["num_a"] == floor["num_b"] == 30 and floor["fid"] > 0
    assert floor["feature_network"] and floor["resize_method"]
    again = compute_real_stats(root / "processed", root / "stats", params.evaluate, params.protocol)
    assert again["computed"] == 0  # cached per data version: the Inception network did not run


def test_evaluate_reports_metrics_with_protocol(trained, tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    root, params = trained
    compute_real_stats(root / "processed", root / "stats", params.evaluate, params.protocol)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.chdir(tmp_path)
    # The model as trained elsewhere: its manifest names a training run this MLflow store does not hold.
    import shutil

    shutil.copytree(root / "train/generator", tmp_path / "model/generator")
    manifest = json.loads((root / "train/manifest.json").read_text())
    (tmp_path / "model/manifest.json").write_text(json.dumps({**manifest, "mlflow_run_id": "0" * 32}))
    report = evaluate(tmp_path / "model/generator", root / "processed", root / "classifier", root / "stats", tmp_path / "out", params.evaluate,
                      params.protocol)

    fid, kid = report["metrics"]
    assert fid["metric"] == "fid30_test" and fid["num_generated"] == 30 and fid["num_real"] == 30
    assert fid["reference_split"] == "test" and fid["data_version"] == report["data_version"]
    assert fid["feature_network"] and fid["feature_network_sha256"] and fid["resize_method"]
    assert fid["value"] > report["floor"]["fid"]  # 20 steps of training: far from real data
    assert kid["std_error"] is not None and kid["kid_subset_size"] == 10
    # 30 generated images = 3 per category; categories with fewer than 2 of the first 30 test images are skipped
    per_category = report["per_category"]["fid30_test"]
    assert 5 <= len(per_category) <= 10 and set(per_category) <= set(CATEGORIES)
    assert all(v["num_generated"] == 3 and v["num_real"] >= 2 and v["fid"] > 0 for v in per_category.values())
    domain = report["domain"]
    assert 0.0 <= domain["classifier_accuracy_generated"] <= 1.0
    assert domain["classifier_accuracy_real_test"] > 0.5  # a real classifier, not chance
    assert 1.0 <= domain["classifier_score_generated"] <= 10.0
    # Per category, beside the real test images of that category: recognition and within-category variety.
    rows = domain["per_category"]
    assert set(rows) == set(CATEGORIES) and all(r["num_generated"] == 3 for r in rows.values())
    assert all(0 <= r["accuracy_generated"] <= 1 and r["pixel_std_real_test"] > 0.05 for r in rows.values())
    assert domain["diversity_ratio_min"] == min(r["diversity_ratio"] for r in rows.values())

    flat = json.loads((tmp_path / "out/metrics.json").read_text())
    assert flat["fid30_test"] == fid["value"] and "kid30_test_std_error" in flat and "floor_fid" in flat
    assert {"category_accuracy_shortfall_max", "diversity_ratio_mean", "diversity_ratio_min"} <= set(flat)
    assert report["reconstruction"] is None and "psnr_test_recon" not in flat  # a GAN has no encoder
    # The training run is not in this store: the metrics went to a new run, and the file says which.
    saved = json.loads((tmp_path / "out/evaluation.json").read_text())
    assert saved["mlflow_run_id"] == report["mlflow_run_id"] != "0" * 32
    assert saved["training_mlflow_run_id"] == "0" * 32
    run = MlflowClient().get_run(report["mlflow_run_id"])
    assert run.data.metrics["eval.fid30_test"] == pytest.approx(fid["value"])


def test_same_seeds_give_the_same_images(trained):
    import numpy as np

    from productstudio.metrics.evaluate import generated_batches
    from productstudio.models.io import load_generator

    root, _ = trained
    generator, _ = load_generator(root / "train/generator")
    first = np.concatenate(list(generated_batches(generator, 25, seed=7, batch_size=10, device="cpu")))
    second = np.concatenate(list(generated_batches(generator, 25, seed=7, batch_size=25, device="cpu")))
    other = np.concatenate(list(generated_batches(generator, 25, seed=8, batch_size=25, device="cpu")))
    assert first.shape == (25, 1, 28, 28) and first.dtype == np.uint8
    np.testing.assert_array_equal(first, second)  # batch size does not change what a model is judged on
    assert (first != other).any()


def test_vae_reconstructions_get_psnr_and_ssim(trained, tmp_path):
    import numpy as np

    from productstudio.data import store
    from productstudio.metrics.evaluate import reconstruction_metrics
    from productstudio.metrics.image_quality import psnr
    from productstudio.models.io import load_encoder, load_generator

    root, params = trained
    settings = params.train.model_copy(update={"model": "cvae", "max_steps": 20, "lr_g": 3e-3})
    train(settings, root / "processed", tmp_path / "cvae", tmp_path / "plots", track=False)
    encoder = load_encoder(tmp_path / "cvae/generator")
    assert encoder is not None and load_encoder(root / "train/generator") is None  # VAE: saved beside the decoder
    small = params.evaluate.model_copy(update={"metrics": ["fid10_test"]})  # few Inception passes: this is about PSNR/SSIM
    report = evaluate(tmp_path / "cvae/generator", root / "processed", root / "classifier", root / "stats", tmp_path / "out",
                      small, params.protocol, track=False)

    recon = report["reconstruction"]
    assert recon["protocol"]["num_images"] == 10 and recon["protocol"]["reference_split"] == "test"
    assert recon["protocol"]["data_range"] == 255 and recon["protocol"]["latent"] == "posterior mean"
    flat = json.loads((tmp_path / "out/metrics.json").read_text())
    assert flat["psnr_test_recon"] == recon["psnr_test_recon"] and flat["ssim_test_recon"] == recon["ssim_test_recon"]
    # Well above a trivial reconstruction (a blank mid-grey image: ~8 dB; 20 steps of training give ~13).
    real, labels = store.load_split(root / "processed", "test")
    blank = float(psnr(real[:10], np.full_like(real[:10], 128), data_range=255).mean())
    assert np.isfinite(recon["psnr_test_recon"]) and recon["psnr_test_recon"] > blank + 3
    assert 0.0 < recon["ssim_test_recon"] <= 1.0
    from productstudio.steps.evaluate import format as format_evaluation

    assert "psnr_test_recon" in format_evaluation(report)
    # Deterministic (posterior mean, no sampling): the same numbers again.
    generator, _ = load_generator(tmp_path / "cvae/generator")
    assert reconstruction_metrics(generator, encoder, real[:10], labels[:10], batch_size=4, device="cpu") == recon


def test_evaluate_and_quantize_judge_the_same_images_and_share_their_features(trained, tmp_path):
    """quantize's fp32 side is evaluate's generated set, bit for bit: the same FID from separate caches,
    and with one cache the second of them runs Inception on nothing."""
    from productstudio.metrics import features as feats
    from productstudio.quantization.quantize import quantize

    root, params = trained
    compute_real_stats(root / "processed", root / "stats", params.evaluate, params.protocol)
    settings = parse_params({"quantize": {"metrics": ["fid30_test"], "psnr_samples": 30, "calibration_samples": 32,
                                          "timing_rounds": 1}}).quantize
    shared, alone = tmp_path / "features", tmp_path / "features-alone"
    before = feats.counters["images"]
    quantized = quantize(root / "train/generator", tmp_path / "int8", settings, processed_dir=root / "processed",
                         cache_dir=root / "stats", seed=params.protocol.seed, batch_size=params.protocol.batch_size,
                         features_dir=shared)
    assert feats.counters["images"] - before == 60  # fp32 and int8; the real side is the real_stats cache's
    small = params.evaluate.model_copy(update={"metrics": ["fid30_test"], "per_category": False})
    on_its_own = evaluate(root / "train/generator", root / "processed", root / "classifier", root / "stats",
                          tmp_path / "out-alone", small, params.protocol, device="cpu", track=False,
                          features_dir=alone)
    assert on_its_own["metrics"][0]["value"] == quantized["quality"]["metrics"][0]["fp32"]
    before = feats.counters["images"]
    reused = evaluate(root / "train/generator", root / "processed", root / "classifier", root / "stats", tmp_path / "out",
                      small, params.protocol, device="cpu", track=False, features_dir=shared)
    assert feats.counters["images"] == before
    assert reused["metrics"] == on_its_own["metrics"]
    assert not any((tmp_path / "features" / "real").glob("*")), "the real_stats cache held every real count"
