"""Step 'validate': every file checked by a Great Expectations suite; report, quarantine list, Data Docs."""

from __future__ import annotations

from pathlib import Path

from productstudio import paths
from productstudio.steps.step import Arg, Step


def run(params, raw: Path, out: Path, metrics: Path | None, quarantine: bool) -> dict:
    from productstudio.validation.validate import validate

    report = validate(raw, out, params.validate, quarantine=quarantine)  # ValidationFailed (exit 1) when the suite fails
    if metrics:
        from productstudio.artifacts import write_json_atomic

        write_json_atomic(metrics, {k: v for k, v in report["counts"].items() if k != "per_category"})
    return {"report": report, "out": out}


def format(result: dict) -> str:
    from productstudio.validation.validate import summarize

    return summarize(result["report"], result["out"])


STEP = Step(
    name="validate",
    help="check every file with a Great Expectations suite; report, quarantine list, Data Docs",
    description="Open every file defensively, build the metadata table (hash, format, mode, size, brightness, "
    "contrast, blur, near-duplicate group) and validate it with a Great Expectations suite whose thresholds come "
    "from params.yaml 'validate'. Writes report.json, metadata.csv, quarantine.tsv and data_docs/. Exits 1 with "
    "a summary when the suite fails. Nothing is deleted.",
    run=run,
    format=format,
    params=("validate",),
    args=(
        Arg("--raw", "raw dataset directory", paths.RAW),
        Arg("--out", "report directory", paths.VALIDATION),
        Arg("--metrics", "also write the counts as a small JSON (DVC metrics)"),
        Arg("--quarantine", "leave quarantined files out of the suite and of preprocessing, so the run goes on when "
            "the rest passes", action="store_true"),
    ),
)
