"""Benchmark: GAN training speed on this machine, and quality against wall-clock training time.

1. Throughput: training images/s of the default GAN (nearest-upsample + 3x3 conv generator) against
   references measured in the same run:
   - the same network with transposed convolutions instead (the DCGAN habit), same widths, same
     discriminator: the ratio says which layer pays on a CPU;
   - the levers at equal settings otherwise: torch.compile (train.compile; its compile time is reported
     apart: the rate is after the first 3 steps), channels-last memory format, batch 128;
   - where a step's time goes (generate, discriminator update, generator update, EMA; torch.profiler over
     the labels gan_step sets), its FLOPs (torch's per-operator formulas, forward + backward, R1/R2 included) and its FLOP
     rate as a share of a plain fp32 matrix multiply timed on the same threads.
2. Time to quality (``--minutes M``): trains with params.yaml's train section for a wall-clock budget
   of M training minutes (instead of train.max_steps; the learning-rate decay runs over those minutes),
   paused every ``--chunk`` minutes (each chunk resumes the last); after each chunk it evaluates the named
   metrics (``--metrics``, default kid1k_test), and after the last chunk also ``--final-metrics``
   (fid10k_test for the issue's target: about 20 min of Inception each time it is evaluated). With
   ``train.select_best`` in the params, each chunk measures the generator kept by its held-out KID so far (the
   table names its step).

Prints tables and writes bench/results/train.json.

    python bench/bench_train.py                              # throughput only, about a minute
    python bench/bench_train.py --minutes 60 --chunk 20 --final-metrics fid10k_test   # about 2 h
    python bench/bench_train.py --minutes 60 --chunk 20 --final-metrics fid10k_test --seed 1 --workdir .scratch/bench-train-s1

The JSON records the command, the commit, the training seed and the load average before and after, so a
figure quoted in the README can be traced (bench/reported/).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import subprocess
import sys
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


WARM_UP_SECONDS: dict[str, float] = {}  # per variant: the first 3 steps (torch.compile compiles there)


def throughput(state, settings, images, labels, steps: int, channels_last: bool = False, name: str = "") -> float:
    x_all, y_all = torch.from_numpy(images), torch.from_numpy(labels)
    if channels_last:
        for module in state.modules.values():
            module.to(memory_format=torch.channels_last)
    rng = torch.Generator().manual_seed(0)
    begin = time.perf_counter()
    for i in range(steps + 3):
        if i == 3:
            start = time.perf_counter()
            WARM_UP_SECONDS[name] = start - begin
        index = torch.randint(0, len(x_all), (settings.batch_size,), generator=rng)
        x = to_float(x_all[index])
        gan_step(state, x.contiguous(memory_format=torch.channels_last) if channels_last else x, y_all[index], settings, "cpu")
    return steps * settings.batch_size / (time.perf_counter() - start)


PHASES = ("generate", "discriminator_update", "generator_update", "ema")


def step_profile(state, settings, images, labels, steps: int) -> dict:
    """Share of a training step's wall time in each phase (torch.profiler, the labels gan_step sets)."""
    from torch.profiler import ProfilerActivity, profile

    x_all, y_all = torch.from_numpy(images), torch.from_numpy(labels)
    rng = torch.Generator().manual_seed(1)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            index = torch.randint(0, len(x_all), (settings.batch_size,), generator=rng)
            gan_step(state, to_float(x_all[index]), y_all[index], settings, "cpu")
    totals = {e.key: e.cpu_time_total for e in prof.key_averages() if e.key in PHASES}
    whole = sum(totals.values())
    return {phase: totals.get(phase, 0.0) / whole for phase in PHASES}


def step_flops(state, settings, images, labels) -> int:
    """FLOPs of one training step (forward and backward of both networks, R1/R2 included), as torch counts them.

    torch's FlopCounterMode cannot be used here: its per-module tracker hooks the backward pass, and that hook
    refuses the torch.autograd.grad call of the R1/R2 penalties. So the same per-operator formulas
    (torch.utils.flop_counter.flop_registry) are summed by a plain dispatch mode, without the per-module split.
    """
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils.flop_counter import flop_registry

    class TotalFlops(TorchDispatchMode):
        total = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            out = func(*args, **kwargs)
            formula = flop_registry.get(func._overloadpacket)
            if formula is not None:
                self.total += formula(*args, **kwargs, out_val=out)
            return out

    x = to_float(torch.from_numpy(images[: settings.batch_size]))
    y = torch.from_numpy(labels[: settings.batch_size])
    counter = TotalFlops()
    with counter:
        gan_step(state, x, y, settings, "cpu")
    return counter.total


def matmul_flops_per_s(size: int = 1024, rounds: int = 20) -> float:
    a, b = torch.randn(size, size), torch.randn(size, size)
    for _ in range(3):
        a @ b
    start = time.perf_counter()
    for _ in range(rounds):
        a @ b
    return rounds * 2 * size**3 / (time.perf_counter() - start)


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
    parser.add_argument("--seed", type=int, default=None, help="training seed (default: params.yaml's train.seed)")
    args = parser.parse_args()
    load_before = os.getloadavg()
    params = load_params(args.params)
    settings = params.train.model_copy(update={"model": "gan"})
    if args.seed is not None:
        settings = settings.model_copy(update={"seed": args.seed})
    torch.set_num_threads(settings.threads or torch.get_num_threads())
    images, labels = store.load_split(args.processed, "train")
    categories = store.categories(args.processed)

    shape = tuple(images.shape[1:])

    def fresh(batch_size: int = settings.batch_size):
        varied = settings.model_copy(update={"batch_size": batch_size})
        return build(varied, len(categories), shape, torch.device("cpu")), varied

    # The reference swaps the plain generator's blocks (with residual blocks configured, the plain one is the base).
    reference = build(settings.model_copy(update={"g_block": "conv"}), len(categories), shape, torch.device("cpu"))
    g = reference.modules["generator"]
    for i, block in enumerate(g.blocks):
        g.blocks[i] = TransposedUpBlock(block.conv.in_channels, block.conv.out_channels, len(categories))
    reference.modules["ema"] = copy.deepcopy(g).eval().requires_grad_(False)
    reference.optimizers["generator"] = torch.optim.Adam(g.parameters(), settings.lr_g, betas=(settings.beta1, settings.beta2))

    compiled, _ = fresh()
    compiled.compile()  # train.compile
    ours_rate = throughput(*fresh(), images, labels, args.steps)
    rows = {"upsample + conv (ours)": ours_rate,
            "ours, torch.compile": throughput(compiled, settings, images, labels, args.steps, name="ours, torch.compile"),
            "transposed conv (reference)": throughput(reference, settings, images, labels, args.steps),
            "ours, channels-last": throughput(*fresh(), images, labels, args.steps, channels_last=True),
            "ours, batch 128": throughput(*fresh(128), images, labels, max(1, args.steps // 2))}
    state, _ = fresh()
    profile = step_profile(state, settings, images, labels, max(5, args.steps // 3))
    flops = step_flops(*fresh(), images, labels)
    matmul = matmul_flops_per_s()
    achieved = flops * ours_rate / settings.batch_size
    print(f"\nGAN training throughput, {settings.g_block} generator blocks, batch {settings.batch_size}, {shape} images, {torch.get_num_threads()} threads")
    print(f"{'variant':<36} {'images/s':>10} {'vs ours':>8}")
    for name, rate in rows.items():
        print(f"{name:<36} {rate:>10.1f} {rate / ours_rate:>8.2f}")
    print(f"torch.compile: the first 3 steps (compiling) took {WARM_UP_SECONDS['ours, torch.compile']:.0f} s")
    print("\nwhere a step's time goes: " + ", ".join(f"{k} {v:.0%}" for k, v in profile.items()))
    print(f"FLOPs per step {flops / 1e9:.2f} G; at {ours_rate:.0f} images/s that is {achieved / 1e9:.1f} GFLOP/s, "
          f"{achieved / matmul:.1%} of a 1024x1024 fp32 matmul on the same threads ({matmul / 1e9:.1f} GFLOP/s)\n")
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent.parent,
                            capture_output=True, text=True).stdout.strip()
    result = {"command": " ".join(["python", *sys.argv]), "commit": commit, "seed": settings.seed,
              "cpus": os.cpu_count(), "machine": platform.processor() or platform.machine(),
              "load_average_before": [round(x, 2) for x in load_before],
              "g_block": settings.g_block, "batch_size": settings.batch_size, "threads": torch.get_num_threads(), "images_per_s": ours_rate,
              "reference_transposed_images_per_s": rows["transposed conv (reference)"],
              "ratio": ours_rate / rows["transposed conv (reference)"],
              "variants_images_per_s": rows, "compile_warm_up_s": WARM_UP_SECONDS["ours, torch.compile"], "step_time_share": profile, "step_gflops": flops / 1e9,
              "matmul_gflops_per_s": matmul / 1e9, "flop_efficiency_vs_matmul": achieved / matmul, "curve": []}

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
            timed = settings.model_copy(update={"max_minutes": None, "max_steps": 10**9})
            manifest = train(timed, args.processed, work / "train", work / "plots", track=False, real_stats_dir=work / "real_stats",
                             budget_minutes=args.minutes, pause_at_minutes=spent)
            report = evaluate(work / "train/generator", args.processed, work / "classifier", work / "real_stats",
                              work / "eval", final_settings if spent >= args.minutes else eval_settings, params.protocol, track=False)
            values = {r["metric"]: r["value"] for r in report["metrics"]}
            selected = manifest["summary"].get("selected_step")  # train.select_best: the generator measured is that step's
            result["curve"].append({"minutes": manifest["summary"]["minutes"], "steps": manifest["summary"]["steps"], **values,
                                    **({"selected_step": selected} if selected is not None else {}),
                                    "protocol": report["metrics"]})
            print(f"{manifest['summary']['minutes']:>8.1f} {manifest['summary']['steps']:>7} "
                  + " ".join(f"{values[m]:>14.4f}" if m in values else f"{'-':>14}" for m in names)
                  + (f"   (the generator of step {selected}, by held-out KID)" if selected is not None else ""), flush=True)
        kid_csv = work / "plots" / "train_kid.csv"  # the training loop's own KID every train.kid_every steps
        if kid_csv.is_file():
            result["train_kid"] = kid_csv.read_text().splitlines()
    result["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
