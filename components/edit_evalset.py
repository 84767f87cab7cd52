"""KFP component: the labelled set of cut-outs on real backgrounds (``productstudio edit evalset``)."""

from kfp import dsl

from components import COMPONENT_OPTIONS


@dsl.component(**COMPONENT_OPTIONS)
def edit_evalset(params_yaml: str, photos: dsl.Input[dsl.Dataset], evalset: dsl.Output[dsl.Dataset]):
    """Build the labelled set (params edit.evalset_size, edit.evalset_seed) from ``photos`` (a folder with
    train/validation/test) into ``evalset``: images/, masks/, index.csv and a contact sheet."""
    from pathlib import Path

    import yaml

    from productstudio.config import parse_params
    from productstudio.steps import edit_evalset as step

    params = parse_params(yaml.safe_load(params_yaml), "params_yaml")
    report = step.run(params, source=Path(photos.path), out=Path(evalset.path), size=None)
    print(step.format(report))
    evalset.metadata["size"] = params.edit.evalset_size
    evalset.metadata["seed"] = params.edit.evalset_seed
