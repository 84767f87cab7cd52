"""The table of steps: the CLI is built from it, dvc.yaml and components/ are checked against it.

A new step is its library module, a ``steps/<step>.py`` (flags, run, format), its params section, one entry
here, one DVC stage and one KFP component.
"""

from __future__ import annotations

from productstudio.steps import (
    deploy,
    edit,
    edit_detect_train,
    edit_evalset,
    edit_evaluate,
    edit_register,
    edit_restore_eval,
    edit_restore_train,
    edit_studio,
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
    team_registry,
    train,
    train_classifier,
    validate,
    web,
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
# Editing's DVC stages and KFP components: commands of the 'edit' group (productstudio edit <target>).
EDIT_PIPELINE = (edit_evalset.STEP, edit_evaluate.STEP, edit_restore_train.STEP, edit_detect_train.STEP,
                 edit_detect_train.WATERMARK_STEP, edit_restore_eval.STEP, edit_register.STEP, edit_studio.STEP)
# Commands around the pipeline (no DVC stage).
COMMANDS = (retrain.STEP, package.STEP, serve.STEP, summary.STEP, web.STEP)
# Commands with targets: productstudio <group> <target>.
GROUPS = {
    "deploy": (deploy.HELP, deploy.DESCRIPTION, deploy.TARGETS),
    "edit": (edit.HELP, edit.DESCRIPTION, edit.TARGETS),
    "registry": (team_registry.HELP, team_registry.DESCRIPTION, team_registry.TARGETS),
}


def by_words(words: list[str]):
    """The step a command line names: ``["train"]`` or ``["edit", "studio"]``."""
    if words and words[0] in GROUPS:
        for step in GROUPS[words[0]][2]:
            if len(words) > 1 and step.name == words[1]:
                return step
        raise KeyError(" ".join(words[:2]))
    return by_name(words[0])


def by_name(name: str):
    """The pipeline step or command called ``name`` (as typed after 'productstudio')."""
    for step in PIPELINE + COMMANDS:
        if step.name == name:
            return step
    raise KeyError(name)
