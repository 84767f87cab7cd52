"""KFP component: ingest a source into a raw dataset directory (``productstudio.data.raw.ingest``)."""

from kfp import dsl

from components import COMPONENT_OPTIONS


@dsl.component(**COMPONENT_OPTIONS)
def ingest(params_yaml: str, raw: dsl.Output[dsl.Dataset]):
    """Copy the configured source (params ``ingest`` section) into the ``raw`` dataset directory.

    ``params_yaml`` is the text of a params.yaml; an empty string means all defaults.
    """
    from pathlib import Path

    import yaml

    from productstudio.config import parse_params
    from productstudio.steps import ingest as step

    params = parse_params(yaml.safe_load(params_yaml), "params_yaml")
    report = step.run(params, out=Path(raw.path))
    print(step.format(report))
    raw.metadata["source"] = report["source"]
    raw.metadata["categories"] = report["category_names"]
