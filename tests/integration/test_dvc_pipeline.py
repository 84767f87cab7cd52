"""The real DVC pipeline in a scratch copy of the project: repro, no-op repro, push and pull."""

import json
import shutil

import numpy as np
import pytest
import yaml

from productstudio.data.store import load_split
from tests.integration.dvc_project import DVC, make_project, run as _run

pytestmark = pytest.mark.slow


@pytest.fixture
def project(tmp_path, fashion_dir, clothing_dir):
    """A git + DVC project holding this repo's pipeline files and a small-subset params.yaml."""
    return make_project(tmp_path, fashion_dir, clothing_dir)


def test_repro_then_noop_then_push_and_pull(project):
    root, env = project
    dvc = DVC
    first = _run(dvc + ["repro"], root, env)
    for stage in ("ingest", "validate", "preprocess", "train", "classifier", "real_stats", "evaluate", "train_baseline",
                  "evaluate_baseline", "quantize", "register", "promote", "edit_evalset", "edit_evaluate", "edit_studio",
                  "edit_restorer", "edit_detector", "edit_watermark_detector", "edit_restore_eval", "edit_register"):
        assert f"Running stage '{stage}'" in first
    # The registry: version 1 with its int8 variant, judged (20 training steps: refused by the quality floor).
    assert json.loads((root / "reports/register/registered.json").read_text())["version"] == "1"
    assert json.loads((root / "reports/register/registered.json").read_text())["tags"]["variants"] == "fp32,int8"
    decision = json.loads((root / "reports/promote/decision.json").read_text())
    assert decision["challenger"] == "1" and decision["reason"].startswith(("promoted as the first", "refused by quality_floor"))
    assert (root / "models/quantized/generator.int8.onnx").exists()
    assert (root / "models/train/generator/generator.safetensors").exists()
    metrics = json.loads(_run(dvc + ["metrics", "show", "--json"], root, env))
    assert "fid20_test" in json.dumps(metrics) and "classifier_accuracy_generated" in json.dumps(metrics)
    assert "speedup_b64_int8_vs_fp32_eager" in json.dumps(metrics)  # reports/quantize/metrics.json
    assert "pass_rate_amazon-main" in json.dumps(metrics) and "iou_mean" in json.dumps(metrics)  # editing's
    assert "best_gain_db_noise25" in json.dumps(metrics)  # the restoration table's
    assert "val_gain_db_jpeg10" in json.dumps(metrics)  # the learned restorer's
    table = json.loads((root / "reports/edit/restore_eval/rows.json").read_text())["rows"]
    assert {row["defect"] for row in table if row["method"] == "restorer (learned)"} >= {"noise25", "jpeg10"}
    assert {row["defect"] for row in table if row["method"] == "inpaint-ns-learned-detector"} == {"dust"}
    assert {row["defect"] for row in table if row["method"] == "unblend-learned-watermark-detector"} == {"watermark"}
    assert {row["defect"] for row in table if row["method"] == "unblend-ocr-boxes"} == {"watermark"}
    assert "watermark_detector_recall" in json.dumps(metrics)
    assert "detector_recall" in json.dumps(metrics) and "val_visible_recall" in json.dumps(metrics)
    # the learned editors registered (4 training steps: each refused by the policy, none champion)
    editors = json.loads((root / "reports/edit/registry.json").read_text())["editors"]
    assert {kind: e["registered"]["version"] for kind, e in editors.items()} == {"restorer": "1", "detector": "1",
                                                                                  "watermark_detector": "1"}
    assert not any(e["promotion"]["promoted"] for e in editors.values())
    assert json.loads((root / "reports/edit/studio/report.json").read_text())["summary"]["photos"] == 3
    plots = json.loads(_run(dvc + ["plots", "show", "--json"], root, env))["data"]
    rendered = json.dumps(plots["reports/train/train_loss.csv"])
    assert '"loss_d"' in rendered and '"loss_g"' in rendered
    assert [row.split(",")[0] for row in (root / "reports/train/train_kid.csv").read_text().splitlines()] == ["step", "10", "20"]
    assert "reports/train/train_kid.csv" in plots and "reports/baseline/train_loss.csv" in plots
    assert "reports/edit/restorer/curve.csv" in plots and "reports/edit/detector/curve.csv" in plots
    assert "reports/edit/watermark_detector/curve.csv" in plots
    baseline = json.loads((root / "reports/evaluate_baseline/metrics.json").read_text())
    assert "fid20_test" in baseline and baseline["psnr_test_recon"] > 0  # the CVAE, on the same protocol, with reconstructions

    images, labels = load_split(root / "data/processed", "train")
    assert images.shape == (400, 1, 28, 28) and np.bincount(labels).tolist() == [40] * 10
    assert (root / "reports/validation/data_docs/index.html").exists()
    assert yaml.safe_load((root / "reports/validation_metrics.json").read_text())["files"] == 800

    second = _run(dvc + ["repro"], root, env)
    assert "Running stage" not in second
    assert "up to date" in _run(dvc + ["status"], root, env)

    # A changed param reruns only the stage that reads it.
    text = (root / "params.yaml").read_text().replace("image_size: 28", "image_size: 32")
    (root / "params.yaml").write_text(text)
    third = _run(dvc + ["repro"], root, env)
    assert "Running stage 'preprocess'" in third and "Running stage 'ingest'" not in third
    assert "starting afresh" in third  # new data: the persisted checkpoints are not resumed
    assert json.loads((root / "reports/register/registered.json").read_text())["version"] == "2"  # other params: version 2
    assert json.loads((root / "reports/promote/decision.json").read_text())["challenger"] == "2"
    assert load_split(root / "data/processed", "test")[0].shape == (400, 1, 32, 32)

    # Push to the default local remote, lose everything, pull it back byte for byte.
    before = (root / "data/processed/test-00000.images.npy").read_bytes()
    _run(dvc + ["push"], root, env)
    assert any((root / ".dvc-remote").rglob("*")), "the default remote is .dvc-remote in the project"
    shutil.rmtree(root / "data")
    shutil.rmtree(root / ".dvc" / "cache")
    _run(dvc + ["pull"], root, env)
    assert (root / "data/processed/test-00000.images.npy").read_bytes() == before
    assert "up to date" in _run(dvc + ["status"], root, env)
