"""Build a TorchServe model archive (.mar) of a served task's model, from a local directory or a registry alias.

    from productstudio.serving.archive import build_archive, archive_from_registry
    build_archive("models/train/generator", "serving/model-store", "product-studio-generator")           # fp32
    build_archive("models/quantized", "serving/model-store", "product-studio-generator", variant="int8")
    archive_from_registry("models:/product-studio-generator@champion", "serving/model-store", variant="int8")

The archive holds the project's generic handler (``handler.py``), the task's files as they were saved
(``archive_files`` of the task: for ``generate``, the weights as safetensors or ONNX, never a pickle, and
``config.json``) and ``serving.json`` (task, variant and where the weights came from). It has no
``--serialized-file``/``--model-file``: the task loads its model with the library's own loader.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from productstudio.errors import MissingInput, ServiceError
from productstudio.models.loader import read_config
from productstudio.serving.tasks.registry import DEFAULT_TASK, task_class

HANDLER = Path(__file__).with_name("handler.py")


def _archiver() -> list[str]:
    """torch-model-archiver beside this Python (the venv), else on PATH."""
    beside = Path(sys.executable).with_name("torch-model-archiver")
    found = str(beside) if beside.exists() else shutil.which("torch-model-archiver")
    if not found:
        raise ServiceError("torch-model-archiver is not installed (pip install torch-model-archiver==0.12.0)")
    return [found]


def build_archive(model_dir: str | Path, store: str | Path, name: str, variant: str = "fp32", version: str = "1.0",
                  provenance: dict | None = None, task: str = DEFAULT_TASK, extra: tuple[Path, ...] = ()) -> Path:
    """Write ``store/<name>.mar`` serving ``task`` from a model directory (generate, fp32: ``save_generator``
    output; int8: the quantize output) and return its path. An existing archive of that name is replaced.
    ``extra`` files join the archive beside the task's own (the restore task's optional defect detector)."""
    model_dir, store = Path(model_dir), Path(store)
    files = [*task_class(task).archive_files(model_dir, variant), *extra]
    info = read_config(model_dir) if (model_dir / "config.json").is_file() else {}  # edit: a folder of nets
    store.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="productstudio-mar-") as tmp:
        meta = Path(tmp) / "serving.json"
        meta.write_text(json.dumps({"task": task, "variant": variant, "source": str(model_dir),
                                    "categories": info.get("categories"), **(provenance or {})}, indent=2))
        command = _archiver() + [
            "--model-name", name, "--version", version, "--handler", str(HANDLER),
            "--extra-files", ",".join(str(p) for p in (*files, meta)),
            "--export-path", str(store), "--force",
        ]
        result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        last = (result.stderr or result.stdout).strip().splitlines()
        raise ServiceError(f"torch-model-archiver failed: {last[-1] if last else result.returncode}")
    return store / f"{name}.mar"


def archive_task(mar: str | Path) -> str:
    """The task a .mar serves (its serving.json), the generator's for archives that name none or cannot be read."""
    try:
        with zipfile.ZipFile(mar) as archive:
            return json.loads(archive.read("serving.json")).get("task", DEFAULT_TASK)
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return DEFAULT_TASK


def archive_from_registry(uri: str, store: str | Path, variant: str = "fp32", name: str | None = None) -> Path:
    """Download ``models:/<name>@<alias>`` (or ``/<version>``) and archive its fp32 or int8 weights.
    The archive is named after the registered model and versioned with the registry version."""
    from productstudio.registry.model_registry import artifact_dir, download, resolve

    mv = resolve(uri)
    with tempfile.TemporaryDirectory(prefix="productstudio-model-") as tmp:
        source = artifact_dir(download(mv, tmp), "int8" if variant == "int8" else "generator")
        if source is None:
            raise MissingInput(f"{uri} (version {mv.version}) has no {variant} variant registered")
        provenance = {"source": uri, "registry_uri": uri, "registry_name": mv.name, "registry_version": str(mv.version),
                      "run_id": mv.run_id}
        return build_archive(source, store, name or mv.name, variant, version=str(mv.version), provenance=provenance)


