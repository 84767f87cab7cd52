"""Step 'edit restore': a folder of photos -> the same photos with noise and JPEG artefacts removed, at full size."""

from __future__ import annotations

from pathlib import Path

from productstudio import paths
from productstudio.steps.step import Arg, Step


def run(params, in_dir: Path, out: Path, restorer: Path, limit: int | None) -> dict:
    from productstudio.editing.restore_batch import restore_batch, weights_digest
    from productstudio.errors import ParamsError
    from productstudio.models.restorer import load_restorer

    if in_dir is None:
        raise ParamsError("edit restore needs --in DIR: the folder of photos to restore")
    model = load_restorer(restorer)
    return restore_batch(in_dir, out, model, weights_digest(restorer), params.edit.max_pixels, limit=limit)


def format(report: dict) -> str:
    s = report["summary"]
    speed = f", {s['seconds_per_megapixel']:.2f} s per megapixel" if s["seconds_per_megapixel"] else ""
    lines = [f"{s['files']} files from {report['source']}: {s['restored']} restored, {s['quarantined']} quarantined"
             + (f" ({s['resumed']} resumed from an earlier run)" if s["resumed"] else "") + speed]
    for row in [r for r in report["photos"] if r["status"] == "quarantined"][:10]:
        lines.append(f"  quarantined: {row['source']}: {row['reason']}")
    lines.append(f"before/after at 1:1: {report['out']}/samples/; report: {report['out']}/report.json")
    return "\n".join(lines)


STEP = Step(
    name="restore",
    help="remove sensor noise and JPEG artefacts from a folder of photos with the learned restorer",
    description="Every photo under --in goes through the learned restorer ('edit restore-train' trains it; one "
    "blind model for noise and JPEG artefacts), at its full size in tiles, and is written to OUT/<same path>.png "
    "(lossless, with XMP provenance naming the model and its weights). OUT/report.json lists every file with how "
    "much the model changed it (PSNR to the input), OUT/quarantine.tsv the unusable files with a one-line reason, "
    "OUT/samples/ before/after crops at 1:1. Sources are never modified; an interrupted run resumes where it "
    "stopped. 'edit restore-eval' shows where the model beats the classical filters and what it does to clean "
    "photos.",
    run=run,
    format=format,
    params=("edit.max_pixels",),
    args=(
        Arg("--in", "photo folder", type=Path, keyword="in_dir"),
        Arg("--out", "output folder", paths.EDIT_RESTORED),
        Arg("--restorer", "the trained restorer's folder", paths.EDIT_RESTORER),
        Arg("--limit", "only the first N files (sorted paths)", type=int),
    ),
)
