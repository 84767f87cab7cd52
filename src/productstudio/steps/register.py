"""Step 'register': the generator (and its int8 variant) as a new MLflow model version, alias 'challenger'."""

from __future__ import annotations

from pathlib import Path

from productstudio import paths
from productstudio.steps.step import Arg, Step


def run(params, generator: Path, evaluation: Path, processed: Path, int8: Path | None, out: Path | None) -> dict:
    from productstudio.registry.model_registry import register, registered_record

    notes = []
    if int8 and not int8.is_dir():
        notes.append(f"no int8 variant at {int8}: registering fp32 only")
        int8 = None
    result = register(generator, evaluation, processed, params, int8_dir=int8)
    record = registered_record(result)
    if out:
        from productstudio.artifacts import write_json_atomic

        write_json_atomic(out / "registered.json", record)
    # Another process may have registered a newer model meanwhile (a shared server): say who holds the alias.
    from productstudio.registry.model_registry import CHALLENGER, client, version_with_alias

    holder = version_with_alias(client(), result.name, CHALLENGER)
    return {"notes": notes, "created": result.created, "name": result.name, "version": result.version, "tags": result.tags,
            "challenger": str(holder.version) if holder is not None else None}


def format(report: dict) -> str:
    lines = list(report["notes"])
    tags = report["tags"]
    if report["created"]:
        holder = report.get("challenger", report["version"])
        alias = ("with alias 'challenger'" if holder == report["version"]
                 else f"('challenger' is on version {holder}, registered meanwhile)")
        lines.append(f"registered {report['name']} version {report['version']} ({tags['variants']}) {alias}; "
                     f"data {tags['data.version'][:12]}, params {tags['params.hash'][:12]}")
    else:
        lines.append(f"{report['name']} version {report['version']} already holds these weights, data, params and commit: "
                     "not registered again")
    return "\n".join(lines)


STEP = Step(
    name="register",
    help="register the generator (and an int8 variant) in the MLflow Model Registry as the 'challenger'",
    description="Log the generator to MLflow as a pyfunc 'from code' (safetensors weights, no pickle) with a "
    "signature (category, seed -> uint8 images) and an input example, register it under register.model_name "
    "(params.yaml), tag the version with data.version, git.commit, params.hash, model.sha256 and the evaluation "
    "metrics with their protocol (metrics.protocol), and give it the alias 'challenger'. With --int8 DIR the "
    "quantized variant is a second artifact of the same version. The same weights, data, params and commit are "
    "not registered twice. Store: MLFLOW_TRACKING_URI (default sqlite:///mlflow.db) or a server URL.",
    run=run,
    format=format,
    params=("register", "preprocess", "train"),
    args=(
        Arg("--generator", "generator directory", paths.GENERATOR),
        Arg("--evaluation", "metrics.json + evaluation.json", paths.EVALUATION),
        Arg("--processed", "processed dataset, for data.version", paths.PROCESSED),
        Arg("--int8", "int8 variant directory (quantization output); skipped when absent"),
        Arg("--out", "write OUT/registered.json (name, version, tags) for DVC"),
    ),
)
