"""The cut-out targets on the full labelled set, as `dvc repro edit_evalset edit_evaluate` builds and measures it:
132 composites of studio clothing photos with exact masks (params.yaml's evalset settings), our cut-out against
plain u2netp, and the gates against both."""

from __future__ import annotations

import pytest

from productstudio.config import load_params
from productstudio.editing.evalset import EXTRA_HARD_CYCLE, build_evalset
from productstudio.editing.segmentation_eval import evaluate_cutouts
from productstudio.models.pretrained import weights_dir
from productstudio.models.salient import load_segmenter
from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def report(tmp_path_factory, clothing_dir):
    params = load_params(REPO_ROOT / "params.yaml")
    evalset = tmp_path_factory.mktemp("evalset")
    built = build_evalset(clothing_dir, evalset, size=params.edit.evalset_size, seed=params.edit.evalset_seed,
                          extra_hard=params.edit.evalset_extra_hard)
    assert built["images"] == 132 and set(built["splits"]) == {"train", "validation"}  # never the test photos
    assert built["cases"]["see-through"] == built["cases"]["reflective"] == 6
    segmenter = load_segmenter(weights_dir("u2netp"), threads=0)
    return evaluate_cutouts(evalset, segmenter, params.edit.cutout, gates=params.edit.gates)


def base_rows(report) -> list[dict]:
    """The composites before the extra hard stand-ins (see-through, reflective)."""
    return [row for row in report["rows"] if row["case"] not in EXTRA_HARD_CYCLE]


def test_mean_iou_at_least_095_and_no_image_below_085(report):
    ours = report["summary"]["ours"]
    assert ours["count"] == 132 and ours["iou_mean"] >= 0.95
    assert ours["below_floor"] == 0 and min(row["iou"] for row in report["rows"]) >= 0.85


def test_every_cut_out_below_085_is_refused_by_the_gates(report):
    bad = [row for row in report["rows"] if row["iou"] < 0.85]
    assert all(row["refused"] for row in bad), [row["id"] for row in bad if not row["refused"]]
    gates = report["summary"]["gates"]
    assert gates["ours_good_refused"] == 0  # and no good one is refused
    assert gates["plain_bad"] >= 1 and gates["plain_bad_refused"] == gates["plain_bad"]


def test_ours_beats_plain_u2netp_on_mean_and_worst_case(report):
    ours, plain = report["summary"]["ours"], report["summary"]["plain"]
    assert ours["iou_mean"] > plain["iou_mean"] and ours["mae_mean"] < plain["mae_mean"]
    assert ours["iou_min"] > plain["iou_min"]
    assert sum(row["plain_iou"] < 0.85 for row in base_rows(report)) >= 1  # cases the off-the-shelf model gets wrong
