"""Step 'real-stats': the real images' Inception features, cached once per data version, and the floor."""

from __future__ import annotations

from pathlib import Path

from productstudio import paths
from productstudio.steps.step import DEVICE, Arg, Step


def run(params, processed: Path, out: Path, device: str) -> dict:
    from productstudio.metrics.real_stats import compute_real_stats

    return {**compute_real_stats(processed, out, params.evaluate, params.protocol, device=device), "out": out}


def format(result: dict) -> str:
    counts = ", ".join(f"{k} {v}" for k, v in result["counts"].items())
    lines = [f"real Inception features cached in {result['out']} ({counts}; {result['computed']} computed now)"]
    if "floor" in result:
        f = result["floor"]
        lines.append(f"floor (real train vs real test, {f['num_a']} each): FID {f['fid']:.3f}  "
                     f"KID {f['kid']:.5f} +- {f['kid_std_error'] or 0:.5f}")
    return "\n".join(lines)


STEP = Step(
    name="real-stats",
    help="cache the real images' Inception features once per data version; report the real-vs-real floor",
    description="Extract the TF-Inception (FID) features of the real images the metrics in evaluate.metrics "
    "compare against, once per data version (a DVC output), and compute FID/KID of real train vs real test at "
    "the same counts: the floor a perfect generator would reach. The only step that writes this cache.",
    run=run,
    format=format,
    params=("evaluate.metrics", "evaluate.floor", "protocol"),
    args=(
        Arg("--processed", "processed dataset", paths.PROCESSED),
        Arg("--out", "the real-feature cache directory", paths.REAL_STATS),
        DEVICE,
    ),
)
