"""Step 'preprocess': resize, convert, deduplicate and split into uint8 tensor shards."""

from __future__ import annotations

from pathlib import Path

from productstudio import paths
from productstudio.steps.step import Arg, Step


def run(params, raw: Path, validation: Path, out: Path) -> dict:
    from productstudio.data.preprocess import preprocess

    return {"manifest": preprocess(raw, validation, out, params.preprocess), "out": out}


def format(result: dict) -> str:
    manifest = result["manifest"]
    sizes = ", ".join(f"{name} {info['count']}" for name, info in manifest["splits"].items())
    c, h, w = manifest["image_shape"]
    return (f"preprocessed {manifest['counts']['usable']} images into {result['out']}: {sizes} "
            f"({c}x{h}x{w} uint8; {manifest['counts']['duplicates_removed']} exact duplicates removed)")


STEP = Step(
    name="preprocess",
    help="resize, convert, deduplicate and split into uint8 tensor shards",
    description="EXIF transpose, colour mode (preprocess.mode), aspect-preserving resize to preprocess.image_size with "
    "padding or centre crop, exact-duplicate removal, seeded stratified split where the source has none. "
    "Writes .npy shards, labels and a manifest; the same inputs and params give byte-identical outputs.",
    run=run,
    format=format,
    params=("preprocess",),
    args=(
        Arg("--raw", "raw dataset directory", paths.RAW),
        Arg("--validation", "validation report directory", paths.VALIDATION),
        Arg("--out", "output directory", paths.PROCESSED),
    ),
)
