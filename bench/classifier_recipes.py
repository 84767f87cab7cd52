"""The judging classifier's recipe, trained outside the pipeline to see how much the judge itself moves.

usage: python3 bench/classifier_recipes.py EPOCHS:AUGMENT:WEIGHT_DECAY ...   (AUGMENT: 0, 1 = flips and 6-px shifts,
  oc = flips and shifts with a one-cycle schedule), on runs/clothing-64's processed photos (make colour writes them).
Prints the test accuracy and the per-category accuracy on the 372 test photos for each recipe. One thread, so it can
share the cores with a training run. bench/reported/classifier-noise-2026-12-04.json holds one run.

The loop is productstudio.training.classifier.train_classifier's (Adam, batch 128, uniform draws) with the
augmentations added; AdamW with weight decay 0 is Adam.
"""
import sys
import time

import torch
from torch.nn import functional as F

from productstudio.data import store
from productstudio.imaging import to_float
from productstudio.models.classifier import ClassifierConfig, ProductClassifier

torch.set_num_threads(1)
PROCESSED = "runs/clothing-64/data/processed"
train_images, train_labels = store.load_split(PROCESSED, "train")
test_images, test_labels = store.load_split(PROCESSED, "test")
categories = store.categories(PROCESSED)
x_all, y_all = torch.from_numpy(train_images), torch.from_numpy(train_labels)


def shift(x: torch.Tensor, rng: torch.Generator, pad: int = 6) -> torch.Tensor:
    """Each image moved by up to pad pixels each way, edges repeated."""
    n, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad), mode="replicate")
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=rng)
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=rng)
    return torch.stack([padded[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(n)])


def run(epochs: int, augment: bool, one_cycle: bool, weight_decay: float, seed: int = 0, batch_size: int = 128):
    torch.manual_seed(seed)
    rng = torch.Generator().manual_seed(seed)
    model = ProductClassifier(ClassifierConfig(num_classes=len(categories), channels=3))
    optimizer = torch.optim.AdamW(model.parameters(), 1e-3, weight_decay=weight_decay)
    steps = epochs * ((len(x_all) + batch_size - 1) // batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, 2e-3, total_steps=steps) if one_cycle else None
    model.train()
    for _ in range(steps):
        index = torch.randint(0, len(x_all), (batch_size,), generator=rng)
        x = to_float(x_all[index])
        if augment:
            flip = torch.rand(batch_size, generator=rng) < 0.5
            x = shift(torch.where(flip[:, None, None, None], x.flip(3), x), rng)
        loss = F.cross_entropy(model(x), y_all[index])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if schedule:
            schedule.step()
    model.eval()
    with torch.no_grad():
        predicted = torch.cat([model(to_float(test_images[i:i + 256])).argmax(1)
                               for i in range(0, len(test_images), 256)]).numpy()
    per_category = {name: round(float((predicted[test_labels == k] == k).mean()), 2) for k, name in enumerate(categories)}
    return (predicted == test_labels).mean(), per_category


for spec in sys.argv[1:]:
    epochs, augment, weight_decay = spec.split(":")
    started = time.time()
    accuracy, per_category = run(int(epochs), augment in ("1", "oc"), augment == "oc", float(weight_decay))
    print(f"epochs {epochs} augment {augment} wd {weight_decay}: test acc {accuracy:.3f} "
          f"({time.time() - started:.0f} s) {per_category}", flush=True)
