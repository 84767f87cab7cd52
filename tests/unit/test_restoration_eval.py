"""The restoration table on a few real crops: tuned parameters come from each grid, "none" is the floor, the
best row is marked, harm on clean input is measured, the files are written and a rerun gives the same table."""

from __future__ import annotations

import json
import shutil

import pytest

from productstudio.config import Params, RestoreEvalSettings
from productstudio.editing.classical import METHODS
from productstudio.editing.restoration_eval import evaluate_restoration, load_crops


@pytest.fixture(scope="module")
def photos(tmp_path_factory, clothing_dir):
    root = tmp_path_factory.mktemp("photos")
    for split in ("train", "validation", "test"):
        (root / split / "t-shirt").mkdir(parents=True)
        for source in sorted((clothing_dir / split / "t-shirt").glob("*.jpg"))[:2]:
            shutil.copyfile(source, root / split / "t-shirt" / source.name)
    (root / "test" / "t-shirt" / "broken.jpg").write_bytes(b"\xff\xd8\xff not really")  # passed over, no crash
    return root


@pytest.fixture(scope="module")
def report(photos, tmp_path_factory):
    from productstudio.models.pretrained import weights_dir
    from productstudio.models.salient import load_segmenter

    segmenter = load_segmenter(weights_dir("u2netp"), threads=1)
    settings = RestoreEvalSettings(tune_crops=2, test_crops=2, crop=128)
    out = tmp_path_factory.mktemp("table")
    first = evaluate_restoration(photos, out, settings, segmenter, Params().edit.cutout,
                                 defects=["noise25", "dust"], progress=False)
    again = evaluate_restoration(photos, tmp_path_factory.mktemp("again"), settings, segmenter,
                                 Params().edit.cutout, defects=["noise25", "dust"], progress=False)
    return first, again, out


def test_crops_come_from_their_splits_and_skip_broken_files(photos):
    names, crops = load_crops(photos, ("test",), 128, 5)
    assert len(names) == 2 and all(n.startswith("test/") and "broken" not in n for n in names)
    assert all(c.shape == (128, 128, 3) for c in crops)


def test_rows_are_tuned_marked_and_measured(report):
    first, _, _ = report
    for defect in ("noise25", "dust"):
        rows = [r for r in first["rows"] if r["defect"] == defect]
        assert [r["psnr"] for r in rows] == sorted((r["psnr"] for r in rows), reverse=True)
        none = next(r for r in rows if r["method"] == "none")
        assert none["gain_db"] == 0 and none["clean_psnr"] == "identical" and none["clean_delta_e"] == 0
        assert sum(r["best"] for r in rows) == 1
        best = next(r for r in rows if r["best"])
        assert best["method"] != "none" and best["gain_db"] > 3  # every family's best clearly beats doing nothing
        for row in rows:
            assert row["params"] in [dict(p) for p in METHODS[row["method"]].grid]
            assert 0 < row["ssim"] <= 1 and row["ms_per_mp"] >= 0
    inpaint = next(r for r in first["rows"] if r["method"] == "inpaint-ns-true-mask")
    assert inpaint["true_mask"] and inpaint["clean_psnr"] == "identical"  # no defect, nothing to fill
    assert first["metrics"]["best_gain_db_noise25"] > 3
    assert len(first["defects_drawn"]["dust"]) == 2  # what each crop got is recorded


def test_files_are_written_and_a_rerun_gives_the_same_table(report):
    first, again, out = report
    assert {p.name for p in out.iterdir()} == {"rows.json", "metrics.json", "table.md", "examples.png"}
    assert json.loads((out / "metrics.json").read_text()) == first["metrics"]
    assert "| noise25 |" in (out / "table.md").read_text()

    def without_timing(rows):
        return [{k: v for k, v in r.items() if k != "ms_per_mp"} for r in rows]

    assert without_timing(first["rows"]) == without_timing(again["rows"])


def test_the_gated_restorer_leaves_clean_crops_identical_and_restores_noisy_ones(photos, tmp_path):
    import torch

    from productstudio.models.pretrained import weights_dir
    from productstudio.models.restorer import Restorer
    from productstudio.editing.restoration_eval import gated_method, learned_method
    from productstudio.models.salient import load_segmenter

    torch.manual_seed(0)
    model = Restorer(width=8, depth=2)
    torch.nn.init.normal_(model.tail.weight, std=0.02)  # changes every crop it is given
    gate = Params().edit.restore_gate
    report = evaluate_restoration(photos, tmp_path, RestoreEvalSettings(tune_crops=2, test_crops=2, crop=128),
                                  load_segmenter(weights_dir("u2netp"), threads=1), Params().edit.cutout,
                                  defects=["noise25"], progress=False,
                                  learned=[learned_method(model), gated_method(model, gate)], restore_gate=gate)
    rows = {r["method"]: r for r in report["rows"]}
    blind, gated = rows["restorer (learned)"], rows["restorer (learned, gated)"]
    assert blind["learned"] and gated["learned"] and not rows["bilateral"]["learned"]
    assert blind["clean_psnr"] != "identical" and gated["clean_psnr"] == "identical"
    assert gated["psnr"] == blind["psnr"]  # every noisy crop went through the restorer
    shares = report["restore_gate"]["test_crops"]
    assert shares["noise25"]["restored"] == 1.0 and shares["clean"]["restored"] == 0.0
    assert "gate" in (tmp_path / "table.md").read_text()
