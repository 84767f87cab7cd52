"""The learned editors' KFP pipeline: the restorer (noise + JPEG), the defect detector (dust, specks, scratches) and
the watermark detector (tiled text, for the merchant's own images) trained on a photo folder, measured in the
restoration table beside the tuned classical methods, registered and promoted only when they beat them and their
champion. The same steps as the DVC stages ``edit_restorer``, ``edit_detector``, ``edit_watermark_detector``,
``edit_restore_eval`` and ``edit_register``.

    python -m pipelines.editors compile                     # pipelines/editors.yaml
    python -m pipelines.editors run-local [--photos DIR] [--params FILE] [--mlflow-tracking-uri URI]

The photos are a folder with train/validation/test folders of product photos (a bucket URI on a cluster).
Tasks: ``edit-restore-train``, ``edit-detect-train`` and ``edit-watermark-detect-train`` side by side ->
``edit-restore-eval`` -> ``edit-register``.
"""

import argparse
import sys
from pathlib import Path
from typing import NamedTuple, Optional

from kfp import compiler, dsl

from components.edit_detect_train import edit_detect_train
from components.edit_register import edit_register
from components.edit_restore_eval import edit_restore_eval
from components.edit_restore_train import edit_restore_train
from pipelines.product_studio import place

PIPELINE_NAME = "product-studio-editors"
PACKAGE_PATH = Path(__file__).resolve().with_name("editors.yaml")
# Cluster placement (see pipelines/product_studio.py). Both trainings checkpoint and resume bit for bit and the table
# depends only on its inputs, so they are retried; edit-register acts on the registry, like register and promote in
# the main pipeline: neither retried nor cached.
RESOURCES = {
    "edit-restore-train": ("2", "4", "2Gi", "4Gi"),
    "edit-detect-train": ("2", "4", "2Gi", "4Gi"),
    "edit-watermark-detect-train": ("2", "4", "2Gi", "4Gi"),
    "edit-restore-eval": ("2", "4", "2Gi", "4Gi"),
    "edit-register": ("1", "2", "1Gi", "2Gi"),
}
RETRIED = ("edit-restore-train", "edit-detect-train", "edit-watermark-detect-train", "edit-restore-eval")
UNCACHED = ("edit-register",)


class Outputs(NamedTuple):
    restorer: dsl.Model
    detector: dsl.Model
    watermark_detector: dsl.Model
    table: dsl.Artifact
    registered: dsl.Artifact


@dsl.pipeline(
    name=PIPELINE_NAME,
    description="The learned editors' lifecycle: a restorer, a defect detector and a watermark detector trained on "
    "product photos, the "
    "restoration table (every synthetic defect x the tuned classical methods and the learned models: PSNR, SSIM, "
    "harm on clean photos, speed), then each registered in MLflow and promoted only when it beats the classical "
    "methods and its champion.",
)
def editors(photos_uri: str, params_yaml: str = "", mlflow_tracking_uri: str = "") -> Outputs:
    """Train, measure and register the learned editors on the photos at ``photos_uri``.

    Args:
        photos_uri: Product photos in train/validation/test folders (a local path for kfp.local; a bucket URI on a
            cluster); the test folder is only ever measured.
        params_yaml: The text of a params.yaml ("" means defaults; the 'edit' section is read).
        mlflow_tracking_uri: MLflow store for the training runs, the table and the registry; "" logs and registers
            nothing.
    """
    photos = dsl.importer(artifact_uri=photos_uri, artifact_class=dsl.Dataset, reimport=True)
    restorer = place(edit_restore_train(params_yaml=params_yaml, photos=photos.output,
                                        mlflow_tracking_uri=mlflow_tracking_uri), "edit-restore-train", RESOURCES,
                     RETRIED, UNCACHED)
    detector = place(edit_detect_train(params_yaml=params_yaml, photos=photos.output,
                                       mlflow_tracking_uri=mlflow_tracking_uri), "edit-detect-train", RESOURCES,
                     RETRIED, UNCACHED)
    watermark = place(edit_detect_train(params_yaml=params_yaml, photos=photos.output, watermark=True,
                                        mlflow_tracking_uri=mlflow_tracking_uri), "edit-watermark-detect-train",
                      RESOURCES, RETRIED, UNCACHED)
    table = place(edit_restore_eval(params_yaml=params_yaml, photos=photos.output,
                                    restorer=restorer.outputs["model"], detector=detector.outputs["model"],
                                    watermark_detector=watermark.outputs["model"],
                                    mlflow_tracking_uri=mlflow_tracking_uri), "edit-restore-eval", RESOURCES, RETRIED,
                  UNCACHED)
    registered = place(edit_register(params_yaml=params_yaml, evaluation=table.outputs["table"],
                                     restorer=restorer.outputs["model"], detector=detector.outputs["model"],
                                     watermark_detector=watermark.outputs["model"],
                                     mlflow_tracking_uri=mlflow_tracking_uri), "edit-register", RESOURCES, RETRIED,
                       UNCACHED)
    return Outputs(restorer=restorer.outputs["model"], detector=detector.outputs["model"],
                   watermark_detector=watermark.outputs["model"], table=table.outputs["table"],
                   registered=registered.outputs["registered"])


def compile_pipeline(path: str | Path = PACKAGE_PATH) -> Path:
    path = Path(path)
    compiler.Compiler().compile(pipeline_func=editors, package_path=str(path))
    return path


def run_local(photos: str | Path, root: str | Path, params: Optional[str | Path] = None,
              mlflow_tracking_uri: str = "") -> dict[str, str]:
    """Run with kfp.local's SubprocessRunner in this interpreter; return the output folders."""
    from pipelines.product_studio import _read_params, local_session

    params_yaml = _read_params(params)
    with local_session(root):
        task = editors(photos_uri=str(Path(photos).resolve()), params_yaml=params_yaml,
                       mlflow_tracking_uri=mlflow_tracking_uri)
    return {name: artifact.path for name, artifact in task.outputs.items()}


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.editors", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    compile_cmd = commands.add_parser("compile", help=f"write {PACKAGE_PATH.name}")
    compile_cmd.add_argument("--output", type=Path, default=PACKAGE_PATH)
    local_cmd = commands.add_parser("run-local", help="run with kfp.local (SubprocessRunner) on a photo folder")
    local_cmd.add_argument("--photos", type=Path, default=Path("../shared/data/clothing-dataset-small"),
                           help="photos in train/validation/test folders (default: %(default)s)")
    local_cmd.add_argument("--root", type=Path, default=Path(".scratch/kfp-editors"))
    local_cmd.add_argument("--params", type=Path, default=None)
    local_cmd.add_argument("--mlflow-tracking-uri", default="")
    args = parser.parse_args(argv)
    if args.command == "compile":
        print(compile_pipeline(args.output))
    else:
        print(run_local(args.photos, args.root, args.params, args.mlflow_tracking_uri))
    return 0


if __name__ == "__main__":
    sys.exit(main())
