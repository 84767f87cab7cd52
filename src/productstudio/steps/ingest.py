"""Step 'ingest': copy a source (Fashion-MNIST or a photo folder) into a raw dataset directory."""

from __future__ import annotations

from pathlib import Path

from productstudio import paths
from productstudio.steps.step import Arg, Step


def run(params, out: Path) -> dict:
    from productstudio.data.raw import ingest

    raw = ingest(params.ingest, out)
    return {"source": raw.source, "files": len(raw.manifest["inputs"]["files"]), "categories": len(raw.categories),
            "category_names": raw.categories, "out": str(out)}


def format(report: dict) -> str:
    return f"ingested {report['source']} ({report['files']} files, {report['categories']} categories) into {report['out']}"


STEP = Step(
    name="ingest",
    help="copy a source (Fashion-MNIST or a photo folder) into a raw dataset directory",
    description="Copy the source named by params.yaml 'ingest' into a raw dataset directory with a manifest of "
    "content hashes. Fashion-MNIST is read from ingest.fashion_mnist_dir when it exists, else downloaded and "
    "md5-checked; a photo folder is copied byte for byte (bad files too: validation judges them).",
    run=run,
    format=format,
    params=("ingest",),
    args=(Arg("--out", "raw dataset directory to (re)create", paths.RAW),),
)
