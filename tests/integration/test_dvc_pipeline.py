"""The real DVC pipeline in a scratch copy of the project: repro, no-op repro, push and pull."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from productstudio.data.store import load_split
from productstudio.models.pretrained import weights_root
from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.slow


def _run(args, cwd, env):
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.fixture
def project(tmp_path, fashion_dir, clothing_dir):
    """A git + DVC project holding this repo's pipeline files and a small-subset params.yaml."""
    root = tmp_path / "project"
    root.mkdir()
    for name in ("dvc.yaml", ".dvcignore"):
        shutil.copyfile(REPO_ROOT / name, root / name)
    shutil.copytree(REPO_ROOT / ".dvc", root / ".dvc", ignore=shutil.ignore_patterns("tmp", "cache", "config.local"))
    shutil.copytree(REPO_ROOT / "src", root / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    params = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    params["ingest"]["fashion_mnist_dir"] = str(fashion_dir)
    params["ingest"]["limit_per_category"] = 40
    # In this subset, train item 69 and test item 131 are near-identical (a real Fashion-MNIST leak).
    params["validate"]["max_leak_fraction"] = 0.01
    params["train"].update(max_steps=20, checkpoint_every=10, log_every=5, sample_every=10, g_width=8, d_width=8, latent_dim=16, batch_size=16,
                           kid_every=10, kid_samples=10)
    params["evaluate"].update(metrics=["fid20_test", "kid20_test"], classifier_epochs=1)
    params["protocol"].update(kid_subset_size=10, kid_subsets=5)
    params["quantize"].update(metrics=["fid20_test", "kid20_test"], psnr_samples=20, calibration_samples=64, timing_rounds=2)
    # Editing beside it: 3 clothing test photos, a labelled set of 4 composites.
    params["edit"].update(source=str(clothing_dir / "test"), limit=3, evalset_source=str(clothing_dir), evalset_size=4)
    params["edit"]["restore_eval"].update(source=str(clothing_dir), tune_crops=2, test_crops=2)
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "DVC_NO_ANALYTICS": "1",
        "DVC_SITE_CACHE_DIR": str(tmp_path / "dvc-site"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "PRODUCTSTUDIO_WEIGHTS": str(weights_root()),  # the copied src/ has no .tools/ beside it
        "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@localhost", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@localhost",
    }
    _run(["git", "init", "-q"], root, env)
    return root, env


def test_repro_then_noop_then_push_and_pull(project):
    root, env = project
    dvc = [sys.executable, "-m", "dvc"]
    first = _run(dvc + ["repro"], root, env)
    for stage in ("ingest", "validate", "preprocess", "train", "classifier", "real_stats", "evaluate", "train_baseline",
                  "evaluate_baseline", "quantize", "register", "promote", "edit_evalset", "edit_evaluate", "edit_studio",
                  "edit_restore_eval"):
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
    assert json.loads((root / "reports/edit/studio/report.json").read_text())["summary"]["photos"] == 3
    plots = json.loads(_run(dvc + ["plots", "show", "--json"], root, env))["data"]
    rendered = json.dumps(plots["reports/train/train_loss.csv"])
    assert '"loss_d"' in rendered and '"loss_g"' in rendered
    assert [row.split(",")[0] for row in (root / "reports/train/train_kid.csv").read_text().splitlines()] == ["step", "10", "20"]
    assert "reports/train/train_kid.csv" in plots and "reports/baseline/train_loss.csv" in plots
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
