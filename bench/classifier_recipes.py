"""The judging classifier's recipe, trained outside the pipeline to see how much the judge itself moves.

usage: python3 bench/classifier_recipes.py EPOCHS:AUGMENT:WEIGHT_DECAY ...   (AUGMENT: 0, 1 = flips and 6-px shifts,
  oc = flips and shifts with a one-cycle schedule), on runs/clothing-64's processed photos (make colour writes them).
Prints the test accuracy and the per-category accuracy on the 372 test photos for each recipe. One thread, so it can
share the cores with a training run. bench/reported/classifier-noise-2026-12-04.json holds one run.
"""
import sys, time, torch, numpy as np
from torch.nn import functional as F
from productstudio.data import store
from productstudio.imaging import to_float
from productstudio.models.classifier import ClassifierConfig, ProductClassifier
torch.set_num_threads(1)
P = "runs/clothing-64/data/processed"
xi, yi = store.load_split(P, "train"); xt, yt = store.load_split(P, "test"); cats = store.categories(P)
x_all, y_all = torch.from_numpy(xi), torch.from_numpy(yi)

def shift(x, rng, pad=6):
    n, c, h, w = x.shape
    xp = F.pad(x, (pad, pad, pad, pad), mode="replicate")
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=rng); dy = torch.randint(0, 2 * pad + 1, (n,), generator=rng)
    return torch.stack([xp[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(n)])

def run(epochs, augment, wd=0.0, seed=0, bs=128):
    torch.manual_seed(seed); rng = torch.Generator().manual_seed(seed)
    m = ProductClassifier(ClassifierConfig(num_classes=len(cats), channels=3))
    opt = torch.optim.AdamW(m.parameters(), 1e-3, weight_decay=wd)
    steps = epochs * ((len(x_all) + bs - 1) // bs); m.train()
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 2e-3, total_steps=steps) if augment == "onecycle" else None
    for s in range(steps):
        idx = torch.randint(0, len(x_all), (bs,), generator=rng)
        x = to_float(x_all[idx])
        if augment:
            flip = torch.rand(bs, generator=rng) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(3), x)
            x = shift(x, rng)
        loss = F.cross_entropy(m(x), y_all[idx]); opt.zero_grad(); loss.backward(); opt.step()
        if sched: sched.step()
    m.eval()
    with torch.no_grad():
        pred = torch.cat([m(to_float(xt[i:i+256])).argmax(1) for i in range(0, len(xt), 256)]).numpy()
    acc = (pred == yt).mean()
    per = {c: round(float((pred[yt == k] == k).mean()), 2) for k, c in enumerate(cats)}
    return acc, per

for spec in sys.argv[1:]:
    e, a, wd = spec.split(":"); t = time.time()
    acc, per = run(int(e), {"0": False, "1": True, "oc": "onecycle"}[a], float(wd))
    print(f"epochs {e} augment {a} wd {wd}: test acc {acc:.3f} ({time.time()-t:.0f} s) {per}", flush=True)
