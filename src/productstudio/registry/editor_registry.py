"""The learned editors in the MLflow Model Registry: the restorer, the defect detector (dust, scratches) and the
watermark detector, each a registered model whose versions carry their weights and the evaluation table's evidence.

- ``editor_evidence`` reads what the promotion policy judges from the evaluation table (``edit restore-eval``:
  the learned model and every tuned classical method measured in one run on the same test crops).
- ``register_editor`` logs the model's files (safetensors + JSON: nothing pickled) and the table to a run,
  registers them as a new version tagged with the weights' sha256, the evidence and the git commit, and gives
  it the alias ``challenger``. The same weights measured by the same table return the existing version.

Promotion (judging the challenger, moving ``champion``) is ``promotion.editors.promote_editor``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from productstudio import tracking
from productstudio.artifacts import sha256_file
from productstudio.errors import MissingInput
from productstudio.registry.model_registry import CHALLENGER, Registered, client

EVIDENCE_TAG = "editor.evidence"


@dataclass(frozen=True)
class EditorSpec:
    kind: str
    model_name: str  # the registered model
    files: tuple[str, ...]  # what a version holds
    method: str  # its row in the evaluation table
    defect: str | None = None  # a detector: the defect its mask is scored on
    scores: str | None = None  # ... and the evaluation report's key holding those scores


EDITORS = {
    "restorer": EditorSpec("restorer", "product-studio-restorer", ("restorer.safetensors", "restorer.json"),
                           "restorer (learned)"),
    "detector": EditorSpec("detector", "product-studio-defect-detector", ("detector.safetensors", "detector.json"),
                           "inpaint-ns-learned-detector", "dust", "detector"),
    "watermark_detector": EditorSpec("watermark_detector", "product-studio-watermark-detector",
                                     ("detector.safetensors", "detector.json"), "unblend-learned-watermark-detector",
                                     "watermark", "watermark_detector"),
}


def editor_evidence(kind: str, eval_dir: str | Path) -> dict:
    """The learned model's PSNR beside the best classical method's (true-mask inpainting is an oracle, not a
    method: left out; for watermarks the pretrained OCR boxes un-blended are the baseline) for every defect the
    table measured it on, the table's protocol, and for a detector its mask scores and the true-mask PSNR."""
    spec, path = EDITORS[kind], Path(eval_dir) / "rows.json"
    if not path.is_file():
        raise MissingInput(f"{path}: no evaluation table; run 'productstudio edit restore-eval' with the model first")
    report = json.loads(path.read_text())
    defects = {}
    for defect in dict.fromkeys(row["defect"] for row in report["rows"] if row["method"] == spec.method):
        rows = [row for row in report["rows"] if row["defect"] == defect]
        learned = next(row for row in rows if row["method"] == spec.method)
        # the classical methods: not the floor, not a learned model (this one behind its gate included), not an oracle
        others = [row for row in rows if row["method"] not in ("none", *(s.method for s in EDITORS.values()))
                  and not row.get("learned") and not row.get("true_mask")]
        best = max(others, key=lambda row: row["psnr"], default=None)
        if best is None:
            raise MissingInput(f"{path}: no baseline row for {defect} beside '{spec.method}' to judge it against; "
                               "rerun 'productstudio edit restore-eval'")
        defects[defect] = {"learned": learned["psnr"], "classical": best["psnr"], "classical_method": best["method"]}
    if not defects:
        raise MissingInput(f"{path}: the table has no '{spec.method}' row; run 'productstudio edit restore-eval "
                           f"--{kind} DIR'")
    protocol = {**report["settings"], "test_crops": hashlib.sha256(json.dumps(report["test_crops"]).encode()).hexdigest()}
    evidence = {"protocol": protocol, "defects": defects}
    if spec.defect is not None:
        if spec.scores not in report:
            raise MissingInput(f"{path}: the table holds no {kind} scores (the {spec.defect} defect was not measured)")
        true_mask = max(row["psnr"] for row in report["rows"] if row["defect"] == spec.defect and row.get("true_mask"))
        evidence["detector"] = {**{k: report[spec.scores][k] for k in ("recall", "visible_recall",
                                                                       "false_positive_area", "clean_area")},
                                "true_mask_psnr": true_mask, "defect": spec.defect}
    return evidence


def register_editor(kind: str, model_dir: str | Path, eval_dir: str | Path) -> Registered:
    """Register the model in ``model_dir`` with the table in ``eval_dir`` as its evidence; 'challenger'."""
    import mlflow

    spec, model_dir, eval_dir = EDITORS[kind], Path(model_dir), Path(eval_dir)
    missing = [name for name in spec.files if not (model_dir / name).is_file()]
    if missing:
        raise MissingInput(f"{model_dir}: no {', '.join(missing)}; train the {kind} first")
    evidence = editor_evidence(kind, eval_dir)
    tags = {"model.sha256": sha256_file(model_dir / spec.files[0]), "model.kind": kind,
            "evaluation.sha256": sha256_file(eval_dir / "rows.json"), "git.commit": tracking.git_commit(),
            EVIDENCE_TAG: json.dumps(evidence, sort_keys=True)}
    mlflow_client = client()
    with tracking.server_calls(f"registering '{spec.model_name}'", "no version is left without its files or tags"):
        for mv in mlflow_client.search_model_versions(f"name='{spec.model_name}'"):
            if all(mv.tags.get(k) == tags[k] for k in ("model.sha256", "evaluation.sha256")):
                mlflow_client.set_registered_model_alias(spec.model_name, CHALLENGER, str(mv.version))
                return Registered(spec.model_name, str(mv.version), mv.run_id, False, dict(mv.tags))
        with tracking.start_run(f"register-{kind}", tags={"model.sha256": tags["model.sha256"]}) as run:
            for name in spec.files:
                mlflow.log_artifact(str(model_dir / name), kind)
            for name in ("rows.json", "table.md"):
                if (eval_dir / name).is_file():
                    mlflow.log_artifact(str(eval_dir / name), "evaluation")
            mlflow.log_metrics({f"{d}_psnr": row["learned"] for d, row in evidence["defects"].items()})
        # plain files, not an MLflow Model: the version points at the run's folder (tags travel with the creation)
        if not mlflow_client.search_registered_models(f"name='{spec.model_name}'"):
            mlflow_client.create_registered_model(spec.model_name)
        created = mlflow_client.create_model_version(spec.model_name, f"{run.info.artifact_uri}/{kind}",
                                                     run_id=run.info.run_id, tags=tags)
        mlflow_client.set_registered_model_alias(spec.model_name, CHALLENGER, str(created.version))
    return Registered(spec.model_name, str(created.version), run.info.run_id, True, tags)
