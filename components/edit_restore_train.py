"""KFP component: train the learned restorer (noise + JPEG) on a photo folder (``productstudio edit restore-train``)."""

from kfp import dsl

from components import COMPONENT_OPTIONS


@dsl.component(**COMPONENT_OPTIONS)
def edit_restore_train(
    params_yaml: str,
    photos: dsl.Input[dsl.Dataset],
    model: dsl.Output[dsl.Model],
    metrics: dsl.Output[dsl.Metrics],
    mlflow_tracking_uri: str = "",
):
    """A blind residual CNN trained on patches of ``photos``/train with params edit.restorer's defects:
    restorer.safetensors, restorer.json, curve.csv and loss.csv in ``model``; the final validation PSNR per
    defect in ``metrics``."""
    import os
    from pathlib import Path

    import yaml

    from productstudio.config import parse_params
    from productstudio.steps import edit_restore_train as step

    if mlflow_tracking_uri:
        os.environ["MLFLOW_TRACKING_URI"] = mlflow_tracking_uri
    params = parse_params(yaml.safe_load(params_yaml), "params_yaml")
    report = step.run(params, photos=Path(photos.path), out=Path(model.path), plots=None, metrics=None,
                      no_mlflow=not mlflow_tracking_uri)
    print(step.format(report))
    for name, value in report["metrics"].items():
        metrics.log_metric(name, value)
    model.metadata.update({"kind": "restorer", "steps": report["steps"]})
    if report.get("mlflow_run_id"):
        model.metadata["mlflow_run_id"] = report["mlflow_run_id"]
