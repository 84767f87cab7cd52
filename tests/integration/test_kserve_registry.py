"""'productstudio deploy kserve' against a real MLflow registry: aliases resolve to versions, tags to annotations."""

from __future__ import annotations

import pytest
import yaml

from productstudio.cli import main
from productstudio.deploy import kserve
from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.slow
NAME = "product-studio-generator"


def test_deploy_kserve_renders_champion_and_challenger_from_the_registry(tmp_path, monkeypatch, capsys):
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    client.create_registered_model(NAME)
    for version, commit in (("1", "b" * 40), ("2", "e" * 40)):
        source = tmp_path / "artifacts" / version
        source.mkdir(parents=True)
        mv = client.create_model_version(NAME, str(source), tags={"data.version": "a" * 64, "git.commit": commit})
        assert str(mv.version) == version
    client.set_registered_model_alias(NAME, "champion", "1")
    client.set_registered_model_alias(NAME, "challenger", "2")

    out = tmp_path / "kserve"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    params = str(REPO_ROOT / "params.yaml")
    assert main(["deploy", "kserve", "--params", params, "--alias", "champion", "--canary-alias", "challenger",
                 "--percent", "25", "--out", str(out)]) == 0
    assert f"wrote {out / (NAME + '-canary.yaml')}" in capsys.readouterr().out
    stable = yaml.safe_load((out / f"{NAME}-stable.yaml").read_text())
    canary = yaml.safe_load((out / f"{NAME}-canary.yaml").read_text())
    assert stable["spec"]["predictor"]["pytorch"]["storageUri"].endswith(f"/{NAME}/1")
    assert canary["spec"]["predictor"]["pytorch"]["storageUri"].endswith(f"/{NAME}/2")
    assert canary["spec"]["predictor"]["canaryTrafficPercent"] == 25
    assert stable["metadata"]["annotations"]["productstudio/git-commit"] == "b" * 40
    assert canary["metadata"]["annotations"]["productstudio/git-commit"] == "e" * 40
    assert canary["metadata"]["labels"]["productstudio/alias"] == "challenger"
    for manifest in (stable, canary):
        assert kserve.manifest_problems(manifest) == []

    # An alias nobody holds is one line, not a traceback.
    assert main(["deploy", "kserve", "--params", params, "--alias", "gold", "--out", str(out)]) == 2
    error = capsys.readouterr().err.strip()
    assert error == f"productstudio deploy: error: models:/{NAME}@gold: no version has the alias 'gold' of '{NAME}'"
