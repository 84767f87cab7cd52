"""KFP components: one thin ``@dsl.component`` per pipeline step.

Each component imports its library function inside its body (KFP ships only the function's
source to the container) and calls it; the logic lives in ``src/productstudio``.

Every component runs in the same image, built from ``deploy/docker/Dockerfile``, which has
productstudio (and kfp) installed; hence ``install_kfp_package=False`` everywhere. Set
``PRODUCTSTUDIO_IMAGE`` when compiling to point the pipeline at another build of that image
(then the compiled YAML differs from the committed one, on purpose).
"""

from __future__ import annotations

import os

from productstudio import __version__

DEFAULT_IMAGE = f"ghcr.io/productstudio/productstudio:{__version__}"
BASE_IMAGE = os.environ.get("PRODUCTSTUDIO_IMAGE") or DEFAULT_IMAGE

# The options every component shares; kfp.local's SubprocessRunner would otherwise `pip install kfp`.
COMPONENT_OPTIONS = {"base_image": BASE_IMAGE, "install_kfp_package": False}

from components.edit_evalset import edit_evalset  # noqa: E402  (the components need the constants above)
from components.edit_evaluate import edit_evaluate  # noqa: E402
from components.edit_studio import edit_studio  # noqa: E402
from components.evaluate import evaluate  # noqa: E402
from components.ingest import ingest  # noqa: E402
from components.preprocess import preprocess  # noqa: E402
from components.promote import promote  # noqa: E402
from components.quantize import quantize  # noqa: E402
from components.real_stats import real_stats  # noqa: E402
from components.register import register  # noqa: E402
from components.train import train  # noqa: E402
from components.train_classifier import train_classifier  # noqa: E402
from components.validate import validate  # noqa: E402

__all__ = [
    "BASE_IMAGE",
    "DEFAULT_IMAGE",
    "edit_evalset",
    "edit_evaluate",
    "edit_studio",
    "evaluate",
    "ingest",
    "preprocess",
    "promote",
    "quantize",
    "real_stats",
    "register",
    "train",
    "train_classifier",
    "validate",
]
