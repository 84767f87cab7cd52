"""Step 'edit evalset': the labelled set of studio cut-outs on real backgrounds (exact masks)."""

from __future__ import annotations

from pathlib import Path

from productstudio import paths
from productstudio.steps.step import Arg, Step


def run(params, source: Path | None, out: Path, size: int | None) -> dict:
    from productstudio.editing.evalset import build_evalset

    settings = params.edit
    return build_evalset(source or Path(settings.evalset_source), out, size=size or settings.evalset_size,
                         seed=settings.evalset_seed, extra_hard=settings.evalset_extra_hard)


def format(report: dict) -> str:
    return "\n".join(f"{key}: {value}" for key, value in report.items() if not isinstance(value, (list, dict))) \
        or str(report)


STEP = Step(
    name="evalset",
    help="build the labelled set: studio cut-outs on real backgrounds, with exact masks (reproducible)",
    description="Photos shot on a plain background are cut out by thresholding (exact masks), composited onto "
    "real backgrounds at varied scales, plus hard cases (light product on light background, product touching the "
    "frame, product filling the frame), then edit.evalset_extra_hard see-through and reflective stand-ins. Writes images/, masks/, index.csv and a contact sheet to check by eye.",
    run=run,
    format=format,
    params=("edit.evalset_source", "edit.evalset_size", "edit.evalset_seed", "edit.evalset_extra_hard"),
    args=(
        Arg("--source", "photo folder with train/validation/test (default: edit.evalset_source)", type=Path),
        Arg("--out", "output folder", paths.EDIT_EVALSET),
        Arg("--size", "number of composites before the extra hard ones (default: edit.evalset_size)", type=int),
    ),
)
