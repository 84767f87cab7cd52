"""A photo folder with a catalogue CSV (sku, category, description): joined by file stem, disagreements noted."""

import shutil

import pandas as pd
import pytest

from productstudio.config import parse_params
from productstudio.data.raw import ingest
from productstudio.validation.validate import METADATA, validate


def _folder(tmp_path, clothing_dir):
    root = tmp_path / "shop"
    for category in ("hat", "shoes"):
        (root / category).mkdir(parents=True)
        for photo in sorted((clothing_dir / "train" / category).glob("*.jpg"))[:3]:
            shutil.copyfile(photo, root / category / photo.name)
    return root


def test_catalogue_rows_join_images_and_disagreements_are_noted(tmp_path, clothing_dir):
    root = _folder(tmp_path, clothing_dir)
    hats = sorted(p.stem for p in (root / "hat").iterdir())
    rows = [{"sku": hats[0], "category": "hat", "description": "straw hat"},
            {"sku": hats[1], "category": "shoes", "description": "listed under the wrong category"}]
    pd.DataFrame(rows).to_csv(tmp_path / "catalogue.csv", index=False)
    params = parse_params({"ingest": {"source": "image-folder", "image_folder": str(root), "catalogue_csv": str(tmp_path / "catalogue.csv")}})
    raw = ingest(params.ingest, tmp_path / "raw")
    assert raw.catalogue_path is not None and raw.layout == "flat" and raw.categories == ["hat", "shoes"]
    validate(tmp_path / "raw", tmp_path / "report", params.validate)
    table = pd.read_csv(tmp_path / "report" / METADATA).set_index("path")
    assert table.loc[f"hat/{hats[0]}.jpg", "description"] == "straw hat"
    assert table.loc[f"hat/{hats[1]}.jpg", "reason"] == "catalogue says category 'shoes', folder says 'hat'"
    assert table["sku"].notna().sum() == 2


def test_catalogue_without_required_columns_is_refused(tmp_path, clothing_dir):
    root = _folder(tmp_path, clothing_dir)
    (tmp_path / "catalogue.csv").write_text("sku,title\nA1,hat\n")
    params = parse_params({"ingest": {"source": "image-folder", "image_folder": str(root), "catalogue_csv": str(tmp_path / "catalogue.csv")}})
    with pytest.raises(ValueError, match="lacks column\\(s\\) category, description"):
        ingest(params.ingest, tmp_path / "raw")
