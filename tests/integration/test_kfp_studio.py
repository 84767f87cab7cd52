"""The studio KFP pipeline: its committed package is fresh, and it runs with kfp.local on a few real photos."""

import json
import os
import shutil
import subprocess
import sys

import pytest
import yaml
from kfp.components import load_component_from_file

from tests.conftest import REPO_ROOT

COMMITTED_YAML = REPO_ROOT / "pipelines" / "studio.yaml"


def test_committed_studio_yaml_is_fresh(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PRODUCTSTUDIO_IMAGE"}
    out = tmp_path / "studio.yaml"
    subprocess.run([sys.executable, "-m", "pipelines.studio", "compile", "--output", str(out)], cwd=REPO_ROOT, env=env,
                   check=True, capture_output=True, text=True)
    assert COMMITTED_YAML.read_bytes() == out.read_bytes(), "pipelines/studio.yaml is stale: run `make pipeline-yaml`"
    pipeline = load_component_from_file(str(COMMITTED_YAML))
    assert pipeline.name == "product-studio-edit"
    assert set(pipeline.component_spec.inputs) == {"photos_uri", "evalset_photos_uri", "params_yaml", "presets", "limit",
                                                   "mlflow_tracking_uri"}


@pytest.mark.slow
def test_studio_pipeline_runs_locally(tmp_path, clothing_dir):
    from pipelines.studio import run_local

    photos = tmp_path / "photos"
    for category in ("shoes", "t-shirt"):
        (photos / category).mkdir(parents=True)
        for source in sorted((clothing_dir / "test" / category).glob("*.jpg"))[:1]:
            shutil.copyfile(source, photos / category / source.name)
    params = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    params["edit"].update(evalset_size=4)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    outputs = run_local(photos, clothing_dir, tmp_path / "kfp", params=tmp_path / "params.yaml",
                        presets="amazon-main", mlflow_tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    report = json.loads((REPO_ROOT / outputs["exports"] / "report.json").read_text())
    assert report["summary"]["photos"] == 2 and report["presets"] == ["amazon-main"]
    assert (REPO_ROOT / outputs["exports"] / "index.html").is_file()
    summary = json.loads((REPO_ROOT / outputs["evaluation"] / "metrics.json").read_text())
    assert set(summary) >= {"ours", "plain"}, summary

    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["productstudio"])
    names = set(runs["tags.mlflow.runName"])
    assert {"edit-studio", "edit-evaluate"} <= names
    studio_run = runs[runs["tags.mlflow.runName"] == "edit-studio"].iloc[0]
    assert "metrics.pass_rate_amazon-main" in runs.columns and studio_run["metrics.photos"] == 2
