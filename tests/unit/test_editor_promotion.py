"""The learned editors' lifecycle: the policy (beat the tuned classical methods by the issue's margins, then the
champion, under one protocol) and, against a real MLflow store, registration with the evaluation table as
evidence and a promotion that moves 'champion' only when the policy says so."""

from __future__ import annotations

import json

import pytest
import torch

from productstudio.config import EditorPromoteSettings, Params
from productstudio.promotion.editor_policy import decide_editor

SETTINGS = EditorPromoteSettings()


def restorer_evidence(noise25: float, jpeg10: float, jpeg30: float = 32.8, crop: int = 256) -> dict:
    return {"protocol": {"crop": crop, "seed": 0},
            "defects": {"noise25": {"learned": noise25, "classical": 29.4, "classical_method": "bilateral"},
                        "jpeg10": {"learned": jpeg10, "classical": 28.3, "classical_method": "bilateral"},
                        "jpeg30": {"learned": jpeg30, "classical": 32.8, "classical_method": "bilateral"}}}


def test_the_restorer_must_beat_the_classical_filters_by_the_margin():
    refused = decide_editor("restorer", restorer_evidence(26.6, 28.0), None, SETTINGS)
    assert not refused.promoted and refused.reason.startswith("refused by classical: noise25: 26.60 dB vs bilateral")
    close = decide_editor("restorer", restorer_evidence(29.7, 28.9), None, SETTINGS)  # +0.3 at noise 25: short
    assert not close.promoted and "needs +0.50" in close.reason
    worse_elsewhere = decide_editor("restorer", restorer_evidence(30.0, 28.9, jpeg30=32.5), None, SETTINGS)
    assert not worse_elsewhere.promoted and "jpeg30" in worse_elsewhere.reason
    first = decide_editor("restorer", restorer_evidence(30.0, 28.9), None, SETTINGS)
    assert first.promoted and first.first_model


def test_a_challenger_must_also_beat_the_champion_on_the_same_protocol():
    champion = restorer_evidence(30.0, 28.9)
    assert not decide_editor("restorer", restorer_evidence(29.95, 28.9), champion, SETTINGS).promoted
    assert decide_editor("restorer", restorer_evidence(30.2, 29.0), champion, SETTINGS).promoted
    other_protocol = decide_editor("restorer", restorer_evidence(31.0, 29.5, crop=128), champion, SETTINGS)
    assert not other_protocol.promoted and "protocol" in other_protocol.reason


def detector_evidence(fill: float, recall: float, false_positive_area: float = 0.004) -> dict:
    return {"protocol": {"crop": 256},
            "defects": {"dust": {"learned": fill, "classical": 29.8, "classical_method": "inpaint-telea-detected"}},
            "detector": {"recall": recall, "visible_recall": recall, "false_positive_area": false_positive_area,
                         "clean_area": 0.001, "true_mask_psnr": 49.4}}


def test_the_detector_needs_its_recall_and_a_fill_close_to_the_true_mask():
    assert decide_editor("detector", detector_evidence(47.9, 0.96), None, SETTINGS).promoted
    low_recall = decide_editor("detector", detector_evidence(47.9, 0.93), None, SETTINGS)
    assert not low_recall.promoted and "recall 0.930" in low_recall.reason
    far = decide_editor("detector", detector_evidence(44.0, 0.96), None, SETTINGS)
    assert not far.promoted and "gap 5.40" in far.reason
    noisy = decide_editor("detector", detector_evidence(47.9, 0.96, false_positive_area=0.02), None, SETTINGS)
    assert not noisy.promoted


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.chdir(tmp_path)  # the sqlite store's artifacts (./mlruns) stay in the test's folder
    return tmp_path


def table(folder, learned: dict, settings: dict | None = None):
    """A restore-eval rows.json with the restorer's rows beside the classical ones."""
    rows = []
    for defect, value in learned.items():
        rows += [{"defect": defect, "method": "bilateral", "psnr": 29.4, "true_mask": False},
                 {"defect": defect, "method": "none", "psnr": 20.5, "true_mask": False},
                 {"defect": defect, "method": "restorer (learned)", "psnr": value, "true_mask": False}]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "rows.json").write_text(json.dumps({"settings": settings or {"crop": 256, "seed": 0},
                                                  "test_crops": ["a.jpg"], "rows": rows}))
    return folder


def test_registration_keeps_the_evidence_and_promotion_moves_the_champion_only_when_earned(store):
    from productstudio.models.restorer import Restorer, save_restorer
    from productstudio.steps import edit_register

    model_dir = store / "restorer"
    save_restorer(Restorer(width=8, depth=2), model_dir, {"kind": "restorer", "width": 8, "depth": 2})
    weak = table(store / "eval-weak", {"noise25": 26.6, "jpeg10": 28.0})
    report = edit_register.run(Params(), restorer=model_dir, detector=store / "none", evaluation=weak, out=None)
    result = report["editors"]["restorer"]
    assert result["registered"]["created"] and result["registered"]["version"] == "1"
    assert not result["promotion"]["promoted"] and result["promotion"]["champion_after"] is None
    assert "refused by classical" in edit_register.format(report)
    again = edit_register.run(Params(), restorer=model_dir, detector=store / "none", evaluation=weak, out=None)
    assert not again["editors"]["restorer"]["registered"]["created"]  # same weights, same table: same version
    # a better model (other weights) measured by a table where it beats bilateral by the margin
    torch.manual_seed(1)
    better = Restorer(width=8, depth=2)
    torch.nn.init.normal_(better.tail.weight, std=0.01)
    save_restorer(better, model_dir, {"kind": "restorer", "width": 8, "depth": 2})
    strong = table(store / "eval-strong", {"noise25": 30.1, "jpeg10": 30.0})
    report = edit_register.run(Params(), restorer=model_dir, detector=store / "none", evaluation=strong,
                               out=store / "registry.json")
    promotion = report["editors"]["restorer"]["promotion"]
    assert promotion["promoted"] and promotion["champion_after"] == "2"
    from productstudio.registry.model_registry import client

    mv = client().get_model_version_by_alias("product-studio-restorer", "champion")
    assert str(mv.version) == "2" and mv.tags["promotion.decision"] == "promoted"
    assert json.loads(mv.tags["editor.evidence"])["defects"]["noise25"]["classical_method"] == "bilateral"
    assert json.loads((store / "registry.json").read_text())["editors"]["restorer"]["promotion"]["promoted"]


def test_the_gated_restorer_row_is_not_taken_for_a_classical_method(tmp_path):
    from productstudio.registry.editor_registry import editor_evidence

    folder = table(tmp_path / "eval", {"noise25": 32.2})
    report = json.loads((folder / "rows.json").read_text())
    # the same model behind its gate: the same PSNR on damaged crops, a learned row the table marks as such
    report["rows"].append({"defect": "noise25", "method": "restorer (learned, gated)", "psnr": 32.2,
                           "true_mask": False, "learned": True})
    (folder / "rows.json").write_text(json.dumps(report))
    assert editor_evidence("restorer", folder)["defects"]["noise25"] == {
        "learned": 32.2, "classical": 29.4, "classical_method": "bilateral"}


def watermark_table(folder, learned: float, ocr: float = 29.98, recall: float = 0.93, false_positive_area: float = 0.05):
    """A restore-eval rows.json with the watermark rows: the learned detector, the OCR boxes, the true mask."""
    rows = [{"defect": "watermark", "method": "none", "psnr": 24.15, "true_mask": False},
            {"defect": "watermark", "method": "unblend-ocr-boxes", "psnr": ocr, "true_mask": False},
            {"defect": "watermark", "method": "inpaint-ns-true-mask", "psnr": 36.08, "true_mask": True},
            {"defect": "watermark", "method": "unblend-learned-watermark-detector", "psnr": learned,
             "true_mask": False, "learned": True}]
    folder.mkdir(parents=True, exist_ok=True)
    scores = {"defect": "watermark", "threshold": 0.4, "min_blob": 1, "recall": recall, "visible_recall": recall,
              "false_positive_area": false_positive_area, "clean_area": 0.02}
    (folder / "rows.json").write_text(json.dumps({"settings": {"crop": 256, "seed": 0}, "test_crops": ["a.jpg"],
                                                  "rows": rows, "watermark_detector": scores}))
    return folder


def test_the_watermark_detector_is_judged_on_the_watermark_rows_against_the_ocr_boxes(tmp_path):
    from productstudio.registry.editor_registry import editor_evidence

    evidence = editor_evidence("watermark_detector", watermark_table(tmp_path / "eval", 34.35))
    assert evidence["defects"] == {"watermark": {"learned": 34.35, "classical": 29.98,
                                                 "classical_method": "unblend-ocr-boxes"}}
    assert evidence["detector"]["defect"] == "watermark" and evidence["detector"]["true_mask_psnr"] == 36.08
    # the fill is within 2 dB of the true mask and above OCR, but the mask misses the recall target: refused by it
    refused = decide_editor("watermark_detector", evidence, None, SETTINGS)
    assert not refused.promoted and refused.reason.startswith("refused by recall: mask recall 0.930")
    good = editor_evidence("watermark_detector", watermark_table(tmp_path / "good", 34.35, recall=0.96,
                                                                 false_positive_area=0.008))
    assert decide_editor("watermark_detector", good, None, SETTINGS).promoted
    below_ocr = editor_evidence("watermark_detector", watermark_table(tmp_path / "ocr", 29.5, ocr=29.98, recall=0.96,
                                                                      false_positive_area=0.008))
    assert not decide_editor("watermark_detector", below_ocr, None, SETTINGS).promoted


def test_a_table_without_the_watermark_detector_or_a_baseline_row_is_refused_in_one_line(tmp_path):
    from productstudio.errors import MissingInput
    from productstudio.registry.editor_registry import editor_evidence

    folder = watermark_table(tmp_path / "eval", 34.35)
    report = json.loads((folder / "rows.json").read_text())
    del report["watermark_detector"]
    (folder / "rows.json").write_text(json.dumps(report))
    with pytest.raises(MissingInput, match="no watermark_detector scores"):
        editor_evidence("watermark_detector", folder)
    report["rows"] = [r for r in report["rows"] if r["method"] != "unblend-ocr-boxes"]
    (folder / "rows.json").write_text(json.dumps(report))
    with pytest.raises(MissingInput, match="no baseline row for watermark"):
        editor_evidence("watermark_detector", folder)


def test_evidence_registered_before_the_watermark_detector_still_means_dust():
    old = detector_evidence(47.9, 0.96)
    assert "defect" not in old["detector"]
    assert decide_editor("detector", old, detector_evidence(47.0, 0.96), SETTINGS).promoted
