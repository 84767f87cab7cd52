"""The evaluate step: FID/KID (overall and per category) with their protocol, domain-classifier metrics,
PSNR/SSIM of a VAE's reconstructions of test images, and the real-vs-real floor, written as DVC metrics
and logged to the training run in MLflow."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from productstudio.artifacts import read_manifest, write_json_atomic
from productstudio.config import EvaluateSettings, section_dict
from productstudio.data import store
from productstudio.metrics import features as feats
from productstudio.metrics import image_quality
from productstudio.metrics.fid import FeatureStats, fid_from_features, frechet_distance
from productstudio.metrics.kid import kernel_inception_distance
from productstudio.metrics.engine import RealStatsCache, fid_kid_from_features, parse_metric, summary
from productstudio.models.io import load_encoder, load_generator, resolve_device
from productstudio.models.classifier import load_classifier
from productstudio.data.store import data_version

FLOOR = "floor.json"


def generated_batches(generator, count: int, seed: int, batch_size: int, device) -> Iterator[np.ndarray]:
    """uint8 images from fixed latents, categories in turn (0, 1, ..., C-1, 0, ...): the same seeds for
    every model, so two models are compared on identical inputs."""
    config = generator.config
    rng = torch.Generator().manual_seed(seed)
    with torch.inference_mode():
        for start in range(0, count, batch_size):
            n = min(batch_size, count - start)
            z = torch.randn(n, config.latent_dim, generator=rng).to(device)
            y = (torch.arange(start, start + n) % config.num_classes).to(device)
            yield to_uint8_images(generator(z, y))


def generated_labels(count: int, num_classes: int) -> np.ndarray:
    return np.arange(count) % num_classes


def real_counts(settings: EvaluateSettings) -> dict[str, int]:
    """How many real images of each split the metrics (and the floor) need."""
    counts: dict[str, int] = {}
    for name in settings.metrics:
        spec = parse_metric(name)
        counts[spec.split] = max(counts.get(spec.split, 0), spec.num_generated)
    if settings.floor and "test" in counts:
        counts["train"] = max(counts.get("train", 0), counts["test"])
    return counts


def compute_real_stats(processed_dir: str | Path, cache_dir: str | Path, settings: EvaluateSettings, device: str = "auto") -> dict:
    """Fill the real-feature cache for this data version (a DVC output) and record the floor."""
    version = data_version(processed_dir)
    cache = RealStatsCache(cache_dir, device=str(resolve_device(device)), batch_size=settings.batch_size)
    real = {split: cache.features(lambda s=split: store.load_split(processed_dir, s)[0], data_version=version, split=split, count=n)
            for split, n in real_counts(settings).items()}
    result = {"data_version": version, "computed": cache.computed, "counts": {k: int(v.shape[0]) for k, v in real.items()}}
    if settings.floor and "train" in real and "test" in real:
        n = min(real["train"].shape[0], real["test"].shape[0])
        floor = fid_kid_from_features(real["train"][:n], real["test"][:n], kid_subset_size=settings.kid_subset_size,
                                      kid_subsets=settings.kid_subsets, seed=settings.seed)
        result["floor"] = {**floor, "description": f"real train vs real test, {n} images each: what a perfect generator would score",
                           **{k: v for k, v in cache.protocol(cache.key(version, "test"), n).items() if k != "num_real"}}
    write_json_atomic(Path(cache_dir) / FLOOR, result)
    return result


def _per_category(gen: np.ndarray, gen_labels: np.ndarray, real: np.ndarray, real_labels: np.ndarray, categories, settings) -> dict:
    out = {}
    for index, name in enumerate(categories):
        a, b = gen[gen_labels == index], real[real_labels == index]
        if len(a) < 2 or len(b) < 2:
            continue
        kid = kernel_inception_distance(a, b, subset_size=settings.kid_subset_size, num_subsets=settings.kid_subsets, seed=settings.seed)
        out[name] = {"fid": fid_from_features(a, b), "kid": kid.mean,
                     "kid_std_error": None if math.isnan(kid.std_error) else kid.std_error, "kid_subset_size": kid.subset_size,
                     "num_generated": int(len(a)), "num_real": int(len(b))}
    return out


@torch.no_grad()
def _classifier_metrics(classifier_dir: Path, images: np.ndarray, labels: np.ndarray, real_images: np.ndarray, real_labels: np.ndarray) -> dict:
    """Accuracy of the pipeline's own classifier on generated images (does a generated 'Sneaker' look like
    one?), a classifier score (exp E[KL(p(y|x) || p(y))], the Inception Score's recipe on a domain
    classifier: the FID Inception network here has no logits), and a Frechet distance in its features."""
    model, info = load_classifier(classifier_dir)

    def run(x: np.ndarray):
        feats_, probs = [], []
        for start in range(0, len(x), 500):
            batch = torch.from_numpy(x[start : start + 500]).float().div(127.5).sub(1.0)
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
    return {
        "classifier_accuracy_generated": float((gen_p.argmax(1) == labels).mean()),
        "classifier_accuracy_real_test": float((real_p.argmax(1) == real_labels).mean()),
        "classifier_score_generated": score(gen_p),
        "classifier_score_real_test": score(real_p),
        "classifier_frechet_distance": frechet_distance(FeatureStats.from_features(gen_f), FeatureStats.from_features(real_f)),
        "classifier_protocol": {"network": "productstudio ProductClassifier", "feature_dim": int(gen_f.shape[1]),
                                "num_generated": int(len(images)), "num_real": int(len(real_images)), "reference_split": "test",
                                "classifier_test_accuracy": info.get("test_accuracy")},
    }


def to_uint8_images(images: torch.Tensor) -> np.ndarray:
    """[-1, 1] model output -> uint8 images, rounded as every generated image is."""
    return ((images + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).cpu().numpy()


@torch.inference_mode()
def reconstruction_metrics(generator, encoder, images: np.ndarray, labels: np.ndarray, batch_size: int, device) -> dict:
    """PSNR and SSIM of a VAE's reconstructions of real images (the one place with a reference image).

    Deterministic: each image is decoded from its posterior mean (no sampled noise). Compared as uint8,
    the form every generated image takes, so data_range is 255 (skimage's convention for uint8).
    """
    recon = []
    for start in range(0, len(images), batch_size):
        x = torch.from_numpy(images[start : start + batch_size]).to(device).float().div(127.5).sub(1.0)
        y = torch.from_numpy(labels[start : start + batch_size]).to(device).long()
        mu, _ = encoder(x, y)
        recon.append(to_uint8_images(generator(mu, y)))
    recon_images = np.concatenate(recon)
    psnr = image_quality.psnr(images, recon_images, data_range=255)
    ssim = image_quality.ssim(images, recon_images, data_range=255)
    return {
        "psnr_test_recon": float(psnr.mean()),
        "ssim_test_recon": float(ssim.mean()),
        "protocol": {
            "reference_split": "test", "num_images": int(len(images)), "real_selection": "first num_images images in split order",
            "latent": "posterior mean", "images": "uint8", "data_range": 255, "average": "mean of per-image values",
            "ssim_window": f"gaussian {image_quality.SSIM_WIN_SIZE}x{image_quality.SSIM_WIN_SIZE}, sigma {image_quality.SSIM_SIGMA}",
            "ssim_k1": image_quality.SSIM_K1, "ssim_k2": image_quality.SSIM_K2, "ssim_border": "interior only (as skimage)",
            "psnr_std": float(psnr.std()), "ssim_std": float(ssim.std()),
        },
    }


def evaluate(
    generator_dir: str | Path,
    processed_dir: str | Path,
    classifier_dir: str | Path,
    cache_dir: str | Path,
    out_dir: str | Path,
    settings: EvaluateSettings,
    device: str = "auto",
    track: bool = True,
) -> dict:
    dev = resolve_device(device)
    generator, info = load_generator(generator_dir, dev)
    categories = info["categories"]
    version = data_version(processed_dir)
    cache = RealStatsCache(cache_dir, device=str(dev), batch_size=settings.batch_size)
    largest = max(parse_metric(name).num_generated for name in settings.metrics)
    images = np.concatenate(list(generated_batches(generator, largest, settings.seed, settings.batch_size, dev)))
    labels = generated_labels(largest, len(categories))
    gen = feats.extract_features(images, batch_size=settings.batch_size, device=dev)

    records, per_category = [], {}
    for name in settings.metrics:
        spec = parse_metric(name)
        real_images, real_labels = store.load_split(processed_dir, spec.split, mmap=True)
        real = cache.features(lambda: real_images, data_version=version, split=spec.split, count=spec.num_generated)
        fake = gen[: spec.num_generated]
        protocol = cache.protocol(cache.key(version, spec.split), len(real))
        record = {"metric": name, "reference_split": spec.split, "num_generated": int(len(fake)), "latent_seed": settings.seed, **protocol}
        if spec.kind == "fid":  # each metric computes only itself: a 2048-d FID costs seconds
            record.update(value=fid_from_features(fake, real), std_error=None)
        else:
            kid = kernel_inception_distance(fake, real, subset_size=settings.kid_subset_size,
                                            num_subsets=settings.kid_subsets, seed=settings.seed)
            std_error = None if math.isnan(kid.std_error) else kid.std_error  # one subset: no error estimate
            # kid_subset_size is the size used: at most half the smaller set (see metrics.kid).
            record.update(value=kid.mean, std_error=std_error, kid_subset_size=kid.subset_size,
                          kid_subset_size_requested=settings.kid_subset_size, kid_subsets=kid.num_subsets)
        records.append(record)
        if settings.per_category and spec.kind == "fid":
            per_category[name] = _per_category(fake, labels[: len(fake)], real, real_labels[: len(real)], categories, settings)

    test_images, test_labels = store.load_split(processed_dir, "test")
    domain = _classifier_metrics(Path(classifier_dir), images, labels, test_images, test_labels)
    encoder = load_encoder(generator_dir, dev)
    # As many reconstructions as generated images for the metrics (the first of the test split).
    reconstruction = None if encoder is None else reconstruction_metrics(
        generator, encoder, test_images[:largest], test_labels[:largest], settings.batch_size, dev)
    floor_path = Path(cache_dir) / FLOOR
    floor = read_json(floor_path).get("floor") if floor_path.exists() else None

    flat = {**summary(records), **{k: v for k, v in domain.items() if not isinstance(v, dict)}}
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
        "params": section_dict(settings),
        "mlflow_run_id": trained.get("mlflow_run_id"), "training_mlflow_run_id": trained.get("mlflow_run_id"),
    }
    if track:
        _log_to_mlflow(report, flat, out)  # sets mlflow_run_id to the run it logged to, then writes the file
    else:
        write_json_atomic(out / "evaluation.json", report)
    return report


def read_json(path: Path) -> dict:
    import json

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
