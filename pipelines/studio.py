"""The studio KFP pipeline: a photo folder (imported as a Dataset) -> checked marketplace exports.

    python -m pipelines.studio compile                      # pipelines/studio.yaml
    python -m pipelines.studio run-local --photos DIR [--evalset-photos DIR] [--presets amazon-main] [--limit N]

On a cluster the photos are any URI the pipeline root can read (s3://, gs://, minio://); locally a folder path.
Tasks: ``edit-studio`` (``productstudio edit studio``'s step) and, beside it, ``edit-evalset`` -> ``edit-evaluate``
(the labelled set and the cut-out quality measured on it).
"""

import argparse
import sys
from pathlib import Path
from typing import NamedTuple, Optional

from kfp import compiler, dsl

from components.edit_evalset import edit_evalset
from components.edit_evaluate import edit_evaluate
from components.edit_studio import edit_studio
from pipelines.product_studio import place

PIPELINE_NAME = "product-studio-edit"


class Outputs(NamedTuple):
    exports: dsl.Artifact
    evaluation: dsl.Artifact
PACKAGE_PATH = Path(__file__).resolve().with_name("studio.yaml")
# Cluster placement (see pipelines/product_studio.py): a 24 MP photo peaks at about 1.1 GB in edit-studio.
# edit-studio is never cached (the folder may change under the same URI); a retry reruns a step from scratch,
# which is harmless for all three (their outputs depend only on their inputs).
RESOURCES = {
    "edit-studio": ("2", "4", "2Gi", "4Gi"),
    "edit-evalset": ("1", "2", "1Gi", "2Gi"),
    "edit-evaluate": ("2", "4", "2Gi", "4Gi"),
}
RETRIED = ("edit-studio", "edit-evalset", "edit-evaluate")
UNCACHED = ("edit-studio",)


@dsl.pipeline(
    name=PIPELINE_NAME,
    description="Studio shots from real product photos: background removal, composition on marketplace presets, "
    "compliance checks and provenance; pass rates as metrics, exports and a contact sheet as an artifact.",
)
def studio(photos_uri: str, evalset_photos_uri: str, params_yaml: str = "", presets: str = "", limit: int = 0,
           mlflow_tracking_uri: str = "") -> Outputs:
    """Import the photo folder at ``photos_uri`` and export it; measure the cut-outs on a labelled set built from
    the studio photos at ``evalset_photos_uri``.

    Args:
        photos_uri: The photo folder (a local path for kfp.local; a bucket URI on a cluster).
        evalset_photos_uri: Photos with train/validation folders, shot on plain backgrounds in part.
        params_yaml: The text of a params.yaml ("" means defaults; the 'edit' section is read).
        presets: Comma-separated preset names ("" takes edit.presets).
        limit: The first N photos (0: all).
        mlflow_tracking_uri: MLflow store for the pass rates and sample sheets; "" logs nothing.
    """
    photos = dsl.importer(artifact_uri=photos_uri, artifact_class=dsl.Dataset, reimport=True)
    task = place(edit_studio(params_yaml=params_yaml, photos=photos.output, presets=presets, limit=limit,
                             mlflow_tracking_uri=mlflow_tracking_uri), "edit-studio", RESOURCES, RETRIED, UNCACHED)
    studio_photos = dsl.importer(artifact_uri=evalset_photos_uri, artifact_class=dsl.Dataset, reimport=True)
    evalset_task = place(edit_evalset(params_yaml=params_yaml, photos=studio_photos.output), "edit-evalset",
                         RESOURCES, RETRIED, UNCACHED)
    evaluate_task = place(edit_evaluate(params_yaml=params_yaml, evalset=evalset_task.outputs["evalset"],
                                        mlflow_tracking_uri=mlflow_tracking_uri), "edit-evaluate", RESOURCES,
                          RETRIED, UNCACHED)
    return Outputs(exports=task.outputs["exports"], evaluation=evaluate_task.outputs["evaluation"])


def compile_pipeline(path: str | Path = PACKAGE_PATH) -> Path:
    path = Path(path)
    compiler.Compiler().compile(pipeline_func=studio, package_path=str(path))
    return path


def run_local(photos: str | Path, evalset_photos: str | Path, root: str | Path, params: Optional[str | Path] = None,
              presets: str = "", limit: int = 0, mlflow_tracking_uri: str = "") -> dict[str, str]:
    """Run with kfp.local's SubprocessRunner in this interpreter; return the output folders (exports, evaluation)."""
    from pipelines.product_studio import _read_params, local_session

    params_yaml = _read_params(params)
    with local_session(root):
        task = studio(photos_uri=str(Path(photos).resolve()), evalset_photos_uri=str(Path(evalset_photos).resolve()),
                      params_yaml=params_yaml, presets=presets, limit=limit, mlflow_tracking_uri=mlflow_tracking_uri)
    return {name: artifact.path for name, artifact in task.outputs.items()}


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.studio", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    compile_cmd = commands.add_parser("compile", help=f"write {PACKAGE_PATH.name}")
    compile_cmd.add_argument("--output", type=Path, default=PACKAGE_PATH)
    local_cmd = commands.add_parser("run-local", help="run with kfp.local (SubprocessRunner) on a photo folder")
    local_cmd.add_argument("--photos", type=Path, required=True, help="the folder to export")
    local_cmd.add_argument("--evalset-photos", type=Path, default=Path("../shared/data/clothing-dataset-small"),
                           help="studio photos for the labelled set (default: %(default)s)")
    local_cmd.add_argument("--root", type=Path, default=Path(".scratch/kfp-studio"))
    local_cmd.add_argument("--params", type=Path, default=None)
    local_cmd.add_argument("--presets", default="")
    local_cmd.add_argument("--limit", type=int, default=0)
    local_cmd.add_argument("--mlflow-tracking-uri", default="")
    args = parser.parse_args(argv)
    if args.command == "compile":
        print(compile_pipeline(args.output))
    else:
        print(run_local(args.photos, args.evalset_photos, args.root, args.params, args.presets, args.limit,
                        args.mlflow_tracking_uri))
    return 0


if __name__ == "__main__":
    sys.exit(main())
