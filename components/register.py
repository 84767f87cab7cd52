"""KFP component: register the trained generator in the MLflow Model Registry (``productstudio.registry.model_registry.register``)."""

from kfp import dsl

from components import COMPONENT_OPTIONS


@dsl.component(**COMPONENT_OPTIONS)
def register(
    params_yaml: str,
    model: dsl.Input[dsl.Model],
    evaluation: dsl.Input[dsl.Artifact],
    dataset: dsl.Input[dsl.Dataset],
    int8: dsl.Input[dsl.Model],
    registered: dsl.Output[dsl.Artifact],
    mlflow_tracking_uri: str = "",
):
    """Register ``model``'s generator under params ``register.model_name`` with the alias 'challenger',
    tagged with the data version, git commit, params hash and ``evaluation``'s metrics and protocol;
    ``int8`` (the quantize task's output) is logged as the version's int8 variant.

    A registry needs a tracking server: with ``mlflow_tracking_uri`` empty nothing is registered and
    ``registered/registered.json`` says so (promote then skips too).
    """
    import json
    import os
    from pathlib import Path

    import yaml

    from productstudio.config import parse_params

    out = Path(registered.path)
    out.mkdir(parents=True, exist_ok=True)
    if not mlflow_tracking_uri:
        (out / "registered.json").write_text(json.dumps({"skipped": "no mlflow_tracking_uri: nothing registered"}))
        registered.metadata["skipped"] = True
        return
    os.environ["MLFLOW_TRACKING_URI"] = mlflow_tracking_uri
    from productstudio.steps import register as step

    params = parse_params(yaml.safe_load(params_yaml), "params_yaml")
    result = step.run(params, generator=Path(model.path) / "generator", evaluation=Path(evaluation.path),
                      processed=Path(dataset.path), int8=Path(int8.path), out=out)
    print(step.format(result))
    registered.metadata.update(name=result["name"], version=result["version"], created=result["created"])
