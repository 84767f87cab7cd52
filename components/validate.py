"""KFP component: check a raw dataset with the Great Expectations suite (``productstudio.validation.validate``)."""

from kfp import dsl

from components import COMPONENT_OPTIONS


@dsl.component(**COMPONENT_OPTIONS)
def validate(
    params_yaml: str,
    raw: dsl.Input[dsl.Dataset],
    validation: dsl.Output[dsl.Artifact],
    metrics: dsl.Output[dsl.Metrics],
    quarantine: bool = False,
):
    """Validate ``raw`` (params ``validate`` section) into the ``validation`` directory.

    ``validation`` holds report.json, metadata.csv, quarantine.tsv and the Data Docs HTML; ``metrics``
    repeats the report's file counts for the KFP UI. A failing suite raises ``ValidationFailed``
    (after writing the report), which fails the task and so the run. With ``quarantine`` the
    unusable files are left out of the suite (and of preprocessing) instead.
    """
    from pathlib import Path

    import yaml

    from productstudio.config import parse_params
    from productstudio.steps import validate as step

    params = parse_params(yaml.safe_load(params_yaml), "params_yaml")
    result = step.run(params, raw=Path(raw.path), out=Path(validation.path), metrics=None, quarantine=quarantine)
    print(step.format(result))
    report = result["report"]
    validation.metadata["success"] = report["success"]
    for name, value in report["counts"].items():
        if isinstance(value, int):
            metrics.log_metric(name, value)
