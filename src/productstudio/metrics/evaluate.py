"""The evaluate step: FID/KID (overall and per category) with their protocol, domain-classifier metrics,
PSNR/SSIM of a VAE's reconstructions of test images, and the real-vs-real floor, written as DVC metrics
and logged to the training run in MLflow. Every FID/KID/PSNR/SSIM comes from ``metrics.engine``.

The real side is read from the real_stats stage's cache and never written there (``RealFeatures``); the
generated side's features are kept in the generated-features cache, where quantize and promote find them.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from productstudio import paths
from productstudio.artifacts import read_manifest, sha256_file, write_json_atomic
from productstudio.config import EvaluateSettings, ProtocolSettings, section_dict
from productstudio.data import store
from productstudio.imaging import resolve_device, to_float, to_uint8_array
from productstudio.metrics import image_quality
from productstudio.metrics.engine import MetricOptions, calc_metric, summary
from productstudio.metrics.fid import FeatureStats, frechet_distance
from productstudio.metrics.generated_features import GeneratedFeatures, array_batches
from productstudio.metric_names import metric_name, parse_metric
from productstudio.metrics.real_features import RealFeatures
from productstudio.metrics.real_stats import FLOOR
from productstudio.models.classifier import load_classifier
from productstudio.models.io import WEIGHTS, load_encoder, load_generator
from productstudio.models.sampling import generated_batches, generated_labels

def _per_category(spec, opts: MetricOptions, categories) -> dict:
    """FID and KID of each category's images against the real ones of that category (at least 2 each)."""
    kid_name = metric_name("kid", spec.num_generated, spec.split)
    out = {}
    for index, name in enumerate(categories):
        narrowed = opts.for_category(index)
        sizes = (len(narrowed.generated_features(spec.num_generated)),
                 len(narrowed.real_features(spec.split, spec.num_real_requested)[0]))
        if min(sizes) < 2:
            continue
        fid, kid = calc_metric(spec.name, narrowed), calc_metric(kid_name, narrowed)
        out[name] = {"fid": fid["value"], "kid": kid["value"], "kid_std_error": kid["std_error"],
                     "kid_subset_size": kid["kid_subset_size"], "num_generated": fid["num_generated"],
                     "num_real": fid["num_real"]}
    return out


def evaluation_record(record: dict, latent_seed: int) -> dict:
    """An engine record as evaluation.json lists it: the metric, its counts and seed, the real side's
    protocol, the value (and KID's subset settings)."""
    out = {"metric": record["metric"], "reference_split": record["reference_split"],
           "num_generated": record["num_generated"], "latent_seed": latent_seed, **record["protocol"],
           "value": record["value"], "std_error": record["std_error"]}
    if record["kind"] == "kid":
        out.update({key: record[key] for key in ("kid_subset_size", "kid_subset_size_requested", "kid_subsets")})
    return out


def pixel_diversity(images: np.ndarray) -> float:
    """Within-set variety: the standard deviation over the images of each pixel (0..1 scale), averaged over
    pixels. A generator that draws one typical item per category scores low whatever its sharpness."""
    return float((images.astype(np.float64) / 255.0).std(axis=0).mean())


def per_category_recognition(images, labels, predicted, real_images, real_labels, real_predicted, names) -> dict:
    """Per category: how often the classifier names generated and real test images as that category, and the
    within-category pixel variety of both (diversity_ratio: generated / real; 1 is real's variety)."""
    out = {}
    for index, name in enumerate(names):
        gen, real = labels == index, real_labels == index
        if not gen.any() or not real.any():
            continue
        gen_std = pixel_diversity(images[gen]) if gen.sum() > 1 else None
        real_std = pixel_diversity(real_images[real]) if real.sum() > 1 else None
        out[name] = {
            "accuracy_generated": float((predicted[gen] == index).mean()),
            "accuracy_real_test": float((real_predicted[real] == index).mean()),
            "pixel_std_generated": gen_std, "pixel_std_real_test": real_std,
            "diversity_ratio": gen_std / real_std if gen_std is not None and real_std else None,
            "num_generated": int(gen.sum()), "num_real": int(real.sum()),
        }
    return out


@torch.no_grad()
def _classifier_metrics(classifier_dir: Path, images: np.ndarray, labels: np.ndarray, real_images: np.ndarray,
                        real_labels: np.ndarray, names: list[str]) -> dict:
    """Accuracy of the pipeline's own classifier on generated images (does a generated 'Sneaker' look like
    one?), overall and per category beside real test images, with the within-category variety of both; a
    classifier score (exp E[KL(p(y|x) || p(y))], the Inception Score's recipe on a domain classifier: the
    FID Inception network here has no logits), and a Frechet distance in its features."""
    model, info = load_classifier(classifier_dir)

    def run(x: np.ndarray):
        feats_, probs = [], []
        for start in range(0, len(x), 500):
            batch = to_float(x[start : start + 500])
            f = model.features(batch)
            feats_.append(f.double().numpy())
            probs.append(torch.softmax(model.head(f), dim=1).double().numpy())
        return np.concatenate(feats_), np.concatenate(probs)

    def score(p: np.ndarray) -> float:
        marginal = p.mean(axis=0, keepdims=True)
        kl = (p * (np.log(p + 1e-12) - np.log(marginal + 1e-12))).sum(axis=1)
        return float(np.exp(kl.mean()))

    gen_f, gen_p = run(images)
    real_f, real_p = run(real_images)
    categories = per_category_recognition(images, labels, gen_p.argmax(1), real_images, real_labels, real_p.argmax(1), names)
    shortfalls = [c["accuracy_real_test"] - c["accuracy_generated"] for c in categories.values()]
    ratios = [c["diversity_ratio"] for c in categories.values() if c["diversity_ratio"] is not None]
    return {
        "classifier_accuracy_generated": float((gen_p.argmax(1) == labels).mean()),
        "classifier_accuracy_real_test": float((real_p.argmax(1) == real_labels).mean()),
        # The worst category: how far its generated images fall behind its real ones (negative: all above).
        "category_accuracy_shortfall_max": float(max(shortfalls)) if shortfalls else None,
        "diversity_ratio_mean": float(np.mean(ratios)) if ratios else None,
        "diversity_ratio_min": float(min(ratios)) if ratios else None,
        "per_category": categories,
        "classifier_score_generated": score(gen_p),
        "classifier_score_real_test": score(real_p),
        "classifier_frechet_distance": frechet_distance(FeatureStats.from_features(gen_f), FeatureStats.from_features(real_f)),
        "classifier_protocol": {"network": "productstudio ProductClassifier", "feature_dim": int(gen_f.shape[1]),
                                "num_generated": int(len(images)), "num_real": int(len(real_images)), "reference_split": "test",
                                "classifier_test_accuracy": info.get("test_accuracy")},
    }


@torch.inference_mode()
def reconstruction_metrics(generator, encoder, images: np.ndarray, labels: np.ndarray, batch_size: int, device) -> dict:
    """PSNR and SSIM of a VAE's reconstructions of real images (the one place with a reference image).

    Deterministic: each image is decoded from its posterior mean (no sampled noise). Compared as uint8,
    the form every generated image takes, so data_range is 255 (skimage's convention for uint8).
    """
    recon = []
    for start in range(0, len(images), batch_size):
        x = to_float(torch.from_numpy(images[start : start + batch_size]).to(device))
        y = torch.from_numpy(labels[start : start + batch_size]).to(device).long()
        mu, _ = encoder(x, y)
        recon.append(to_uint8_array(generator(mu, y)))
    pairs = MetricOptions(images=images, references=np.concatenate(recon), data_range=255)
    psnr, ssim = calc_metric("psnr", pairs), calc_metric("ssim", pairs)
    return {
        "psnr_test_recon": psnr["value"],
        "ssim_test_recon": ssim["value"],
        "protocol": {
            "reference_split": "test", "num_images": int(len(images)), "real_selection": "first num_images images in split order",
            "latent": "posterior mean", "images": "uint8", "data_range": 255, "average": "mean of per-image values",
            "ssim_window": f"gaussian {image_quality.SSIM_WIN_SIZE}x{image_quality.SSIM_WIN_SIZE}, sigma {image_quality.SSIM_SIGMA}",
            "ssim_k1": image_quality.SSIM_K1, "ssim_k2": image_quality.SSIM_K2, "ssim_border": "interior only (as skimage)",
            "psnr_std": psnr["std"], "ssim_std": ssim["std"],
        },
    }


def evaluate(
    generator_dir: str | Path,
    processed_dir: str | Path,
    classifier_dir: str | Path,
    cache_dir: str | Path,
    out_dir: str | Path,
    settings: EvaluateSettings,
    protocol: ProtocolSettings,
    device: str = "auto",
    track: bool = True,
    features_dir: str | Path = paths.GENERATED_FEATURES,
) -> dict:
    """Evaluate the generator in ``generator_dir`` (see the module doc). ``cache_dir``: the real_stats
    output, only read; ``features_dir``: the generated-features cache (real counts that ``cache_dir``
    lacks are kept in its ``real/`` folder)."""
    dev = resolve_device(device)
    generator, info = load_generator(generator_dir, dev)
    categories = info["categories"]
    real = RealFeatures(processed_dir, cache_dir, Path(features_dir) / "real", device=str(dev), batch_size=protocol.batch_size)
    version = real.data_version
    largest = max(parse_metric(name).num_generated for name in settings.metrics)
    images = np.concatenate(list(generated_batches(generator, largest, protocol.seed, protocol.batch_size, dev)))
    labels = generated_labels(largest, len(categories))
    generated = GeneratedFeatures(features_dir, device=dev, batch_size=protocol.batch_size)
    key = generated.key(sha256_file(Path(generator_dir) / WEIGHTS), protocol.seed)
    gen = generated.features(key, largest, array_batches(images, protocol.batch_size))
    opts = MetricOptions(generated=lambda n: gen[:n], real=real.features, kid_subset_size=protocol.kid_subset_size,
                         kid_subsets=protocol.kid_subsets, seed=protocol.seed,
                         generated_labels=lambda n: labels[:n], real_labels=real.labels)

    records, per_category = [], {}
    for name in settings.metrics:
        records.append(evaluation_record(calc_metric(name, opts), protocol.seed))
        spec = parse_metric(name)
        if settings.per_category and spec.kind == "fid":
            per_category[name] = _per_category(spec, opts, categories)

    test_images, test_labels = store.load_split(processed_dir, "test")
    domain = _classifier_metrics(Path(classifier_dir), images, labels, test_images, test_labels, categories)
    encoder = load_encoder(generator_dir, dev)
    # As many reconstructions as generated images for the metrics (the first of the test split).
    reconstruction = None if encoder is None else reconstruction_metrics(
        generator, encoder, test_images[:largest], test_labels[:largest], protocol.batch_size, dev)
    floor_path = Path(cache_dir) / FLOOR
    floor = read_json(floor_path).get("floor") if floor_path.exists() else None

    flat = {**summary(records), **{k: v for k, v in domain.items() if v is not None and not isinstance(v, dict)}}
    if reconstruction:
        flat.update({k: v for k, v in reconstruction.items() if k != "protocol"})
    if floor:
        flat.update(floor_fid=floor["fid"], floor_kid=floor["kid"])
    out = Path(out_dir)
    write_json_atomic(out / "metrics.json", flat)
    trained = read_manifest(Path(generator_dir).parent) if (Path(generator_dir).parent / "manifest.json").exists() else {}
    report = {
        "model": info.get("kind"), "generator": str(generator_dir), "data_version": version, "metrics": records,
        "per_category": per_category, "domain": domain, "reconstruction": reconstruction, "floor": floor,
        "params": {**section_dict(settings), **section_dict(protocol)},
        "mlflow_run_id": trained.get("mlflow_run_id"), "training_mlflow_run_id": trained.get("mlflow_run_id"),
    }
    if track:
        _log_to_mlflow(report, flat, out)  # sets mlflow_run_id to the run it logged to, then writes the file
    else:
        write_json_atomic(out / "evaluation.json", report)
    return report


def read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text())


def _log_to_mlflow(report: dict, flat: dict, out: Path) -> None:
    from productstudio import tracking

    import mlflow

    run_id = report.get("mlflow_run_id")
    try:
        run = tracking.start_run("evaluate", run_id=run_id) if run_id else tracking.start_run("evaluate")
    except mlflow.exceptions.MlflowException:
        run = tracking.start_run("evaluate")  # the training run lives in another store
    with run:
        # The run is known only now (a new one when the training run is not in this store): write the
        # report after, so evaluation.json names the run that holds its metrics.
        report["mlflow_run_id"] = run.info.run_id
        write_json_atomic(out / "evaluation.json", report)
        mlflow.log_metrics({f"eval.{k}": float(v) for k, v in flat.items() if v is not None})
        mlflow.log_artifact(str(out / "evaluation.json"), "evaluation")
