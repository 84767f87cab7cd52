"""KFP component: train the generator (``productstudio.training.loop.train``)."""

from kfp import dsl

from components import COMPONENT_OPTIONS


@dsl.component(**COMPONENT_OPTIONS)
def train(
    params_yaml: str,
    dataset: dsl.Input[dsl.Dataset],
    stats: dsl.Input[dsl.Artifact],
    model: dsl.Output[dsl.Model],
    loss: dsl.Output[dsl.Artifact],
    baseline: bool = False,
    mlflow_tracking_uri: str = "",
):
    """Train on ``dataset`` (params ``train`` section) into ``model``; the curves go to ``loss``.

    ``model`` is the training directory: ``generator/`` (what evaluation and serving load), ``samples/``,
    ``checkpoints/`` and ``manifest.json``. ``loss`` holds ``train_loss.csv`` and, every ``train.kid_every``
    steps, ``train_kid.csv``: KID of EMA samples against ``stats`` (the real-stats task's cached test
    features), the time-to-quality curve; the same files DVC plots.

    ``baseline``: train the baseline instead, ``train`` overlaid with ``baseline`` (default: a CVAE),
    as ``productstudio train --baseline`` does.

    MLflow: a cluster may have no tracking server, so nothing is logged unless ``mlflow_tracking_uri``
    is given; then it becomes the task's ``MLFLOW_TRACKING_URI`` and the run id lands in the model's
    manifest (and metadata), where the evaluate task picks it up.
    """
    import os
    from pathlib import Path

    import yaml

    from productstudio.config import parse_params
    from productstudio.steps import train as step

    if mlflow_tracking_uri:
        os.environ["MLFLOW_TRACKING_URI"] = mlflow_tracking_uri
    params = parse_params(yaml.safe_load(params_yaml), "params_yaml")
    result = step.run(params, processed=Path(dataset.path), out=Path(model.path), plots=Path(loss.path), device="auto",
                      no_mlflow=not mlflow_tracking_uri, baseline=baseline, real_stats=Path(stats.path))
    print(step.format(result))
    manifest = result["manifest"]
    summary = manifest["summary"]
    model.metadata["kind"] = manifest["params"]["model"]
    model.metadata["steps"] = summary["steps"]
    model.metadata["stopped_by"] = summary["stopped_by"]
    model.metadata["generator"] = "generator"
    if manifest.get("mlflow_run_id"):
        model.metadata["mlflow_run_id"] = manifest["mlflow_run_id"]
