"""KFP component: turn a validated raw dataset into training tensors (``productstudio.data.preprocess.preprocess``)."""

from kfp import dsl

from components import COMPONENT_OPTIONS


@dsl.component(**COMPONENT_OPTIONS)
def preprocess(
    params_yaml: str,
    raw: dsl.Input[dsl.Dataset],
    validation: dsl.Input[dsl.Artifact],
    dataset: dsl.Output[dsl.Dataset],
):
    """Preprocess ``raw`` as ``validation`` allows (params ``preprocess`` section) into ``dataset``."""
    from pathlib import Path

    import yaml

    from productstudio.config import parse_params
    from productstudio.steps import preprocess as step

    params = parse_params(yaml.safe_load(params_yaml), "params_yaml")
    print(step.format(step.run(params, raw=Path(raw.path), validation=Path(validation.path), out=Path(dataset.path))))
