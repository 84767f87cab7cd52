"""Benchmark: cut-out quality on a held-out labelled set that no clean-up rule was tuned on.

The DVC stage's labelled set (edit_evalset) is built from train and validation studio photos, and the cut-out's
clean-up rules were chosen by looking at its worst composites. This set is built the same way (exact masks,
the same cases) from *validation photos only* with another size, so it measures how the rules generalise:
ours vs plain u2netp, mask IoU / MAE / boundary F, and what the gates refuse.

    python bench/bench_cutout_heldout.py [--photos ../shared/data/clothing-dataset-small] [--size 60]

Prints a table and writes bench/results/cutout-heldout.json (the command, the commit and the machine load in it).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", type=Path, default=REPO.parent / "shared/data/clothing-dataset-small")
    parser.add_argument("--size", type=int, default=60, help="composites in the held-out set")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=REPO / "bench/results/cutout-heldout.json")
    args = parser.parse_args()

    from productstudio.config import load_params
    from productstudio.editing.evalset import build_evalset
    from productstudio.editing.segmentation_eval import evaluate_cutouts
    from productstudio.models.pretrained import weights_dir
    from productstudio.models.salient import load_segmenter

    params = load_params(REPO / "params.yaml")
    load_before = os.getloadavg()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        built = build_evalset(args.photos, scratch, size=args.size, seed=args.seed, splits=("validation",))
        report = evaluate_cutouts(scratch, load_segmenter(weights_dir("u2netp"), threads=0), params.edit.cutout,
                                  gates=params.edit.gates)
    summary = report["summary"]
    keys = ("count", "iou_mean", "iou_min", "iou_p10", "mae_mean", "boundary_f_mean", "below_floor")
    result = {
        "benchmark": "cutout-heldout",
        "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                 cwd=REPO).stdout.strip(),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "load_before": load_before,
                    "load_after": os.getloadavg()},
        "seconds": round(time.perf_counter() - started, 1),
        "evalset": {k: built[k] for k in ("images", "sources", "splits", "cases", "seed")},
        "ours": {k: summary["ours"][k] for k in keys},
        "plain": {k: summary["plain"][k] for k in keys},
        "gates": summary["gates"],
        "worst": sorted(({"id": r["id"], "case": r["case"], "iou": round(r["iou"], 4),
                          "plain_iou": round(r["plain_iou"], 4), "refused": r["refused"]}
                         for r in report["rows"]), key=lambda r: r["iou"])[:3],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"held-out set: {built['images']} composites of {built['sources']} validation photos")
    print(f"{'':8} {'IoU mean':>9} {'IoU min':>8} {'MAE':>7} {'bF':>6} {'<0.85':>6}")
    for name in ("ours", "plain"):
        row = summary[name]
        print(f"{name:8} {row['iou_mean']:9.4f} {row['iou_min']:8.3f} {row['mae_mean']:7.4f} "
              f"{row['boundary_f_mean']:6.3f} {row['below_floor']:6d}")
    print(f"gates: {json.dumps(summary['gates'])}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
