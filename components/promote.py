"""KFP component: judge the challenger against the champion (``productstudio.promotion.champion.promote_challenger``)."""

from kfp import dsl

from components import COMPONENT_OPTIONS


@dsl.component(**COMPONENT_OPTIONS)
def promote(
    params_yaml: str,
    registered: dsl.Input[dsl.Artifact],
    dataset: dsl.Input[dsl.Dataset],
    stats: dsl.Input[dsl.Artifact],
    decision: dsl.Output[dsl.Artifact],
    mlflow_tracking_uri: str = "",
):
    """Apply params ``promote`` to the 'challenger' and 'champion' of params ``register.model_name``,
    measured on the same seeds against ``stats`` (the cached real features); move 'champion' or refuse.

    ``decision/decision.json`` holds the decision, its one-line reason and every rule's evidence (also
    tagged on the model version). Skipped when ``registered`` says nothing was registered.
    """
    import json
    import os
    import tempfile
    from pathlib import Path

    import yaml

    from productstudio.config import parse_params

    out = Path(decision.path)
    out.mkdir(parents=True, exist_ok=True)
    if registered.metadata.get("skipped") or not mlflow_tracking_uri:
        (out / "decision.json").write_text(json.dumps({"skipped": "nothing registered: no mlflow_tracking_uri"}))
        decision.metadata["skipped"] = True
        return
    os.environ["MLFLOW_TRACKING_URI"] = mlflow_tracking_uri
    from productstudio.steps import promote as step

    params = parse_params(yaml.safe_load(params_yaml), "params_yaml")
    # Generated features are cached in the registry beside each version; a scratch folder is enough here.
    result = step.run(params, processed=Path(dataset.path), cache=Path(stats.path), out=out,
                      work=Path(tempfile.mkdtemp(prefix="promote-")), device="auto", strict=False)
    decision.metadata.update(promoted=result["promoted"], reason=result["reason"], challenger=result["challenger"],
                             champion=result["champion_after"] or "")
    print(step.format(result))
