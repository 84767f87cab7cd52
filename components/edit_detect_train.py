"""KFP component: train the learned defect detector, or the watermark detector, on a photo folder
(``productstudio edit detect-train [--watermark]``)."""

from kfp import dsl

from components import COMPONENT_OPTIONS


@dsl.component(**COMPONENT_OPTIONS)
def edit_detect_train(
    params_yaml: str,
    photos: dsl.Input[dsl.Dataset],
    model: dsl.Output[dsl.Model],
    metrics: dsl.Output[dsl.Metrics],
    mlflow_tracking_uri: str = "",
    watermark: bool = False,
):
    """A dilated CNN trained on regions of ``photos``/train with params edit.detector's defects (with ``watermark``:
    edit.watermark_detector's, tiled text) and their exact masks: detector.safetensors, detector.json (with its
    threshold), curve.csv, loss.csv and thresholds.csv in ``model``; the validation recall and false-positive
    area in ``metrics``."""
    import os
    from pathlib import Path

    import yaml

    from productstudio.config import parse_params
    from productstudio.steps import edit_detect_train as step

    if mlflow_tracking_uri:
        os.environ["MLFLOW_TRACKING_URI"] = mlflow_tracking_uri
    params = parse_params(yaml.safe_load(params_yaml), "params_yaml")
    report = step.run(params, photos=Path(photos.path), out=Path(model.path), plots=None, metrics=None,
                      no_mlflow=not mlflow_tracking_uri, watermark=watermark)
    print(step.format(report))
    for name, value in report["metrics"].items():
        metrics.log_metric(name, value)
    model.metadata.update({"kind": "watermark-detector" if watermark else "defect-detector", "steps": report["steps"], "threshold": report["threshold"],
                           "min_blob": report["validation"]["min_blob"]})
    if report.get("mlflow_run_id"):
        model.metadata["mlflow_run_id"] = report["mlflow_run_id"]
