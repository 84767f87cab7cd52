"""Shared test set-up: the repo root on sys.path (components/, pipelines/), data locations, quiet tools."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
sys.path.insert(0, str(REPO_ROOT))

os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "1")


@pytest.fixture(scope="session")
def fashion_dir() -> Path:
    path = SHARED_DATA / "fashion-mnist"
    if not path.is_dir():
        pytest.fail(f"{path} is missing: the tests read Fashion-MNIST from ../shared/data")
    return path


@pytest.fixture(scope="session")
def clothing_dir() -> Path:
    path = SHARED_DATA / "clothing-dataset-small"
    if not path.is_dir():
        pytest.fail(f"{path} is missing: the tests read clothing-dataset-small from ../shared/data")
    return path


@pytest.fixture(scope="session")
def tshirt_photos(tmp_path_factory, clothing_dir) -> Path:
    """A small photo folder: the first three t-shirt photos of each split of clothing-dataset-small, copied."""
    import shutil

    root = tmp_path_factory.mktemp("tshirt-photos")
    for split in ("train", "validation", "test"):
        (root / split / "t-shirt").mkdir(parents=True)
        for source in sorted((clothing_dir / split / "t-shirt").glob("*.jpg"))[:3]:
            shutil.copyfile(source, root / split / "t-shirt" / source.name)
    return root
