"""The learned editors' KFP pipeline: its committed package is fresh, and it trains, measures and registers both
editors with kfp.local on a few real photos (a few steps each: registered, refused by the policy)."""

import json
import os
import subprocess
import sys

import pytest
import yaml
from kfp.components import load_component_from_file

from tests.conftest import REPO_ROOT

COMMITTED_YAML = REPO_ROOT / "pipelines" / "editors.yaml"


def test_committed_editors_yaml_is_fresh(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PRODUCTSTUDIO_IMAGE"}
    out = tmp_path / "editors.yaml"
    subprocess.run([sys.executable, "-m", "pipelines.editors", "compile", "--output", str(out)], cwd=REPO_ROOT, env=env,
                   check=True, capture_output=True, text=True)
    assert COMMITTED_YAML.read_bytes() == out.read_bytes(), "pipelines/editors.yaml is stale: run `make pipeline-yaml`"
    pipeline = load_component_from_file(str(COMMITTED_YAML))
    assert pipeline.name == "product-studio-editors"
    assert set(pipeline.component_spec.inputs) == {"photos_uri", "params_yaml", "mlflow_tracking_uri"}
    assert set(pipeline.component_spec.outputs) == {"restorer", "detector", "watermark_detector", "table", "registered"}


@pytest.mark.slow
def test_editors_pipeline_trains_measures_and_registers_locally(tmp_path, clothing_dir):
    from pipelines.editors import run_local

    params = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    params["edit"]["restore_eval"].update(tune_crops=2, test_crops=2)
    params["edit"]["restorer"].update(photos=4, patch=32, batch_size=2, width=8, depth=2, max_steps=4, curve_every=2,
                                      curve_crops=1)
    for detector in ("detector", "watermark_detector"):
        params["edit"][detector].update(photos=4, region=64, patch=32, batch_size=2, width=4, max_steps=4,
                                        curve_every=2, curve_crops=1, checkpoint_every=2)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    outputs = run_local(clothing_dir, tmp_path / "kfp", params=tmp_path / "params.yaml", mlflow_tracking_uri=uri)

    assert (REPO_ROOT / outputs["restorer"] / "restorer.safetensors").is_file()
    assert (REPO_ROOT / outputs["detector"] / "detector.safetensors").is_file()
    assert json.loads((REPO_ROOT / outputs["watermark_detector"] / "detector.json").read_text())["defects"] == ["watermark"]
    rows = json.loads((REPO_ROOT / outputs["table"] / "rows.json").read_text())["rows"]
    assert {row["defect"] for row in rows if row["method"] == "restorer (learned)"} >= {"noise25", "jpeg10"}
    assert {row["defect"] for row in rows if row["method"] == "inpaint-ns-learned-detector"} == {"dust"}
    assert {row["defect"] for row in rows if row["method"] == "unblend-learned-watermark-detector"} == {"watermark"}
    editors = json.loads((REPO_ROOT / outputs["registered"] / "registry.json").read_text())["editors"]
    assert {kind: e["registered"]["version"] for kind, e in editors.items()} == {"restorer": "1", "detector": "1",
                                                                                  "watermark_detector": "1"}
    assert not editors["restorer"]["promotion"]["promoted"]  # 4 steps do not beat the classical filters

    import mlflow

    mlflow.set_tracking_uri(uri)
    names = set(mlflow.search_runs(experiment_names=["productstudio"])["tags.mlflow.runName"])
    assert {"edit-restorer", "edit-detector", "edit-watermark-detector"} <= names, names
