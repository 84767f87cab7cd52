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
    from productstudio.steps import evaluate as step

    if mlflow_tracking_uri:
        os.environ["MLFLOW_TRACKING_URI"] = mlflow_tracking_uri
    params = parse_params(yaml.safe_load(params_yaml), "params_yaml")
    out = Path(evaluation.path)
    # The evaluation reads <model>/manifest.json beside the generator for the training run's MLflow id.
    report = step.run(params, generator=Path(model.path) / "generator", processed=Path(dataset.path),
                      classifier=Path(classifier.path), cache=Path(stats.path), out=out, device="auto",
                      no_mlflow=not mlflow_tracking_uri)
    print(step.format(report))
    flat = json.loads((out / "metrics.json").read_text())
    for name, value in flat.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            metrics.log_metric(name, value)
    evaluation.metadata["data_version"] = report["data_version"]
    if report.get("mlflow_run_id"):
        evaluation.metadata["mlflow_run_id"] = report["mlflow_run_id"]
