"""KFP component: the restoration/enhancement table, synthetic defects x classical methods
(``productstudio edit restore-eval``)."""

from kfp import dsl

from components import COMPONENT_OPTIONS


@dsl.component(**COMPONENT_OPTIONS)
def edit_restore_eval(
    params_yaml: str,
    photos: dsl.Input[dsl.Dataset],
    table: dsl.Output[dsl.Artifact],
    metrics: dsl.Output[dsl.Metrics],
    restorer: dsl.Input[dsl.Model] = None,
    detector: dsl.Input[dsl.Model] = None,
    defects: str = "",
    mlflow_tracking_uri: str = "",
    watermark_detector: dsl.Input[dsl.Model] = None,
):
    """Every defect of params edit.restore_eval on crops of ``photos`` (train/validation/test folders), every
    classical method tuned on train/validation and measured on test (and ``restorer``, a trained model from
    edit_restore_train, ``detector``, one from edit_detect_train, and ``watermark_detector``, one from
    edit_detect_train with watermark=True, beside them when given): table.md, rows.json and examples.png in
    ``table``, the best PSNR per defect (and the detectors' recall) in ``metrics``."""
    import os
    from pathlib import Path

    import yaml

    from productstudio.config import parse_params
    from productstudio.steps import edit_restore_eval as step

    if mlflow_tracking_uri:
        os.environ["MLFLOW_TRACKING_URI"] = mlflow_tracking_uri
    params = parse_params(yaml.safe_load(params_yaml), "params_yaml")
    report = step.run(params, photos=Path(photos.path), out=Path(table.path), defects=defects or None,
                      restorer=Path(restorer.path) if restorer else None,
                      detector=Path(detector.path) if detector else None, metrics=None,
                      no_mlflow=not mlflow_tracking_uri,
                      watermark_detector=Path(watermark_detector.path) if watermark_detector else None)
    print(step.format(report))
    for name, value in report["metrics"].items():
        metrics.log_metric(name, value)
    if report.get("mlflow_run_id"):
        table.metadata["mlflow_run_id"] = report["mlflow_run_id"]
