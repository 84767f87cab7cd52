"""Step 'edit studio': a folder of product photos -> checked marketplace exports, report, contact sheet."""

from __future__ import annotations

from pathlib import Path

from productstudio import paths
from productstudio.steps.step import NO_MLFLOW, Arg, Step
from productstudio.tracking import log_run


def run(params, in_dir: Path | None, out: Path, preset: str | None, limit: int | None, metrics: Path | None,
        no_mlflow: bool, sign: bool = False) -> dict:
    from productstudio.artifacts import write_json_atomic
    from productstudio.editing.studio import pass_rates, studio_batch

    settings = params.edit
    if sign:
        settings = settings.model_copy(update={"c2pa": settings.c2pa.model_copy(update={"sign": True})})
    names = [name.strip() for name in preset.split(",") if name.strip()] if preset else list(settings.presets)
    source = in_dir or Path(settings.source)
    report = studio_batch(source, out, settings, names, limit=limit or settings.limit)
    if metrics:
        write_json_atomic(metrics, pass_rates(report["summary"]))
    if not no_mlflow:
        report["mlflow_run_id"] = log_run(
            "edit-studio", pass_rates(report["summary"]),
            {"source": str(source), "presets": ",".join(names), "photos": report["summary"]["photos"],
             "settings_key": report["settings_key"], "weights": report["weights"]},
            [(out / "report.json", "studio"), (out / "index.html", "studio"), (out / "samples", "studio/samples")])
    return report


def format(report: dict) -> str:
    s = report["summary"]
    lines = [f"{s['photos']} photos from {report['source']}: {s['exported']} exported, {s['refused']} refused, "
             f"{s['quarantined']} quarantined" + (f" ({report['resumed']} resumed from an earlier run)"
                                                 if report["resumed"] else "")]
    for name, counts in s["presets"].items():
        lines.append(f"  {name:<18} {counts['passed']:>5} exported  {counts['refused']:>4} refused")
    refused = [r for r in report["photos"] if r["status"] != "exported"]
    for row in refused[:10]:
        lines.append(f"  {row['status']}: {row['source']}: {row['reason']}")
    if len(refused) > 10:
        lines.append(f"  ... {len(refused) - 10} more in {report['out']}/report.json")
    lines.append(f"contact sheet: {report['out']}/index.html; report: {report['out']}/report.json")
    if report.get("mlflow_run_id"):
        lines.append(f"logged to MLflow run {report['mlflow_run_id']}")
    return "\n".join(lines)


STEP = Step(
    name="studio",
    help="turn a folder of product photos into marketplace exports (white or transparent studio shots), checked",
    description="For every photo under --in: cut the product out (u2netp plus clean-up), refuse a bad cut-out with a "
    "one-line reason (gates in edit.gates), compose it on each preset's canvas (edit.preset_definitions), encode it "
    "with XMP provenance (and a C2PA manifest with --sign), decode it and check the preset's rules (white background, fill, size, aspect, file size, "
    "no text). Only exports that pass are written, to OUT/<preset>/. OUT/report.json lists every photo, "
    "OUT/index.html is the before/after contact sheet, OUT/quarantine.tsv lists unusable files. Sources are never "
    "modified; an interrupted run resumes where it stopped.",
    run=run,
    format=format,
    params=("edit.source", "edit.limit", "edit.presets", "edit.max_pixels", "edit.cutout", "edit.gates", "edit.c2pa",
            "edit.preset_definitions"),
    args=(
        Arg("--in", "photo folder (default: edit.source)", type=Path, keyword="in_dir"),
        Arg("--out", "output folder", paths.EDIT_STUDIO),
        Arg("--preset", "comma-separated presets, e.g. amazon-main,instagram-4x5 (default: edit.presets)", type=str),
        Arg("--limit", "only the first N photos (sorted paths; default: edit.limit)", type=int),
        Arg("--metrics", "also write the pass rates here (DVC metrics; OUT/metrics.json has them too)"),
        Arg("--sign", "also sign every export with a C2PA manifest (edit.c2pa: your certificate, else a local test "
            "one); signed files differ per run", action="store_true"),
        NO_MLFLOW,
    ),
)
