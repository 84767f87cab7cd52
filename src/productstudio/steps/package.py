"""Step 'package': a TorchServe .mar of the generator (fp32 or int8), from a registry alias or a local directory."""

from __future__ import annotations

from pathlib import Path

from productstudio import paths
from productstudio.steps.step import Arg, Step


def serve_model_name(params) -> str:
    """The model's name inside TorchServe: serve.model_name, else the registered name."""
    return params.serve.model_name or params.register.model_name


def run(params, alias: str | None, variant: str | None, generator: Path | None, int8: Path | None, name: str | None,
        store: Path) -> dict:
    from productstudio.serving.archive import archive_from_registry, build_archive

    name = name or serve_model_name(params)
    if generator or int8:
        source, variant = (int8, "int8") if int8 else (generator, "fp32")
        mar = build_archive(source, store, name, variant)
    else:
        variant = variant or params.serve.variant
        source = f"models:/{params.register.model_name}@{alias or params.serve.alias}"
        mar = archive_from_registry(source, store, variant, name)
    return {"mar": mar, "variant": variant, "source": source}


def format(result: dict) -> str:
    return f"{result['mar']}: {result['variant']} generator from {result['source']}"


STEP = Step(
    name="package",
    help="build a TorchServe .mar of the generator (fp32 or int8) from a registry alias or a local directory",
    description="By default archives models:/<register.model_name>@<serve.alias> (variant serve.variant) from the "
    "MLflow registry; --generator or --int8 archive a local directory instead. The archive holds the project's "
    "handler, the weights (safetensors or ONNX, never a pickle) and config.json.",
    run=run,
    format=format,
    params=("serve", "register.model_name"),
    args=(
        Arg("--alias", "registry alias (default: serve.alias)", type=str),
        Arg("--variant", "registered variant (default: serve.variant)", type=str, choices=("fp32", "int8")),
        Arg("--generator", "archive this fp32 generator directory (e.g. models/train/generator)"),
        Arg("--int8", "archive this int8 directory (e.g. models/quantized)"),
        Arg("--name", "model name in TorchServe (default: serve.model_name or register.model_name)", type=str),
        Arg("--store", "where the .mar goes", paths.SERVE_STATE / "model-store"),
    ),
)
