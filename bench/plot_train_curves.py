"""Draw the time-to-quality curves of recorded ``bench_train.py --minutes`` runs in one picture.

Each JSON under bench/reported/ that holds a ``train_kid`` curve (the training loop's KID-250 against the
test features every train.kid_every steps) becomes one line: KID-250 against training minutes, with its
standard error as a band; the chunk ends' KID-1k are dots, and the final FID-10k is in the legend. Reads only
the committed JSONs, so the figure can be redrawn without training anything.

    python bench/plot_train_curves.py bench/reported/train-60-*.json --out docs/fashion-60min-kid.png
"""
from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path


def load_run(path: Path) -> dict:
    """One recorded run: its label, the KID-250 rows, the chunk-end KID-1k points and the final FID-10k."""
    record = json.loads(path.read_text())
    if "train_kid" not in record:
        raise SystemExit(f"{path}: no train_kid curve in it (not a bench_train.py --minutes run)")
    rows = list(csv.DictReader(record["train_kid"]))
    chunk_ends = [(point["minutes"], point["kid1k_test"]) for point in record["curve"] if "kid1k_test" in point]
    fid10k = next((point["fid10k_test"] for point in reversed(record["curve"]) if "fid10k_test" in point), None)
    return {
        "label": path.stem,
        "minutes": [float(row["train_minutes"]) for row in rows],
        "kid": [float(row["kid"]) for row in rows],
        "std_error": [float(row["kid_std_error"]) for row in rows],
        "chunk_ends": chunk_ends,
        "fid10k": fid10k,
        "steps": record["curve"][-1]["steps"] if record["curve"] else None,
    }


def draw(runs: list[dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on servers and in CI
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(9, 5.5), dpi=110)
    for run in runs:
        low = [max(k - e, 1e-4) for k, e in zip(run["kid"], run["std_error"])]  # the axis is logarithmic
        high = [k + e for k, e in zip(run["kid"], run["std_error"])]
        fid = f", fid10k_test {run['fid10k']:.1f}" if run["fid10k"] is not None else ""
        (line,) = axes.plot(run["minutes"], run["kid"], label=f"{run['label']} ({run['steps']} steps{fid})")
        axes.fill_between(run["minutes"], low, high, color=line.get_color(), alpha=0.15)
        if run["chunk_ends"]:
            minutes, kid1k = zip(*run["chunk_ends"])
            axes.plot(minutes, kid1k, "o", color=line.get_color())
    axes.set_yscale("log")
    axes.set_xlabel("training minutes (2 CPU cores)")
    axes.set_ylabel("KID against the test set (lower is better)")
    axes.set_title("Fashion-MNIST GAN: KID-250 during training (lines, +- 1 s.e.), KID-1k at chunk ends (dots)")
    axes.title.set_fontsize(10)
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out)
    plt.close(figure)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path, help="bench_train.py JSONs (bench/reported/train-60-*.json)")
    parser.add_argument("--out", type=Path, default=Path("docs/fashion-60min-kid.png"))
    args = parser.parse_args(argv)
    draw([load_run(path) for path in args.runs], args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
