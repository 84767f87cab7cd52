"""The table of steps: the CLI is built from it, dvc.yaml and components/ are checked against it.

A new step is its library module, a ``steps/<step>.py`` (flags, run, format), its params section, one entry
here, one DVC stage and one KFP component.
"""

from __future__ import annotations

from productstudio.steps import (
    deploy,
    evaluate,
    ingest,
    package,
    preprocess,
    promote,
    quantize,
    real_stats,
    register,
    retrain,
    serve,
    summary,
    train,
    train_classifier,
    validate,
)

# The pipeline's steps, in the order 'dvc repro' runs them (each is a DVC stage and a KFP component).
PIPELINE = (
    ingest.STEP,
    validate.STEP,
    preprocess.STEP,
    train.STEP,
    train_classifier.STEP,
    real_stats.STEP,
    evaluate.STEP,
    quantize.STEP,
    register.STEP,
    promote.STEP,
)
# Commands around the pipeline (no DVC stage).
COMMANDS = (retrain.STEP, package.STEP, serve.STEP, summary.STEP)
# Commands with targets: productstudio <group> <target>.
GROUPS = {"deploy": (deploy.HELP, deploy.DESCRIPTION, deploy.TARGETS)}


def by_name(name: str):
    """The pipeline step or command called ``name`` (as typed after 'productstudio')."""
    for step in PIPELINE + COMMANDS:
        if step.name == name:
            return step
    raise KeyError(name)
