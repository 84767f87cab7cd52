"""The learned restorer: an untrained model leaves photos alone, tiling matches one pass, training on a few real
photos lowers the loss and resumes bit for bit, the files round-trip without pickle, and the evaluation table
puts the model beside the classical rows."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from productstudio.config import Params, RestoreEvalSettings, RestorerSettings
from productstudio.errors import MissingInput, ParamsError
from productstudio.models.restorer import Restorer, load_restorer, restore, save_restorer
from productstudio.editing.restorer_training import draw_batch, train_restorer


@pytest.fixture
def photos(tshirt_photos):
    return tshirt_photos


def tiny(photos, **changes) -> RestorerSettings:
    values = dict(source=str(photos), photos=3, patch=48, batch_size=8, width=8, depth=2, max_steps=30,
                  curve_every=15, curve_crops=1, checkpoint_every=2, lr=2e-3, defects=["noise50", "jpeg10"],
                  oversample={})
    return RestorerSettings(**{**values, **changes})


def test_an_untrained_model_returns_the_photo_unchanged():
    image = np.random.default_rng(0).integers(0, 256, (37, 50, 3), dtype=np.uint8)  # odd sides
    assert np.array_equal(restore(Restorer(width=8, depth=2), image), image)


def test_tiles_give_the_same_pixels_as_one_pass(monkeypatch):
    from productstudio.models import restorer as module

    torch.manual_seed(0)
    model = Restorer(width=8, depth=4)
    torch.nn.init.normal_(model.tail.weight, std=0.05)  # a model that changes the photo
    image = np.random.default_rng(1).integers(0, 256, (150, 131, 3), dtype=np.uint8)
    whole = restore(model, image)
    assert not np.array_equal(whole, image)
    monkeypatch.setattr(module, "TILE", 48)
    tiled = restore(model, image)
    assert np.abs(tiled.astype(int) - whole.astype(int)).max() <= 1


def test_batches_are_a_pure_function_of_the_step(photos):
    from productstudio.editing.patch_training import load_photos

    loaded = load_photos(photos, "train", 3)
    settings = tiny(photos, clean_share=0.0)
    first, again, other = draw_batch(loaded, settings, 5), draw_batch(loaded, settings, 5), draw_batch(loaded, settings, 6)
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert not np.array_equal(first[1], other[1])
    damaged, clean = first
    assert damaged.shape == clean.shape == (8, 48, 48, 3) and not np.array_equal(damaged, clean)


def test_training_learns_and_an_interrupted_run_resumes_bit_for_bit(photos, tmp_path):
    settings = tiny(photos)
    report = train_restorer(settings, tmp_path / "whole", progress=False)
    losses = np.loadtxt(tmp_path / "whole" / "loss.csv", delimiter=",", skiprows=1)
    assert report["steps"] == 30 and losses.shape == (30, 2)
    assert [int(row["step"]) for row in report["curve"]] == [0, 15, 30]
    assert report["final"]["noise50"] > report["floor"]["noise50"] + 0.1  # it already removes some heavy noise
    # the same run, killed after its step-28 checkpoint: the rerun continues from there to the same weights
    broken = tmp_path / "broken"
    shutil.copytree(tmp_path / "whole", broken)
    (broken / "checkpoints" / "step-00000030.pt").unlink()
    (broken / "restorer.safetensors").unlink()
    resumed = train_restorer(settings, broken, progress=False)
    assert resumed["resumed_from"] == 28
    assert (broken / "restorer.safetensors").read_bytes() == (tmp_path / "whole" / "restorer.safetensors").read_bytes()
    assert (broken / "loss.csv").read_text() == (tmp_path / "whole" / "loss.csv").read_text()
    # other settings never resume another run's checkpoint
    other = train_restorer(tiny(photos, lr=1e-3), broken, progress=False)
    assert other["resumed_from"] == 0
    model = load_restorer(tmp_path / "whole")
    assert (model.width, model.depth) == (8, 2)


def test_saved_models_round_trip_and_a_missing_one_is_one_line(tmp_path):
    model = Restorer(width=8, depth=2)
    torch.nn.init.normal_(model.tail.weight, std=0.05)
    save_restorer(model, tmp_path, {"kind": "restorer", "width": 8, "depth": 2})
    loaded = load_restorer(tmp_path)
    image = np.random.default_rng(2).integers(0, 256, (20, 24, 3), dtype=np.uint8)
    assert np.array_equal(restore(loaded, image), restore(model, image))
    with pytest.raises(MissingInput, match="restore-train"):
        load_restorer(tmp_path / "nothing")
    # a model saved by the earlier plain-stack layout (no "body" recorded) is refused, not loaded half-matched
    info = json.loads((tmp_path / "restorer.json").read_text())
    del info["body"]
    (tmp_path / "restorer.json").write_text(json.dumps(info))
    with pytest.raises(MissingInput, match="older layout"):
        load_restorer(tmp_path)


def test_the_tile_overlap_covers_the_default_models_reach():
    from productstudio.models.restorer import OVERLAP

    torch.manual_seed(0)
    model = Restorer(width=8, depth=RestorerSettings().depth)
    torch.nn.init.normal_(model.tail.weight, std=0.05)
    x = torch.full((1, 3, 128, 128), 0.5)
    poked = x.clone()
    poked[..., 64, 64] = 1.0
    with torch.no_grad():
        changed = (model(poked) - model(x)).abs().amax(dim=(0, 1)) > 0
    rows, cols = changed.nonzero(as_tuple=True)
    reach = int(max((rows - 64).abs().max(), (cols - 64).abs().max()))
    assert 0 < reach < OVERLAP  # one pixel moves outputs this far: a tile's border needs that much context


def test_the_body_is_residual_blocks_of_two_convolutions():
    assert len(Restorer(width=8, depth=6).body) == 3
    with pytest.raises(ValueError, match="even"):
        Restorer(width=8, depth=3)


def test_defects_outside_noise_and_jpeg_are_refused(photos, tmp_path):
    with pytest.raises(ParamsError, match="dust"):
        train_restorer(tiny(photos, defects=["noise25", "dust"]), tmp_path, progress=False)


def test_the_evaluation_table_measures_a_learned_model_beside_the_classical_rows(photos, tmp_path):
    from productstudio.editing.restoration_eval import evaluate_restoration, learned_method
    from productstudio.models.pretrained import weights_dir
    from productstudio.models.salient import load_segmenter

    segmenter = load_segmenter(weights_dir("u2netp"), threads=1)
    report = evaluate_restoration(photos, tmp_path, RestoreEvalSettings(tune_crops=1, test_crops=2, crop=64),
                                  segmenter, Params().edit.cutout, defects=["jpeg10", "cast"], progress=False,
                                  learned=[learned_method(Restorer(width=8, depth=2))])
    rows = {(row["defect"], row["method"]): row for row in report["rows"]}
    learned = rows[("jpeg10", "restorer (learned)")]
    # an untrained restorer is the identity: exactly the floor, and a clean crop is left identical
    assert learned["psnr"] == rows[("jpeg10", "none")]["psnr"] and learned["clean_psnr"] == "identical"
    assert ("cast", "restorer (learned)") not in rows  # only the families it was made for


def test_the_psnr_loss_is_minus_the_mean_patch_psnr_and_favours_the_nearly_clean_patch():
    from productstudio.editing.restorer_training import restoration_loss

    clean = torch.zeros(2, 3, 4, 4)
    restored = clean.clone()
    restored[0] += 0.1  # squared error 1e-2: 20 dB
    restored[1] += 0.001  # 1e-6: 60 dB, floored at 50 dB by the loss
    restored.requires_grad_(True)
    assert restoration_loss(restored, clean, "mse").item() == pytest.approx((1e-2 + 1e-6) / 2)
    loss = restoration_loss(restored, clean, "psnr")
    assert loss.item() == pytest.approx((np.log10(1e-2 + 1e-5) + np.log10(1e-6 + 1e-5)) / 2, rel=1e-5)
    loss.backward()
    # per unit of error the nearly clean patch pulls harder: the log weighs a patch by 1 / its error
    pull = restored.grad.flatten(1).abs().sum(dim=1) / (restored - clean).detach().flatten(1).abs().sum(dim=1)
    assert pull[1] > 10 * pull[0]


def test_an_oversampled_defect_is_drawn_more_often_and_a_stray_one_is_refused(photos, tmp_path):
    from productstudio.editing.patch_training import load_photos

    loaded = load_photos(photos, "train", 3)

    def jpeg_share(settings):
        # noise sigma 50 moves a patch's pixels by 32-40 levels on average, JPEG quality 10 by 3-22
        moved = [np.abs(d.astype(int) - c.astype(int)).mean(axis=(1, 2, 3))
                 for d, c in (draw_batch(loaded, settings, step) for step in range(20))]
        return float((np.concatenate(moved) < 26).mean())

    uniform = jpeg_share(tiny(photos, clean_share=0.0))
    oversampled = jpeg_share(tiny(photos, clean_share=0.0, oversample={"jpeg10": 3}))
    assert 0.35 < uniform < 0.65 and oversampled > 0.65  # 160 draws each: about 1/2 and 3/4
    with pytest.raises(ParamsError, match="noise15"):
        train_restorer(tiny(photos, oversample={"noise15": 2}), tmp_path, progress=False)
