"""A scratch copy of this repo's DVC pipeline for integration tests: git + DVC project, small-subset params."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from productstudio.models.pretrained import weights_root
from tests.conftest import REPO_ROOT

DVC = [sys.executable, "-m", "dvc"]


def run(args, cwd, env, timeout=600) -> str:
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{' '.join(map(str, args))} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def make_project(base: Path, fashion_dir: Path, clothing_dir: Path) -> tuple[Path, dict]:
    """``base``/project holding dvc.yaml, .dvc and src/ with a small-subset params.yaml; its MLflow store
    (``base``/mlflow.db) and DVC site cache beside it. Returns (project root, env for its commands)."""
    root = base / "project"
    root.mkdir(parents=True)
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
    params["edit"]["restorer"].update(source=str(clothing_dir), photos=4, patch=32, batch_size=2, width=8, depth=2,
                                      max_steps=4, curve_every=2, curve_crops=1)
    for detector in ("detector", "watermark_detector"):
        params["edit"][detector].update(source=str(clothing_dir), photos=4, region=64, patch=32, batch_size=2, width=4,
                                        max_steps=4, curve_every=2, curve_crops=1, checkpoint_every=2)
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "DVC_NO_ANALYTICS": "1",
        # DVC runs stages that do not depend on each other in an order that follows Python's string hashes, so
        # without a fixed seed it changes from one `dvc repro` to the next (quantize before or after evaluate):
        # test_dvc_kill's sequence of kills needs one order, and a fixed one makes every run of a test the same
        "PYTHONHASHSEED": "1",
        "DVC_SITE_CACHE_DIR": str(base / "dvc-site"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{base / 'mlflow.db'}",
        "PRODUCTSTUDIO_WEIGHTS": str(weights_root()),  # the copied src/ has no .tools/ beside it
        "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@localhost", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@localhost",
    }
    run(["git", "init", "-q"], root, env)
    return root, env
