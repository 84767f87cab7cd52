"""The learned defect detector: an untrained model marks nothing and leaves photos unchanged, tiling matches one
pass, batches carry the defects' exact masks, a short training run learns to find specks and resumes bit for
bit, the threshold rule keeps the recall target, and the evaluation table measures detect-then-fill."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from productstudio.config import DetectorSettings, Params, RestoreEvalSettings
from productstudio.editing.detector_training import choose_rule, draw_batch, mask_scores, train_detector
from productstudio.errors import MissingInput, ParamsError
from productstudio.models.defect_detector import (DefectDetector, defect_probability, detect_defects,
                                                  drop_small_blobs, fill_defects, load_detector, mask_rule,
                                                  save_detector)


@pytest.fixture
def photos(tshirt_photos):
    return tshirt_photos


def tiny(photos, **changes) -> DetectorSettings:
    values = dict(source=str(photos), photos=3, region=128, patch=64, batch_size=4, width=8, max_steps=40,
                  curve_every=20, curve_crops=2, checkpoint_every=2, lr=5e-3, thresholds=[0.1, 0.3, 0.5])
    return DetectorSettings(**{**values, **changes})


def test_an_untrained_model_marks_nothing_and_changes_nothing():
    image = np.random.default_rng(0).integers(0, 256, (37, 50, 3), dtype=np.uint8)
    model = DefectDetector(width=8)
    assert not detect_defects(model, image, threshold=0.05).any()  # it starts from the prior, about 2 %
    assert np.array_equal(fill_defects(model, image, 0.05, 1, 3), image)


def test_blobs_under_min_blob_pixels_are_dropped_and_older_detectors_keep_every_blob():
    import cv2

    mask = np.zeros((40, 40), bool)
    mask[5, 5] = True                                        # a 1-pixel dot: a false alarm's usual size
    mask[10, 10:13] = True                                   # 3 pixels
    speck = np.zeros((40, 40), np.uint8)
    cv2.circle(speck, (30, 30), 1, 1, -1)                    # the smallest speck the defects draw
    mask |= speck > 0
    mask[20:22, 2:4] = True                                  # 4 pixels, diagonal neighbour of the next one
    mask[22, 4] = True                                       # 8-connected to it: one blob of 5
    kept = drop_small_blobs(mask, 5)
    assert int(speck.sum()) == 5 and kept[30, 30] and kept[speck > 0].all()
    assert kept[20:23, 2:5].sum() == 5 and not kept[5, 5] and not kept[10, 10:13].any()
    assert np.array_equal(drop_small_blobs(mask, 1), mask)
    assert mask_rule({"threshold": 0.2, "grow": 0}) == {"threshold": 0.2, "grow": 0, "min_blob": 1}
    assert mask_rule({"threshold": 0.2, "grow": 1, "min_blob": 5})["min_blob"] == 5


def test_tiles_give_the_same_probabilities_as_one_pass(monkeypatch):
    from productstudio.models import defect_detector as module

    torch.manual_seed(0)
    model = DefectDetector(width=8)
    torch.nn.init.normal_(model.tail.weight, std=1.0)
    torch.nn.init.zeros_(model.tail.bias)  # probabilities around one half, where they vary most
    image = np.random.default_rng(1).integers(0, 256, (150, 131, 3), dtype=np.uint8)
    whole = defect_probability(model, image)
    assert whole.std() > 0.01
    monkeypatch.setattr(module, "TILE", 48)
    assert np.abs(defect_probability(model, image) - whole).max() < 1e-5


def test_batches_are_a_pure_function_of_the_step_and_carry_the_exact_masks(photos):
    from productstudio.editing.patch_training import load_photos

    loaded = load_photos(photos, "train", 3)
    settings = tiny(photos, clean_share=0.0)
    first, again, other = (draw_batch(loaded, settings, 5), draw_batch(loaded, settings, 5),
                           draw_batch(loaded, settings, 6))
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert not np.array_equal(first[0], other[0])
    images, masks = first
    assert images.shape == (4, 64, 64, 3) and masks.shape == (4, 64, 64) and masks.dtype == bool
    assert masks.any()
    # the dust is grey: the masked pixels are grey, and most unmasked ones (a photo) are not all grey
    specks = images[masks]
    assert (specks.max(axis=1) == specks.min(axis=1)).all()


def test_recall_and_false_positive_area_count_pixels():
    mask = np.zeros((10, 10), bool)
    mask[0, :4] = True
    found = np.zeros((10, 10), bool)
    found[0, :3] = True
    found[9, 9] = True
    scores = mask_scores([found], [mask], [mask & (np.arange(10) < 2)])
    assert scores == {"recall": 0.75, "visible_recall": 1.0, "false_positive_area": 0.01}


def test_the_mask_rule_is_the_pair_with_the_best_fill_that_keeps_the_recall_target():
    table = [{"threshold": 0.1, "min_blob": 1, "recall": 0.99, "false_positive_area": 0.009, "fill_psnr": 44.0},
             {"threshold": 0.3, "min_blob": 1, "recall": 0.96, "false_positive_area": 0.004, "fill_psnr": 46.0},
             {"threshold": 0.3, "min_blob": 3, "recall": 0.951, "false_positive_area": 0.003, "fill_psnr": 46.5},
             {"threshold": 0.5, "min_blob": 5, "recall": 0.950, "false_positive_area": 0.002, "fill_psnr": 46.2},
             {"threshold": 0.7, "min_blob": 1, "recall": 0.90, "false_positive_area": 0.001, "fill_psnr": 47.0}]
    chosen = choose_rule(table, 0.95)  # not the fewest false alarms (0.5, 5): the best fill that keeps recall
    assert (chosen["threshold"], chosen["min_blob"]) == (0.3, 3)
    chosen = choose_rule(table, 0.999)  # none reaches it: the most sensitive
    assert (chosen["threshold"], chosen["min_blob"]) == (0.1, 1)
    for bad in ([], [0]):
        with pytest.raises(ValueError, match="min_blobs"):
            DetectorSettings(min_blobs=bad)


def test_training_finds_specks_and_an_interrupted_run_resumes_bit_for_bit(photos, tmp_path):
    settings = tiny(photos)
    report = train_detector(settings, tmp_path / "whole", progress=False)
    assert report["steps"] == 40 and [int(r["step"]) for r in report["curve"]] == [20, 40]
    assert report["validation"]["recall"] > 0.2  # 40 steps already find a good part of the specks
    assert {(row["threshold"], row["min_blob"]) for row in report["thresholds"]} == {
        (t, b) for t in (0.1, 0.3, 0.5) for b in (1, 2, 3, 4, 5)}
    broken = tmp_path / "broken"
    shutil.copytree(tmp_path / "whole", broken)
    (broken / "checkpoints" / "step-00000040.pt").unlink()
    (broken / "detector.safetensors").unlink()
    resumed = train_detector(settings, broken, progress=False)
    assert resumed["resumed_from"] == 38
    assert (broken / "detector.safetensors").read_bytes() == (tmp_path / "whole" / "detector.safetensors").read_bytes()
    model, info = load_detector(tmp_path / "whole")
    assert model.width == 8 and info["threshold"] == report["threshold"] and info["defects"] == ["dust"]
    assert (info["threshold"], info["min_blob"]) == (report["validation"]["threshold"], report["validation"]["min_blob"])


def test_defects_without_a_mask_and_a_missing_model_are_one_line(photos, tmp_path):
    with pytest.raises(ParamsError, match="noise25"):
        train_detector(tiny(photos, defects=["dust", "noise25"]), tmp_path, progress=False)
    with pytest.raises(MissingInput, match="detect-train"):
        load_detector(tmp_path / "nothing")


def test_the_evaluation_table_measures_detect_then_fill(photos, tmp_path):
    from productstudio.editing.restoration_eval import detect_and_fill_method, evaluate_restoration
    from productstudio.models.pretrained import weights_dir
    from productstudio.models.salient import load_segmenter

    model = DefectDetector(width=8)
    save_detector(model, tmp_path / "model", {"width": 8, "threshold": 0.5, "grow": 0, "defects": ["dust"]})
    found = load_detector(tmp_path / "model")
    segmenter = load_segmenter(weights_dir("u2netp"), threads=1)
    report = evaluate_restoration(photos, tmp_path / "eval", RestoreEvalSettings(tune_crops=1, test_crops=2, crop=64),
                                  segmenter, Params().edit.cutout, defects=["dust"], progress=False,
                                  learned=[detect_and_fill_method(*found)], detector=found)
    rows = {row["method"]: row for row in report["rows"]}
    # an untrained detector finds nothing: the floor, a clean crop left identical, recall 0
    assert rows["inpaint-ns-learned-detector"]["psnr"] == rows["none"]["psnr"]
    assert rows["inpaint-ns-learned-detector"]["clean_psnr"] == "identical"
    assert report["detector"]["recall"] == 0 and report["metrics"]["detector_recall"] == 0
    assert "learned defect detector" in (tmp_path / "eval" / "table.md").read_text()


def test_the_served_restore_task_fills_dust_first_when_packaged_with_a_detector(tmp_path):
    import json

    from productstudio.models.restorer import Restorer, restore, save_restorer
    from productstudio.serving.tasks.edit import SERVING_META
    from productstudio.serving.tasks.restore import RestoreTask

    save_restorer(Restorer(width=8, depth=2), tmp_path, {"kind": "restorer", "width": 8, "depth": 2})
    meta = {"max_upload_bytes": 10_000_000, "max_pixels": 40_000_000}
    (tmp_path / SERVING_META).write_text(json.dumps(meta))
    photo = np.random.default_rng(3).integers(0, 256, (40, 48, 3), dtype=np.uint8)
    plain = RestoreTask.load(tmp_path, "studio-restore", "1")
    assert plain.fill_dust is None and np.array_equal(plain.run([_request(photo)])[0][0], photo)
    detector = DefectDetector(width=8)
    torch.nn.init.normal_(detector.tail.weight, std=1.0)  # a detector that marks some pixels
    torch.nn.init.zeros_(detector.tail.bias)
    save_detector(detector, tmp_path, {"width": 8, "threshold": 0.5, "grow": 0, "defects": ["dust"]})
    (tmp_path / SERVING_META).write_text(json.dumps({**meta, "dust_fill_radius": 3}))
    task = RestoreTask.load(tmp_path, "studio-restore", "1")
    filled = fill_defects(detector, photo, 0.5, 0, 3)
    assert not np.array_equal(filled, photo)
    assert np.array_equal(task.run([_request(photo)])[0][0], restore(Restorer(width=8, depth=2), filled))
    assert task.weights_sha256 != plain.weights_sha256  # provenance names the detector too


def _request(photo):
    from productstudio.serving.tasks.restore import RestoreRequest

    return RestoreRequest(photo, "0" * 64, "image")


def test_the_evaluation_table_holds_the_watermark_rows_ocr_and_learned(photos, tmp_path):
    from productstudio.config import parse_params
    from productstudio.steps import edit_restore_eval

    model = DefectDetector(width=8)  # untrained: finds nothing, so its row is the floor and its recall 0
    save_detector(model, tmp_path / "watermark", {"width": 8, "threshold": 0.5, "grow": 0, "min_blob": 3,
                                                  "defects": ["watermark"]})
    params = parse_params({"edit": {"restore_eval": {"tune_crops": 1, "test_crops": 2, "crop": 64}}})
    report = edit_restore_eval.run(params, photos=photos, out=tmp_path / "eval", defects="watermark", restorer=None,
                                   detector=None, metrics=tmp_path / "metrics.json", no_mlflow=True,
                                   watermark_detector=tmp_path / "watermark")
    rows = {row["method"]: row for row in report["rows"]}
    assert {"none", "unblend-ocr-boxes", "unblend-learned-watermark-detector", "inpaint-ns-true-mask"} <= set(rows)
    learned, ocr = rows["unblend-learned-watermark-detector"], rows["unblend-ocr-boxes"]
    assert learned["learned"] and not ocr["learned"] and not ocr["true_mask"]  # OCR is the baseline, not ours
    assert learned["psnr"] == rows["none"]["psnr"] and learned["clean_psnr"] == "identical"
    assert learned["params"]["radius"] in (2, 3, 5)
    scores = report["watermark_detector"]
    assert scores["recall"] == 0 and scores["min_blob"] == 3 and scores["clean_area"] == 0
    assert "watermark_detector_recall" in (tmp_path / "metrics.json").read_text()
    assert "learned watermark detector" in edit_restore_eval.format(report)
    # a dust detector is not a watermark detector: one line, before anything is measured
    save_detector(model, tmp_path / "dust", {"width": 8, "threshold": 0.5, "grow": 0, "defects": ["dust"]})
    with pytest.raises(ParamsError, match="not watermarks"):
        edit_restore_eval.run(params, photos=photos, out=tmp_path / "eval2", defects="watermark", restorer=None,
                              detector=None, metrics=None, no_mlflow=True, watermark_detector=tmp_path / "dust")
