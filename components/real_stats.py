"""KFP component: cache the real images' Inception features (``productstudio.metrics.real_stats.compute_real_stats``)."""

from kfp import dsl

from components import COMPONENT_OPTIONS


@dsl.component(**COMPONENT_OPTIONS)
def real_stats(
    params_yaml: str,
    dataset: dsl.Input[dsl.Dataset],
    stats: dsl.Output[dsl.Artifact],
):
    """Extract the features the metrics in params ``evaluate.metrics`` compare against into ``stats``.

    With ``evaluate.floor`` it also records real train vs real test at the same counts (``floor.json``).
    """
    from pathlib import Path

    import yaml

    from productstudio.config import parse_params
    from productstudio.steps import real_stats as step

    params = parse_params(yaml.safe_load(params_yaml), "params_yaml")
    result = step.run(params, processed=Path(dataset.path), out=Path(stats.path), device="auto")
    print(step.format(result))
    stats.metadata["data_version"] = result["data_version"]
    stats.metadata["counts"] = result["counts"]
