"""Step 'edit register': register the learned restorer and the defect and watermark detectors in MLflow, judge each
challenger."""

from __future__ import annotations

from pathlib import Path

from productstudio import paths
from productstudio.steps.step import Arg, Step


def run(params, restorer: Path, detector: Path, evaluation: Path, out: Path | None,
        watermark_detector: Path | None = None) -> dict:
    from productstudio.artifacts import write_json_atomic
    from productstudio.errors import MissingInput
    from productstudio.promotion.editors import promote_editor
    from productstudio.registry.editor_registry import register_editor
    from productstudio.registry.model_registry import registered_record

    results = {}
    for kind, model_dir in (("restorer", restorer), ("detector", detector), ("watermark_detector", watermark_detector)):
        if model_dir is None or not model_dir.is_dir():
            continue
        registered = register_editor(kind, model_dir, evaluation)
        results[kind] = {"registered": registered_record(registered),
                         "promotion": promote_editor(kind, params.edit.promote)}
    if not results:
        raise MissingInput(f"none of {restorer}, {detector}, {watermark_detector} exists: train a learned editor first")
    report = {"evaluation": str(evaluation), "editors": results}
    if out:
        write_json_atomic(out, report)
    return report


def format(report: dict) -> str:
    lines = []
    for kind, result in report["editors"].items():
        registered, promotion = result["registered"], result["promotion"]
        new = "new version" if registered["created"] else "already registered as version"
        lines.append(f"{kind}: {registered['name']} {new} {registered['version']} (challenger)")
        lines.append(f"  {promotion['reason']}")
        lines.append(f"  champion: version {promotion['champion_after'] or 'none'}")
    return "\n".join(lines)


STEP = Step(
    name="register",
    help="register the learned restorer and defect/watermark detectors in MLflow and judge each against its champion",
    description="Each trained editor (--restorer, --detector, --watermark-detector; skipped when absent) is logged "
    "to MLflow with its "
    "weights (safetensors + JSON) and the evaluation table, registered as a new version (the same weights and "
    "table return the existing one) and given the alias 'challenger'. Then the policy of params.yaml "
    "edit.promote decides whether it becomes 'champion': the restorer must beat the best tuned classical filter "
    "by restorer_margin_db at restorer_targets and not be worse at any other level; the detector needs "
    "detector_min_recall with at most detector_max_false_positive_area, and detect-then-fill within "
    "detector_max_gap_db of inpainting with the true mask (the watermark detector: the same rules on the watermark "
    "rows, its un-blended result against the OCR boxes un-blended); a challenger must also beat the current champion "
    "on a table measured the same way. The one-line reason is printed and tagged on the version.",
    run=run,
    format=format,
    params=("edit.promote",),
    args=(
        Arg("--restorer", "the trained restorer's folder", paths.EDIT_RESTORER),
        Arg("--detector", "the trained detector's folder", paths.EDIT_DETECTOR),
        Arg("--watermark-detector", "the trained watermark detector's folder (edit watermark-train)",
            paths.EDIT_WATERMARK_DETECTOR),
        Arg("--evaluation", "the evaluation table's folder (edit restore-eval with both models)",
            paths.EDIT_RESTORE_EVAL),
        Arg("--out", "also write the registrations and decisions here (JSON)"),
    ),
)
