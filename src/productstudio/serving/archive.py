"""Build a TorchServe model archive (.mar) of the generator, fp32 or int8, from a local directory or a registry alias.

    from productstudio.serving.archive import build_archive, archive_from_registry
    build_archive("models/train/generator", "serving/model-store", "product-studio-generator")           # fp32
    build_archive("models/quantized", "serving/model-store", "product-studio-generator", variant="int8")
    archive_from_registry("models:/product-studio-generator@champion", "serving/model-store", variant="int8")

The archive holds the project's handler (``handler.py``), the weights as they were saved (safetensors or
ONNX, never a pickle), ``config.json`` and ``serving.json`` (variant and where the weights came from). It has
no ``--serialized-file``/``--model-file``: the handler loads the weights with the library's own loaders.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from productstudio.models.io import CONFIG, WEIGHTS
from productstudio.quantization.quantize import INT8_FILE

HANDLER = Path(__file__).with_name("handler.py")
VARIANTS = {"fp32": WEIGHTS, "int8": INT8_FILE}


def _archiver() -> list[str]:
    """torch-model-archiver beside this Python (the venv), else on PATH."""
    beside = Path(sys.executable).with_name("torch-model-archiver")
    found = str(beside) if beside.exists() else shutil.which("torch-model-archiver")
    if not found:
        raise RuntimeError("torch-model-archiver is not installed (pip install torch-model-archiver==0.12.0)")
    return [found]


def build_archive(model_dir: str | Path, store: str | Path, name: str, variant: str = "fp32", version: str = "1.0",
                  provenance: dict | None = None) -> Path:
    """Write ``store/<name>.mar`` from a generator directory (fp32: ``save_generator`` output; int8: the
    quantize output) and return its path. An existing archive of that name is replaced."""
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {', '.join(VARIANTS)}, got {variant!r}")
    model_dir, store = Path(model_dir), Path(store)
    weights = model_dir / VARIANTS[variant]
    if not weights.exists():
        hint = " (run productstudio quantize)" if variant == "int8" else ""
        raise FileNotFoundError(f"{model_dir}: no {weights.name}; not a {variant} generator{hint}")
    info = json.loads((model_dir / CONFIG).read_text())
    store.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="productstudio-mar-") as tmp:
        meta = Path(tmp) / "serving.json"
        meta.write_text(json.dumps({"variant": variant, "source": str(model_dir), "categories": info.get("categories"),
                                    **(provenance or {})}, indent=2))
        command = _archiver() + [
            "--model-name", name, "--version", version, "--handler", str(HANDLER),
            "--extra-files", ",".join(str(p) for p in (weights, model_dir / CONFIG, meta)),
            "--export-path", str(store), "--force",
        ]
        result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        last = (result.stderr or result.stdout).strip().splitlines()
        raise RuntimeError(f"torch-model-archiver failed: {last[-1] if last else result.returncode}")
    return store / f"{name}.mar"


def archive_from_registry(uri: str, store: str | Path, variant: str = "fp32", name: str | None = None) -> Path:
    """Download ``models:/<name>@<alias>`` (or ``/<version>``) and archive its fp32 or int8 weights.
    The archive is named after the registered model and versioned with the registry version."""
    from productstudio.registry.model_registry import artifact_dir, download, resolve

    mv = resolve(uri)
    with tempfile.TemporaryDirectory(prefix="productstudio-model-") as tmp:
        source = artifact_dir(download(mv, tmp), "int8" if variant == "int8" else "generator")
        if source is None:
            raise FileNotFoundError(f"{uri} (version {mv.version}) has no {variant} variant registered")
        provenance = {"source": uri, "registry_uri": uri, "registry_name": mv.name, "registry_version": str(mv.version),
                      "run_id": mv.run_id}
        return build_archive(source, store, name or mv.name, variant, version=str(mv.version), provenance=provenance)


