"""Step 'edit enhance': a folder of photos -> white-balanced (from the background), exposed and sharpened copies."""

from __future__ import annotations

from pathlib import Path

from productstudio import paths
from productstudio.steps.step import Arg, Step

RECIPE_NAME = "product-studio-enhance"  # provenance's name for the recipe (classical operations, u2netp cut-out)


def run(params, in_dir: Path, out: Path, operations: str | None, limit: int | None) -> dict:
    import hashlib
    import json

    from productstudio.editing.enhance import OPERATIONS, enhance
    from productstudio.editing.folder_edit import FolderEdit, edit_folder
    from productstudio.errors import ParamsError
    from productstudio.models.pretrained import weights_dir
    from productstudio.models.salient import load_segmenter

    if in_dir is None:
        raise ParamsError("edit enhance needs --in DIR: the folder of photos to enhance")
    settings = params.edit.enhance
    if operations is not None:
        chosen = [name.strip() for name in operations.split(",") if name.strip()]
        unknown = [name for name in chosen if name not in OPERATIONS]
        if unknown or not chosen:
            raise ParamsError(f"--operations {operations!r}: choose one or more of {', '.join(OPERATIONS)}")
        settings = settings.model_copy(update={"operations": chosen})
    segmenter_dir = weights_dir("u2netp")
    segmenter = load_segmenter(segmenter_dir, threads=0)
    recorded = {**settings.model_dump(), "cutout": params.edit.cutout.model_dump()}
    digest = hashlib.sha256((json.dumps(recorded, sort_keys=True) + ":" + hashlib.sha256(
        (segmenter_dir / "model.onnx").read_bytes()).hexdigest()).encode()).hexdigest()
    edit = FolderEdit("enhance", "enhanced", RECIPE_NAME, digest,
                      lambda photo: enhance(photo, settings, segmenter, params.edit.cutout), recorded)
    return edit_folder(in_dir, out, edit, params.edit.max_pixels, limit=limit)


def format(report: dict) -> str:
    from productstudio.editing.folder_edit import summary_text

    return summary_text(report, f"operations: {', '.join(report['settings']['operations'])}")


STEP = Step(
    name="enhance",
    help="white-balance (from the background), fix exposure and sharpen a folder of photos; each optional",
    description="Every photo under --in gets edit.enhance.operations, in this order: white-balance (the light "
    "estimated from the background outside the product, which the studio cut-out finds, so a red sweater does "
    "not turn the photo cyan), exposure (the edit.enhance.exposure_percentile brightest luminance becomes "
    "white) and sharpen (an unsharp mask). Writes OUT/<same path>.png (lossless, with XMP provenance), "
    "OUT/report.json (how much each photo changed), OUT/quarantine.tsv (unusable files, one-line reasons) and "
    "OUT/samples/ (before/after at 1:1). Sources are never modified; an interrupted run resumes. 'edit "
    "restore-eval' measures each operation's gain on damaged crops and its harm on clean ones.",
    run=run,
    format=format,
    params=("edit.enhance", "edit.cutout", "edit.max_pixels"),
    args=(
        Arg("--in", "photo folder", type=Path, keyword="in_dir"),
        Arg("--out", "output folder", paths.EDIT_ENHANCED),
        Arg("--operations", "comma-separated, overriding edit.enhance.operations: white-balance,exposure,sharpen",
            type=str),
        Arg("--limit", "only the first N files (sorted paths)", type=int),
    ),
)
