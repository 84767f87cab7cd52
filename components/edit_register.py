"""KFP component: register the learned restorer and the defect and watermark detectors in MLflow and judge each
challenger
(``productstudio edit register``)."""

from kfp import dsl

from components import COMPONENT_OPTIONS


@dsl.component(**COMPONENT_OPTIONS)
def edit_register(
    params_yaml: str,
    evaluation: dsl.Input[dsl.Artifact],
    registered: dsl.Output[dsl.Artifact],
    restorer: dsl.Input[dsl.Model] = None,
    detector: dsl.Input[dsl.Model] = None,
    mlflow_tracking_uri: str = "",
    watermark_detector: dsl.Input[dsl.Model] = None,
):
    """Register ``restorer``, ``detector`` and ``watermark_detector`` (edit_restore_train / edit_detect_train
    outputs, each optional) with
    ``evaluation`` (the edit_restore_eval table that measured them) as evidence, then apply params
    edit.promote: ``registered/registry.json`` holds the versions and decisions.

    A registry needs a tracking server: with ``mlflow_tracking_uri`` empty nothing is registered and
    ``registry.json`` says so."""
    import json
    import os
    from pathlib import Path

    import yaml

    from productstudio.config import parse_params

    out = Path(registered.path)
    out.mkdir(parents=True, exist_ok=True)
    if not mlflow_tracking_uri:
        (out / "registry.json").write_text(json.dumps({"skipped": "no mlflow_tracking_uri: nothing registered"}))
        registered.metadata["skipped"] = True
        return
    os.environ["MLFLOW_TRACKING_URI"] = mlflow_tracking_uri
    from productstudio.steps import edit_register as step

    params = parse_params(yaml.safe_load(params_yaml), "params_yaml")
    missing = out / "none"  # an absent model: a folder that does not exist, skipped by the step
    report = step.run(params, restorer=Path(restorer.path) if restorer else missing,
                      detector=Path(detector.path) if detector else missing, evaluation=Path(evaluation.path),
                      out=out / "registry.json",
                      watermark_detector=Path(watermark_detector.path) if watermark_detector else missing)
    print(step.format(report))
    for kind, result in report["editors"].items():
        registered.metadata[kind] = {"version": result["registered"]["version"],
                                     "promoted": result["promotion"]["promoted"]}
