"""The colour configuration's door: scripts/run-params on configs/clothing-64.yaml, shrunk to a small subset."""

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def test_colour_config_trains_evaluates_and_registers(tmp_path, clothing_dir):
    config = yaml.safe_load((REPO_ROOT / "configs/clothing-64.yaml").read_text())
    # The committed file with a small subset and a short run; image size, mode, augmentation stay as committed.
    config["ingest"].update(image_folder=str(clothing_dir), limit_per_category=6)
    # The conditioning ramp shrunk with the run: unconditional at step 0-1, full strength from step 3.
    config["train"].update(max_steps=4, checkpoint_every=2, sample_every=4, kid_every=4, kid_samples=8, log_every=2,
                           condition_ramp=[1, 3])
    config["evaluate"].update(metrics=["fid20_test", "kid20_test"], classifier_epochs=1)
    config["protocol"] = {"kid_subset_size": 10, "kid_subsets": 5}
    params = tmp_path / "clothing.yaml"
    params.write_text(yaml.safe_dump(config))
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    done = subprocess.run(["bash", str(REPO_ROOT / "scripts/run-params"), str(params), str(tmp_path / "run")],
                          capture_output=True, text=True, timeout=900, cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    run = tmp_path / "run"
    # Stray files at the dataset's root (LICENSE, README.md ...) were quarantined, not fatal.
    assert "LICENSE" in (run / "reports/validation/quarantine.tsv").read_text()
    manifest = json.loads((run / "models/train/manifest.json").read_text())
    assert manifest["summary"]["steps"] == 4 and manifest["summary"]["stopped_by"] == "max_steps"
    grid = np.asarray(Image.open(run / "models/train" / manifest["sample_grid"]))
    assert grid.shape == (10 * 64 * 2, 8 * 64 * 2, 3)  # one row per category, colour, shown at 2x
    evaluation = json.loads((run / "reports/evaluate/evaluation.json").read_text())
    assert [m["metric"] for m in evaluation["metrics"]] == ["fid20_test", "kid20_test"]
    assert len(evaluation["domain"]["per_category"]) >= 5
    registered = json.loads((run / "reports/register/registered.json").read_text())
    assert registered["name"] == "product-studio-clothing-64" and registered["version"] == "1"
    assert "+ productstudio register" in done.stderr
