"""The served tasks: name -> task class. The archive names its task (serving.json) and the handler
looks it up here.

A task class has ``name``; ``load(model_dir, model_name, version, variant, threads) -> task``; ``archive_files(model_dir,
variant) -> [Path]`` (what a .mar holds beside the handler); and, per batch, ``parse(body, accept, options)`` (raises
``BadRequest``; ``options``: query parameters, form fields, X- headers), ``run(requests) -> outputs`` and
``respond(request, output) -> (media type, body)`` (may raise ``BadRequest`` for a request refused after running).
A new served task is one module beside ``generate.py`` and one entry here.
"""

from __future__ import annotations

from productstudio.errors import ParamsError
from productstudio.serving.tasks.edit import EditTask
from productstudio.serving.tasks.generate import GenerateTask
from productstudio.serving.tasks.restore import RestoreTask

DEFAULT_TASK = "generate"  # archives built before tasks were named serve the generator

TASKS = {
    GenerateTask.name: GenerateTask,
    EditTask.name: EditTask,
    RestoreTask.name: RestoreTask,
}


def task_class(name: str):
    """The task class called ``name``; ``ValueError`` naming the known ones otherwise."""
    if name not in TASKS:
        raise ParamsError(f"unknown serving task {name!r} (known: {', '.join(TASKS)})")
    return TASKS[name]
