"""KFP component: train the generator on a Kubeflow Trainer TrainJob (``productstudio.deploy.trainjob``)."""

from kfp import dsl

from components import COMPONENT_OPTIONS


@dsl.component(**COMPONENT_OPTIONS)
def train_trainjob(
    params_yaml: str,
    dataset: dsl.Input[dsl.Dataset],
    model: dsl.Output[dsl.Model],
    loss: dsl.Output[dsl.Artifact],
    mlflow_tracking_uri: str = "",
):
    """Train as the ``train`` component does, but on N nodes of a TrainJob (params ``trainjob``, ``train``).

    This task only launches and waits: it pushes ``dataset`` to the DVC remote ``trainjob.data_remote``,
    creates a TrainJob (its name: ``trainjob.name`` plus a random suffix) through the Kubernetes API with the
    pod's service account, waits for its Complete or Failed condition (at most ``trainjob.timeout_minutes``)
    and copies what the job's node 0 published under ``trainjob.output_uri`` into ``model`` (the training
    directory: ``generator/``, ``manifest.json``, samples, checkpoints) and ``loss`` (the loss curves), the same
    layout the ``train`` component writes. The service account needs RBAC to create/get/delete TrainJobs
    and get the Secret ``trainjob.credentials_secret`` (deploy/kubeflow-trainer/launcher-rbac.yaml).

    MLflow: the job logs to ``mlflow_tracking_uri`` when given, else to ``trainjob.mlflow_tracking_uri``.
    No periodic KID curve: the job does not get the real-stats features.
    """
    import json
    from pathlib import Path

    import yaml

    from productstudio.config import parse_params
    from productstudio.deploy import trainjob

    params = parse_params(yaml.safe_load(params_yaml), "params_yaml")
    result = trainjob.train_on_cluster(params, Path(dataset.path), Path(model.path), Path(loss.path),
                                       mlflow_tracking_uri=mlflow_tracking_uri)
    manifest = json.loads((Path(model.path) / "manifest.json").read_text())
    summary = manifest["summary"]
    print(f"TrainJob {result['namespace']}/{result['name']}: {manifest['params']['model']} trained for "
          f"{summary['steps']} steps (stopped by {summary['stopped_by']})")
    model.metadata["kind"] = manifest["params"]["model"]
    model.metadata["steps"] = summary["steps"]
    model.metadata["stopped_by"] = summary["stopped_by"]
    model.metadata["generator"] = "generator"
    model.metadata["trainjob"] = f"{result['namespace']}/{result['name']}"
    model.metadata["data_md5"] = result["data_md5"]
    if manifest.get("mlflow_run_id"):
        model.metadata["mlflow_run_id"] = manifest["mlflow_run_id"]
