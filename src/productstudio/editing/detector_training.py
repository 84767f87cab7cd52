"""Training the learned defect detector on the catalogue's own photos with synthetic dust, specks and scratches.

    report = train_detector(DetectorSettings(), out_dir)

- Data: ``photos`` photos of ``source/train`` held in memory. Each step draws ``batch_size`` regions of
  ``region`` px, damages each with a defect of ``defects`` (the evaluation table's own functions, with their
  exact masks) or leaves it clean (``clean_share``), and trains on a random ``patch`` px part of it: the defect
  density is the evaluation crops', the cost a quarter of theirs.
- Loss: binary cross-entropy per pixel, defects weighted ``pos_weight`` (recall first: a missed speck stays
  in the photo, a false alarm only refills a few pixels of fabric); Adam, cosine-decayed over ``max_steps``
  (the stopping rule). Draws are seeded by (seed, step) and checkpoints resume bit for bit (``patch_training``).
- The curve: every ``curve_every`` steps, recall and false-positive area at threshold 0.5 on ``curve_crops``
  validation crops (256 px, each damaged once): ``curve.csv``.
- The mask rule: at the end, every pair of a threshold (``thresholds``) and a smallest blob kept (``min_blobs``)
  is scored on the validation crops (recall, false-positive area, and the PSNR of the filled crops to the clean
  ones); of the pairs whose recall reaches ``target_recall``, the one whose fill comes closest to the clean crops
  is stored with the weights (the lowest threshold, keeping every blob, if none does). False alarms are what the
  fill pays for most: refilling a real detail erases it.

Recall is counted over the defect's mask pixels; "visible recall" over those the defect changed by more than
``VISIBLE_LEVELS`` in some channel (a dark speck on a black sweater is part of the mask, but there is nothing
to see or to remove). Both are reported.

Writes ``out_dir/detector.safetensors`` + ``detector.json`` (the model, its threshold and what made it),
``loss.csv``, ``curve.csv``, ``thresholds.csv`` and ``checkpoints/``.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch

from productstudio.config import DetectorSettings
from productstudio.editing.defects import DEFECTS
from productstudio.editing.patch_training import load_photos, start_or_resume, train_steps, validation_crops
from productstudio.errors import MissingInput, ParamsError
from productstudio.models.defect_detector import (DefectDetector, defect_probability, drop_small_blobs, features,
                                                  fill_mask, save_detector)
from productstudio.models.restorer import psnr

CURVE_CROP = 256
STEP_SEED = 8_000_000  # validation crops draw their defects from other streams than the evaluation table's
VISIBLE_LEVELS = 12  # a defect pixel is visible when it differs from the clean photo by more than this


def draw_batch(photos: list[np.ndarray], settings: DetectorSettings, step: int) -> tuple[np.ndarray, np.ndarray]:
    """Step ``step``'s (damaged patches (N, patch, patch, 3) uint8, masks (N, patch, patch) bool): a pure
    function of the step."""
    rng = np.random.default_rng([settings.seed, step])
    region, size = settings.region, settings.patch
    images, masks = [], []
    for _ in range(settings.batch_size):
        photo = photos[int(rng.integers(len(photos)))]
        top, left = int(rng.integers(photo.shape[0] - region + 1)), int(rng.integers(photo.shape[1] - region + 1))
        clean = np.ascontiguousarray(photo[top:top + region, left:left + region])
        if rng.random() < 0.5:
            clean = np.ascontiguousarray(clean[:, ::-1])
        if rng.random() < settings.clean_share:
            damaged, mask = clean, np.zeros((region, region), bool)
        else:
            damaged, mask, _ = DEFECTS[settings.defects[int(rng.integers(len(settings.defects)))]].apply(clean, rng)
        top, left = int(rng.integers(region - size + 1)), int(rng.integers(region - size + 1))
        images.append(damaged[top:top + size, left:left + size])
        masks.append(mask[top:top + size, left:left + size])
    return np.stack(images), np.stack(masks)


def visible(damaged: np.ndarray, clean: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The mask's pixels that the defect changed by more than ``VISIBLE_LEVELS`` in some channel."""
    return mask & (np.abs(damaged.astype(np.int16) - clean.astype(np.int16)).max(axis=2) > VISIBLE_LEVELS)


def mask_scores(found: list[np.ndarray], masks: list[np.ndarray], seen: list[np.ndarray]) -> dict:
    """Recall over the masks' pixels, recall over their visible pixels, and the false-positive area (the
    share of all pixels marked that are not defects)."""
    total = sum(m.size for m in masks)
    hits = sum(int((f & m).sum()) for f, m in zip(found, masks))
    seen_hits = sum(int((f & s).sum()) for f, s in zip(found, seen))
    return {"recall": hits / max(1, sum(int(m.sum()) for m in masks)),
            "visible_recall": seen_hits / max(1, sum(int(s.sum()) for s in seen)),
            "false_positive_area": sum(int((f & ~m).sum()) for f, m in zip(found, masks)) / total}


class CurveSet:
    """Validation crops, each damaged once per defect, and the same crops clean."""

    def __init__(self, root: Path, settings: DetectorSettings):
        self.clean = validation_crops(root, CURVE_CROP, settings.curve_crops)
        self.damaged, self.references, self.masks, self.seen = [], [], [], []
        for defect in settings.defects:
            for i, clean in enumerate(self.clean):
                damaged, mask, _ = DEFECTS[defect].apply(clean, np.random.default_rng([settings.seed, STEP_SEED, i]))
                self.damaged.append(damaged)
                self.references.append(clean)
                self.masks.append(mask)
                self.seen.append(visible(damaged, clean, mask))

    def probabilities(self, model: DefectDetector) -> tuple[list[np.ndarray], list[np.ndarray]]:
        return ([defect_probability(model, d) for d in self.damaged],
                [defect_probability(model, c) for c in self.clean])

    def scores(self, probabilities, clean_probabilities, threshold: float, min_blob: int = 1) -> dict:
        found = [drop_small_blobs(p >= threshold, min_blob) for p in probabilities]
        clean_area = sum(int(drop_small_blobs(p >= threshold, min_blob).sum()) for p in clean_probabilities) / sum(
            p.size for p in clean_probabilities)
        return {**mask_scores(found, self.masks, self.seen), "clean_area": clean_area}

    def fill_psnr(self, probabilities, threshold: float, min_blob: int, radius: int) -> float:
        """Mean PSNR to the clean crops after filling the mask by Navier-Stokes inpainting (what the fill target
        measures: misses stay in the photo, false alarms erase real detail)."""
        return float(np.mean([psnr(fill_mask(d, drop_small_blobs(p >= threshold, min_blob), radius), c)
                              for d, p, c in zip(self.damaged, probabilities, self.references)]))


def identity(settings: DetectorSettings) -> dict:
    """What a checkpoint must match to be resumed (what shapes the weights; not the curve or the threshold)."""
    return settings.model_dump(exclude={"curve_every", "curve_crops", "checkpoint_every", "thresholds",
                                        "target_recall", "grow", "min_blobs"})


def choose_rule(table: list[dict], target: float) -> dict:
    """Of the rows (threshold, min_blob, scores) whose recall (of all the mask's pixels: the issue's measure, the
    stricter one) reaches ``target``, the one whose fill comes closest to the clean crops (highest ``fill_psnr``;
    ties: the least false-positive area); the most sensitive row if none does."""
    reaching = [row for row in table if row["recall"] >= target]
    if reaching:
        return max(reaching, key=lambda r: (r["fill_psnr"], -r["false_positive_area"]))
    return min(table, key=lambda r: (r["threshold"], r["min_blob"]))


def train_detector(settings: DetectorSettings, out_dir: str | Path, progress: bool = True, fill_radius: int = 3) -> dict:
    """Train (or resume) and store the weights with the mask rule chosen on validation crops; ``fill_radius`` is
    the inpainting radius the rule is judged with (``edit.dust_fill_radius``, what 'edit restore' fills with)."""
    unmasked = [d for d in settings.defects if d not in ("dust", "watermark")]
    if unmasked:
        raise ParamsError(f"edit.detector.defects: {', '.join(unmasked)} have no mask to learn; "
                          "choose from dust, watermark")
    if settings.patch > settings.region:
        raise ParamsError(f"edit.detector.patch ({settings.patch}) is larger than its region ({settings.region})")
    root, out_dir = Path(settings.source), Path(out_dir)
    photos = [p for p in load_photos(root, "train", settings.photos) if min(p.shape[:2]) >= settings.region]
    if not photos:
        raise MissingInput(f"{root}/train: no photo of at least {settings.region} px to train the detector on")
    curve_set = CurveSet(root, settings)
    torch.manual_seed(settings.seed)
    model = DefectDetector(settings.width)
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.lr)
    curve_columns = ["step", "seconds", "recall", "visible_recall", "false_positive_area", "clean_area"]
    step, seconds = start_or_resume(out_dir, identity(settings), model, optimizer,
                                    {"loss.csv": ["step", "loss"], "curve.csv": curve_columns})
    resumed_from = step
    pos_weight = torch.tensor(settings.pos_weight)

    def loss_of(batch):
        images, masks = batch
        target = torch.from_numpy(masks[:, None].astype(np.float32))
        return torch.nn.functional.binary_cross_entropy_with_logits(model(features(images)), target,
                                                                    pos_weight=pos_weight)

    def measure():
        scores = curve_set.scores(*curve_set.probabilities(model), 0.5)
        return ([f"{scores[c]:.5f}" for c in curve_columns[2:]],
                {"recall": f"{scores['recall']:.3f}", "fp": f"{scores['false_positive_area']:.4f}"})
    seconds = train_steps(model, optimizer, settings, out_dir, step, seconds,
                          lambda s: draw_batch(photos, settings, s), loss_of, measure, "detector", progress)
    probabilities = curve_set.probabilities(model)
    table = [{"threshold": t, "min_blob": b, **curve_set.scores(*probabilities, t, b),
              "fill_psnr": curve_set.fill_psnr(probabilities[0], t, b, fill_radius)}
             for t in sorted(settings.thresholds) for b in sorted(settings.min_blobs)]
    with (out_dir / "thresholds.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(table[0]))
        writer.writeheader()
        writer.writerows({k: round(v, 5) for k, v in row.items()} for row in table)
    chosen = choose_rule(table, settings.target_recall)
    info = {"kind": "defect-detector", "width": settings.width, "threshold": chosen["threshold"],
            "grow": settings.grow, "min_blob": chosen["min_blob"], "steps": settings.max_steps,
            "train_seconds": round(seconds, 1), "defects": settings.defects,
            "source": str(root), "photos": len(photos)}
    save_detector(model, out_dir, info)
    return {"out": str(out_dir), "steps": settings.max_steps, "resumed_from": resumed_from, "train_seconds": round(seconds, 1),
            "threshold": chosen["threshold"], "validation": chosen, "thresholds": table,
            "curve": list(csv.DictReader((out_dir / "curve.csv").open()))}
