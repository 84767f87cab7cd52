"""The pyfunc model of each served task: the file MLflow logs "from code", its signature and input example.

A new task is one pyfunc module beside ``generate.py`` and one entry in ``PYFUNC_TASKS``. This table is
not the logged code: MLflow runs only the task's own file when it loads a model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).parent


@dataclass(frozen=True)
class PyfuncTask:
    code: Path  # the PythonModel file, logged "from code"
    signature: Callable  # the model's saved config dict -> mlflow ModelSignature
    input_example: dict  # columns -> values, for a pandas DataFrame


def generate_signature(info: dict):
    """(category, seed) rows -> uint8 images (N, C, H, W); ``params={"variant": "int8"}`` for the int8 variant."""
    import numpy as np
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema, TensorSpec

    model = info["model"]
    return ModelSignature(
        inputs=Schema([ColSpec("long", "category"), ColSpec("long", "seed")]),
        outputs=Schema([TensorSpec(np.dtype(np.uint8), (-1, model["channels"], model["image_size"], model["image_size"]))]),
        params=ParamSchema([ParamSpec("variant", "string", "fp32")]),
    )


PYFUNC_TASKS = {
    "generate": PyfuncTask(HERE / "generate.py", generate_signature, {"category": [0, 1], "seed": [0, 1]}),
}
