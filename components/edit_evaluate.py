"""KFP component: cut-out quality on the labelled set, ours vs plain u2netp (``productstudio edit evaluate``)."""

from kfp import dsl

from components import COMPONENT_OPTIONS


@dsl.component(**COMPONENT_OPTIONS)
def edit_evaluate(
    params_yaml: str,
    evalset: dsl.Input[dsl.Dataset],
    evaluation: dsl.Output[dsl.Artifact],
    metrics: dsl.Output[dsl.Metrics],
    mlflow_tracking_uri: str = "",
):
    """Mask IoU, MAE and boundary F of the background removal (params edit.cutout) on ``evalset``; per-image
    rows and a sheet of the worst cases in ``evaluation``, the summary in ``metrics``."""
    import json
    import math
    import os
    from pathlib import Path

    import yaml

    from productstudio.config import parse_params
    from productstudio.steps import edit_evaluate as step

    if mlflow_tracking_uri:
        os.environ["MLFLOW_TRACKING_URI"] = mlflow_tracking_uri
    params = parse_params(yaml.safe_load(params_yaml), "params_yaml")
    out = Path(evaluation.path)
    report = step.run(params, evalset=Path(evalset.path), out=out, metrics=None, no_mlflow=not mlflow_tracking_uri)
    print(step.format(report))
    summary = json.loads((out / "metrics.json").read_text())
    for variant, values in summary.items():
        for name, value in (values.items() if isinstance(values, dict) else ()):
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                metrics.log_metric(f"{variant}.{name}", value)
    if report.get("mlflow_run_id"):
        evaluation.metadata["mlflow_run_id"] = report["mlflow_run_id"]
