"""What the learned editors' training loops share: photos in memory, the schedule, checkpoints and resuming.

Both the restorer (``restorer_training``) and the defect detector (``detector_training``) train on random
patches of the train photos for a fixed step budget, with every step's draws seeded by (seed, step); so a run
resumed from its last checkpoint continues exactly as an uninterrupted one, provided the checkpoint was made
with the same settings (``identity.json``), and the logs are cut back to the checkpoint's step.
"""

from __future__ import annotations

import csv
import json
import math
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from productstudio.artifacts import write_atomic, write_json_atomic


def load_photos(root: Path, split: str, count: int) -> list[np.ndarray]:
    """``count`` photos spread evenly over the sorted files of ``root/split``; unreadable files are passed over."""
    from productstudio.data.images import BadImage, open_image, to_mode, upright

    paths = sorted(p for p in (root / split).rglob("*") if p.is_file())
    photos = []
    for index in np.linspace(0, len(paths) - 1, num=min(len(paths), count)).round().astype(int) if paths else []:
        try:
            with open_image(paths[index], 40_000_000) as image:
                photos.append(np.asarray(to_mode(upright(image), "RGB")))
        except BadImage:
            continue
    return photos


def validation_crops(root: Path, size: int, count: int) -> list[np.ndarray]:
    """``count`` centre crops of ``size`` px from ``root/validation`` (photos smaller than that are passed over):
    what a training curve is measured on."""
    from productstudio.data.images import centre_crop
    from productstudio.errors import MissingInput

    crops = [centre_crop(p, size) for p in load_photos(root, "validation", count * 2)]
    crops = [c for c in crops if c is not None][:count]
    if not crops:
        raise MissingInput(f"{root}/validation: no photo of at least {size} px to draw the training curve on")
    return crops


def cosine_lr(base: float, step: int, max_steps: int) -> float:
    """The learning rate at ``step``: cosine-decayed from ``base`` to zero over ``max_steps``."""
    return base * 0.5 * (1 + math.cos(math.pi * min(step, max_steps) / max_steps))


def save_checkpoint(directory: Path, step: int, seconds: float, model, optimizer) -> None:
    """Tensors and numbers only (loaded weights-only); the two newest are kept."""
    state = {"step": step, "seconds": seconds, "model": model.state_dict(), "optimizer": optimizer.state_dict()}
    write_atomic(directory / f"step-{step:08d}.pt", lambda handle: torch.save(state, handle))
    for old in sorted(directory.glob("step-*.pt"))[:-2]:
        old.unlink()


def start_or_resume(out_dir: Path, identity: dict, model, optimizer, logs: dict[str, list[str]]) -> tuple[int, float]:
    """Load the newest checkpoint of ``out_dir/checkpoints`` if it was made with these settings (``identity``);
    otherwise start afresh, removing another run's checkpoints and logs. Each CSV log of ``logs`` (file name ->
    columns) gets its header, or loses the rows past the resumed step. Returns (step, seconds trained)."""
    from productstudio.models.checkpoints import load_checkpoint

    checkpoints = out_dir / "checkpoints"
    checkpoints.mkdir(parents=True, exist_ok=True)
    identity_path = checkpoints / "identity.json"
    found = sorted(checkpoints.glob("step-*.pt"))
    step, seconds = 0, 0.0
    if found and identity_path.is_file() and json.loads(identity_path.read_text()) == identity:
        state = load_checkpoint(found[-1])
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        step, seconds = int(state["step"]), float(state["seconds"])
    else:  # a fresh start: nothing of another run's logs or checkpoints stays
        for path in [*found, *(out_dir / name for name in logs)]:
            path.unlink(missing_ok=True)
        write_json_atomic(identity_path, identity)
    for name, columns in logs.items():
        path = out_dir / name
        if not path.exists():
            path.write_text(",".join(columns) + "\n")
        else:  # a resume: rows past the checkpoint are redone (rows are written with "\n" endings, as here)
            rows = path.read_text().splitlines()
            path.write_text("\n".join([rows[0], *(r for r in rows[1:] if int(r.split(",")[0]) <= step)]) + "\n")
    return step, seconds


def append_row(path: Path, values: list) -> None:
    """One row at the end of a CSV log, with "\n" endings (as ``start_or_resume`` rewrites them)."""
    with path.open("a", newline="") as handle:
        csv.writer(handle, lineterminator="\n").writerow(values)


def train_steps(model, optimizer, settings, out_dir: Path, step: int, seconds: float, draw: Callable,
                loss_of: Callable, measure: Callable, desc: str, progress: bool = True) -> float:
    """Train from ``step`` to ``settings.max_steps``: ``draw(step)`` gives the step's batch (a pure function of
    the step), ``loss_of(batch)`` its loss; Adam at the cosine learning rate. Each step's loss goes to loss.csv;
    every ``curve_every`` steps ``measure()`` gives the curve row's values and the progress bar's postfix
    (curve.csv); every ``checkpoint_every`` steps a checkpoint. Only the optimisation is timed (not the draws
    or the curve). Returns the seconds trained, ``seconds`` included."""
    from tqdm import tqdm

    bar = tqdm(total=settings.max_steps, initial=step, desc=desc, unit="step", disable=not progress)
    model.train()
    while step < settings.max_steps:
        batch = draw(step)
        started = time.perf_counter()
        for group in optimizer.param_groups:
            group["lr"] = cosine_lr(settings.lr, step, settings.max_steps)
        loss = loss_of(batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        seconds += time.perf_counter() - started
        step += 1
        bar.update(1)
        with (out_dir / "loss.csv").open("a") as handle:
            handle.write(f"{step},{loss.item():.6f}\n")
        if step % settings.curve_every == 0 or step == settings.max_steps:
            values, postfix = measure()
            model.train()
            append_row(out_dir / "curve.csv", [step, f"{seconds:.1f}", *values])
            bar.set_postfix(postfix)
        if step % settings.checkpoint_every == 0 or step == settings.max_steps:
            save_checkpoint(out_dir / "checkpoints", step, seconds, model, optimizer)
    bar.close()
    return seconds
