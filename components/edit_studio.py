"""KFP component: studio exports of a photo folder (``productstudio edit studio``; library: ``productstudio.editing.studio``)."""

from kfp import dsl

from components import COMPONENT_OPTIONS


@dsl.component(**COMPONENT_OPTIONS)
def edit_studio(
    params_yaml: str,
    photos: dsl.Input[dsl.Dataset],
    exports: dsl.Output[dsl.Artifact],
    metrics: dsl.Output[dsl.Metrics],
    presets: str = "",
    limit: int = 0,
    mlflow_tracking_uri: str = "",
):
    """Cut out, compose, check and export every photo of ``photos`` (a folder) per preset into ``exports``.

    ``presets``: comma-separated preset names ("" takes the params' edit.presets); ``limit``: the first N photos
    (0: all). ``exports`` holds <preset>/ folders, report.json, index.html (the contact sheet) and quarantine.tsv;
    ``metrics`` the pass rates. With ``mlflow_tracking_uri`` the pass rates and sample sheets are logged to MLflow.
    """
    import os
    from pathlib import Path

    import yaml

    from productstudio.config import parse_params
    from productstudio.steps import edit_studio as step

    if mlflow_tracking_uri:
        os.environ["MLFLOW_TRACKING_URI"] = mlflow_tracking_uri
    params = parse_params(yaml.safe_load(params_yaml), "params_yaml")
    from productstudio.editing.studio import pass_rates

    report = step.run(params, in_dir=Path(photos.path), out=Path(exports.path), preset=presets or None,
                      limit=limit or None, metrics=None, no_mlflow=not mlflow_tracking_uri)
    print(step.format(report))
    for name, value in pass_rates(report["summary"]).items():
        metrics.log_metric(name, value)
    exports.metadata["presets"] = report["presets"]
    exports.metadata["weights"] = report["weights"]
    if report.get("mlflow_run_id"):
        exports.metadata["mlflow_run_id"] = report["mlflow_run_id"]
