"""Benchmark: GAN training speed on this machine, and quality against wall-clock training time.

1. Throughput: training images/s of the default generator (nearest-upsample + 3x3 conv) against a
   reference measured in the same run: the same network with transposed convolutions instead
   (the DCGAN habit), same widths, same discriminator. The ratio says which layer pays on a CPU.
2. Time to quality (``--minutes M``): trains with params.yaml's train section in chunks of
   ``--chunk`` minutes (each chunk resumes the last), and after each chunk evaluates the named
   metrics (``--metrics``, default kid1k_test), and after the last chunk also ``--final-metrics``
   (fid10k_test for the issue's target: about 20 min of Inception each time it is evaluated).

Prints tables and writes bench/results/train.json.

    python bench/bench_train.py                              # throughput only, about a minute
    python bench/bench_train.py --minutes 60 --chunk 20 --final-metrics fid10k_test   # about 2 h
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from productstudio.config import load_params
from productstudio.data import store
from productstudio.imaging import to_float
from productstudio.models import gan
from productstudio.training.loop import build, gan_step


class TransposedUpBlock(nn.Module):
    """Reference block: a stride-2 transposed convolution in place of upsample + conv."""

    def __init__(self, cin: int, cout: int, num_classes: int):
        super().__init__()
        self.conv = nn.ConvTranspose2d(cin, cout, 4, stride=2, padding=1, bias=False)
        self.norm = gan.ConditionalBatchNorm(cout, num_classes)

    def forward(self, x, y):
        return F.relu(self.norm(self.conv(x), y))


def throughput(state, settings, images, labels, steps: int) -> float:
    x_all, y_all = torch.from_numpy(images), torch.from_numpy(labels)
    rng = torch.Generator().manual_seed(0)
    for i in range(steps + 3):
        if i == 3:
            start = time.perf_counter()
        index = torch.randint(0, len(x_all), (settings.batch_size,), generator=rng)
        gan_step(state, to_float(x_all[index]), y_all[index], settings, "cpu")
    return steps * settings.batch_size / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--processed", type=Path, default=Path("data/processed"))
    parser.add_argument("--steps", type=int, default=30, help="timed steps per variant")
    parser.add_argument("--minutes", type=float, default=0, help="time-to-quality run length (0: skip)")
    parser.add_argument("--chunk", type=float, default=5)
    parser.add_argument("--metrics", nargs="+", default=["kid1k_test"], help="evaluated after every chunk")
    parser.add_argument("--final-metrics", nargs="+", default=[], help="evaluated after the last chunk only")
    parser.add_argument("--workdir", type=Path, default=Path(".scratch/bench-train"))
    parser.add_argument("--out", type=Path, default=Path("bench/results/train.json"))
    args = parser.parse_args()
    params = load_params(args.params)
    settings = params.train.model_copy(update={"model": "gan"})
    torch.set_num_threads(settings.threads or torch.get_num_threads())
    images, labels = store.load_split(args.processed, "train")
    categories = store.categories(args.processed)

    ours = build(settings, len(categories), tuple(images.shape[1:]), torch.device("cpu"))
    reference = build(settings, len(categories), tuple(images.shape[1:]), torch.device("cpu"))
    g = reference.modules["generator"]
    for i, block in enumerate(g.blocks):
        g.blocks[i] = TransposedUpBlock(block.conv.in_channels, block.conv.out_channels, len(categories))
    reference.modules["ema"] = copy.deepcopy(g).eval().requires_grad_(False)
    reference.optimizers["generator"] = torch.optim.Adam(g.parameters(), settings.lr_g, betas=(settings.beta1, settings.beta2))

    ours_rate = throughput(ours, settings, images, labels, args.steps)
    ref_rate = throughput(reference, settings, images, labels, args.steps)
    print(f"\nGAN training throughput, batch {settings.batch_size}, {images.shape[1:]} images, {torch.get_num_threads()} threads")
    print(f"{'generator':<36} {'images/s':>10}")
    print(f"{'upsample + conv (ours)':<36} {ours_rate:>10.1f}")
    print(f"{'transposed conv (reference)':<36} {ref_rate:>10.1f}")
    print(f"ratio ours / reference: {ours_rate / ref_rate:.2f}\n")
    result = {"batch_size": settings.batch_size, "threads": torch.get_num_threads(), "images_per_s": ours_rate,
              "reference_transposed_images_per_s": ref_rate, "ratio": ours_rate / ref_rate, "curve": []}

    if args.minutes > 0:
        from productstudio.metrics.evaluate import evaluate
        from productstudio.metrics.real_stats import compute_real_stats
        from productstudio.training.classifier import train_classifier
        from productstudio.training.loop import train

        work = args.workdir
        # No floor: at 10k it would cost another 10k real train images through Inception.
        eval_settings = params.evaluate.model_copy(update={"metrics": args.metrics, "per_category": False, "floor": False})
        final_settings = eval_settings.model_copy(update={"metrics": args.metrics + args.final_metrics})
        compute_real_stats(args.processed, work / "real_stats", final_settings, params.protocol)
        if not (work / "classifier" / "classifier.safetensors").exists():
            train_classifier(args.processed, work / "classifier", epochs=eval_settings.classifier_epochs)
        names = args.metrics + args.final_metrics
        print(f"{'minutes':>8} {'steps':>7} " + " ".join(f"{m:>14}" for m in names))
        spent = 0.0
        while spent < args.minutes:
            spent = min(args.minutes, spent + args.chunk)
            budget = settings.model_copy(update={"max_minutes": spent, "max_steps": 10**9})
            manifest = train(budget, args.processed, work / "train", work / "plots", track=False, real_stats_dir=work / "real_stats")
            report = evaluate(work / "train/generator", args.processed, work / "classifier", work / "real_stats",
                              work / "eval", final_settings if spent >= args.minutes else eval_settings, params.protocol, track=False)
            values = {r["metric"]: r["value"] for r in report["metrics"]}
            result["curve"].append({"minutes": manifest["summary"]["minutes"], "steps": manifest["summary"]["steps"], **values,
                                    "protocol": report["metrics"]})
            print(f"{manifest['summary']['minutes']:>8.1f} {manifest['summary']['steps']:>7} "
                  + " ".join(f"{values[m]:>14.4f}" if m in values else f"{'-':>14}" for m in names), flush=True)
        kid_csv = work / "plots" / "train_kid.csv"  # the training loop's own KID every train.kid_every steps
        if kid_csv.is_file():
            result["train_kid"] = kid_csv.read_text().splitlines()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
