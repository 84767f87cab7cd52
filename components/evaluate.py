"""KFP component: FID/KID and domain-classifier metrics of a trained generator (``productstudio.metrics.evaluate.evaluate``)."""

from kfp import dsl

from components import COMPONENT_OPTIONS


@dsl.component(**COMPONENT_OPTIONS)
def evaluate(
    params_yaml: str,
    model: dsl.Input[dsl.Model],
    dataset: dsl.Input[dsl.Dataset],
    classifier: dsl.Input[dsl.Model],
    stats: dsl.Input[dsl.Artifact],
    evaluation: dsl.Output[dsl.Artifact],
    metrics: dsl.Output[dsl.Metrics],
    mlflow_tracking_uri: str = "",
):
    """Evaluate ``model``'s generator (params ``evaluate`` section) into ``evaluation``.

    ``evaluation`` holds metrics.json (the flat numbers DVC tracks) and evaluation.json (every number
    with its protocol); ``metrics`` repeats the flat numbers for the KFP UI. With ``mlflow_tracking_uri``
    the numbers are also logged to MLflow, to the training run when the model's manifest names one in
    that store.
    """
    import json
    import math
    import os
    from pathlib import Path

    import yaml

    from productstudio.config import parse_params
    from productstudio.metrics.evaluate import evaluate as run_evaluate

    if mlflow_tracking_uri:
        os.environ["MLFLOW_TRACKING_URI"] = mlflow_tracking_uri
    settings = parse_params(yaml.safe_load(params_yaml), "params_yaml").evaluate
    out = Path(evaluation.path)
    # evaluate() reads <model>/manifest.json beside the generator for the training run's MLflow id.
    report = run_evaluate(
        Path(model.path) / "generator", Path(dataset.path), Path(classifier.path), Path(stats.path), out,
        settings, track=bool(mlflow_tracking_uri),
    )
    flat = json.loads((out / "metrics.json").read_text())
    for name, value in flat.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            metrics.log_metric(name, value)
    evaluation.metadata["data_version"] = report["data_version"]
    if report.get("mlflow_run_id"):
        evaluation.metadata["mlflow_run_id"] = report["mlflow_run_id"]
