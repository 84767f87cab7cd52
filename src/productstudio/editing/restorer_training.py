"""Training the learned restorer on the catalogue's own photos with the evaluation table's synthetic defects.

    report = train_restorer(RestorerSettings(), out_dir)

- Data: ``photos`` photos of ``source/train`` (never validation or test) held in memory; each step draws
  ``batch_size`` random ``patch`` px crops and damages each with a defect of ``defects`` (the same functions as
  the evaluation table, ``editing.defects``; uniformly, or ``oversample``'s defects more often) or leaves it
  clean (``clean_share``).
- Loss (``loss``): mean squared error to the clean patch (``mse``, the issue's L2) or minus the mean per-patch
  PSNR (``psnr``, see ``restoration_loss``); Adam, the learning rate cosine-decayed to zero over ``max_steps``,
  which is the stopping rule: the same data, params and code give the same weights.
- Every step's draws come from a generator seeded by (seed, step), so a run resumed from a checkpoint
  (``checkpoint_every``; tensors only, loaded weights-only) continues exactly as an uninterrupted one.
- The curve: every ``curve_every`` steps, PSNR per defect on ``curve_crops`` validation crops (256 px, the
  table's size) and on the clean crops, with the seconds trained so far: ``curve.csv``, the gain against
  training time that the README plots.

Writes ``out_dir/restorer.safetensors`` + ``restorer.json`` (the model and what made it), ``loss.csv``,
``curve.csv`` and ``checkpoints/``.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch

from productstudio.config import RestorerSettings
from productstudio.editing.defects import DEFECTS
from productstudio.editing.patch_training import (append_row, load_photos, start_or_resume, train_steps,
                                                     validation_crops)
from productstudio.errors import MissingInput, ParamsError
from productstudio.models.restorer import Restorer, psnr, restore, save_restorer

CURVE_CROP = 256
STEP_SEED = 7_000_000  # curve crops draw their defects from other streams than the evaluation table's


def draw_batch(photos: list[np.ndarray], settings: RestorerSettings, step: int) -> tuple[np.ndarray, np.ndarray]:
    """Step ``step``'s (damaged, clean) patches, (N, patch, patch, 3) uint8 each: a pure function of the step."""
    rng = np.random.default_rng([settings.seed, step])
    size = settings.patch
    pool = [d for d in settings.defects for _ in range(settings.oversample.get(d, 1))]
    damaged, clean = [], []
    for _ in range(settings.batch_size):
        photo = photos[int(rng.integers(len(photos)))]
        top = 2 * int(rng.integers((photo.shape[0] - size) // 2 + 1))  # even offsets: the same pixel phase
        left = 2 * int(rng.integers((photo.shape[1] - size) // 2 + 1))
        patch = np.ascontiguousarray(photo[top:top + size, left:left + size])
        if rng.random() < 0.5:
            patch = np.ascontiguousarray(patch[:, ::-1])
        if rng.random() < settings.clean_share:
            damaged.append(patch)
        else:
            defect = pool[int(rng.integers(len(pool)))]
            damaged.append(DEFECTS[defect].apply(patch, rng)[0])
        clean.append(patch)
    return np.stack(damaged), np.stack(clean)


def to_tensor(batch: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(batch).permute(0, 3, 1, 2).float().div_(255)


def restoration_loss(restored: torch.Tensor, clean: torch.Tensor, kind: str) -> torch.Tensor:
    """``mse``: the squared error over the batch. ``psnr``: the mean over patches of log10 of each patch's
    squared error (floored at 50 dB), i.e. minus the mean PSNR that the evaluation table reports."""
    if kind == "mse":
        return torch.nn.functional.mse_loss(restored, clean)
    per_patch = (restored - clean).pow(2).flatten(1).mean(dim=1)
    return torch.log10(per_patch + 1e-5).mean()


class CurveSet:
    """Validation crops with every defect drawn once: PSNR of the model's output per defect, and on clean crops."""

    def __init__(self, root: Path, settings: RestorerSettings):
        self.clean = validation_crops(root, CURVE_CROP, settings.curve_crops)
        self.damaged = {}
        for defect in settings.defects:
            self.damaged[defect] = [DEFECTS[defect].apply(c, np.random.default_rng([settings.seed, STEP_SEED, i]))[0]
                                    for i, c in enumerate(self.clean)]

    def floor(self) -> dict:
        """PSNR of the damaged crops themselves (the untrained model's score)."""
        return {d: float(np.mean([psnr(x, c) for x, c in zip(xs, self.clean)])) for d, xs in self.damaged.items()}

    def measure(self, model: Restorer) -> dict:
        scores = {d: float(np.mean([psnr(restore(model, x), c) for x, c in zip(xs, self.clean)]))
                  for d, xs in self.damaged.items()}
        scores["clean"] = float(np.mean([psnr(restore(model, c), c) for c in self.clean]))
        return scores


def identity(settings: RestorerSettings) -> dict:
    """What a checkpoint must match to be resumed (everything that shapes the weights; not the curve)."""
    return settings.model_dump(exclude={"curve_every", "curve_crops", "checkpoint_every"})


def train_restorer(settings: RestorerSettings, out_dir: str | Path, progress: bool = True) -> dict:
    unknown = [d for d in settings.defects if d not in DEFECTS or DEFECTS[d].family not in ("noise", "jpeg")]
    if unknown:
        raise ParamsError(f"edit.restorer.defects: {', '.join(unknown)} are not noise or JPEG defects "
                          f"({', '.join(n for n, d in DEFECTS.items() if d.family in ('noise', 'jpeg'))})")
    odd = [f"{d}: {n}" for d, n in settings.oversample.items() if d not in settings.defects or n < 1]
    if odd:
        raise ParamsError(f"edit.restorer.oversample: {', '.join(odd)}: name only defects of edit.restorer.defects, "
                          "each with a count of at least 1 (or set it to {})")
    root, out_dir = Path(settings.source), Path(out_dir)
    photos = [p for p in load_photos(root, "train", settings.photos) if min(p.shape[:2]) >= settings.patch]
    if not photos:
        raise MissingInput(f"{root}/train: no photo of at least {settings.patch} px to train the restorer on")
    curve_set = CurveSet(root, settings)
    torch.manual_seed(settings.seed)
    model = Restorer(settings.width, settings.depth)
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.lr)
    curve_columns = ["step", "seconds", *settings.defects, "clean"]
    step, seconds = start_or_resume(out_dir, identity(settings), model, optimizer,
                                    {"loss.csv": ["step", "loss"], "curve.csv": curve_columns})
    resumed_from = step
    if step == 0:
        append_row(out_dir / "curve.csv", [0, 0.0, *(f"{v:.3f}" for v in curve_set.floor().values()), "100.000"])

    def measure():
        scores = curve_set.measure(model)
        return ([f"{scores[c]:.3f}" for c in curve_columns[2:]],
                {d: f"{scores[d]:.2f}" for d in settings.defects[:2]})
    seconds = train_steps(model, optimizer, settings, out_dir, step, seconds,
                          lambda s: draw_batch(photos, settings, s),
                          lambda batch: restoration_loss(model(to_tensor(batch[0])), to_tensor(batch[1]), settings.loss),
                          measure, "restorer", progress)
    info = {"kind": "restorer", "width": settings.width, "depth": settings.depth, "steps": settings.max_steps,
            "train_seconds": round(seconds, 1), "defects": settings.defects, "source": str(root),
            "photos": len(photos)}
    save_restorer(model, out_dir, info)
    curve = list(csv.DictReader((out_dir / "curve.csv").open()))
    return {"out": str(out_dir), "steps": settings.max_steps, "resumed_from": resumed_from, "train_seconds": round(seconds, 1),
            "curve": curve, "final": {k: float(v) for k, v in curve[-1].items() if k not in ("step", "seconds")},
            "floor": {k: float(v) for k, v in curve[0].items() if k not in ("step", "seconds", "clean")}}
