"""Synthetic defects and the classical baselines: seeded and recorded, each defect does what it says and only
where it says, each baseline undoes its own defect on a case where the answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from productstudio.editing.classical import METHODS, detect_specks, gray_world, grid, methods_for
from productstudio.editing.defects import DEFECTS, defect_rng, to_linear, to_srgb


@pytest.fixture(scope="module")
def photo(clothing_dir) -> np.ndarray:
    from PIL import Image

    path = sorted((clothing_dir / "test" / "t-shirt").glob("*.jpg"))[0]
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB").resize((128, 128)))


def grey(value: int = 128, size: int = 96) -> np.ndarray:
    return np.full((size, size, 3), value, np.uint8)


@pytest.mark.parametrize("name", sorted(DEFECTS))
def test_a_defect_is_a_function_of_the_image_and_its_seed(photo, name):
    first = DEFECTS[name].apply(photo, defect_rng(0, 7, name))
    again = DEFECTS[name].apply(photo, defect_rng(0, 7, name))
    assert np.array_equal(first[0], again[0]) and first[2] == again[2]
    assert first[0].shape == photo.shape and first[0].dtype == np.uint8
    assert not np.array_equal(first[0], photo)
    if DEFECTS[name].family not in ("jpeg",):  # JPEG draws nothing: the same image always gives the same file
        other = DEFECTS[name].apply(photo, defect_rng(0, 8, name))
        assert not np.array_equal(first[0], other[0])


def test_noise_has_the_stated_sigma():
    for sigma in (15, 25):
        damaged, mask, recorded = DEFECTS[f"noise{sigma}"].apply(grey(), defect_rng(0, 0, "x"))
        assert mask is None and recorded == {"sigma": sigma}
        assert abs((damaged.astype(float) - 128).std() - sigma) < 0.05 * sigma


def test_lower_jpeg_quality_loses_more(photo):
    errors = [np.abs(DEFECTS[f"jpeg{q}"].apply(photo, None)[0].astype(int) - photo).mean() for q in (10, 20, 30)]
    assert errors[0] > errors[1] > errors[2] > 0


@pytest.mark.parametrize("name", ["dust", "watermark"])
def test_masked_defects_touch_only_their_mask(photo, name):
    damaged, mask, _ = DEFECTS[name].apply(photo, defect_rng(3, 1, name))
    assert mask.dtype == bool and 0.002 < mask.mean() < 0.3
    assert np.array_equal(damaged[~mask], photo[~mask])
    assert (damaged[mask] != photo[mask]).any(axis=-1).mean() > 0.5


def test_cast_and_exposure_scale_linear_light():
    cast, _, recorded = DEFECTS["cast"].apply(grey(), defect_rng(0, 2, "cast"))
    gains = np.array(recorded["gains"])
    assert gains.mean() == pytest.approx(1.0, abs=1e-3) and np.ptp(gains) > 0.05
    assert np.allclose(to_linear(cast)[0, 0], to_linear(grey())[0, 0] * gains, atol=0.004)
    dark, _, recorded = DEFECTS["exposure"].apply(grey(200), defect_rng(0, 2, "exposure"))
    assert 0.35 <= recorded["factor"] <= 0.55
    assert to_linear(dark)[0, 0, 0] == pytest.approx(to_linear(grey(200))[0, 0, 0] * recorded["factor"], abs=0.004)


def test_srgb_round_trip_is_exact():
    values = np.arange(256, dtype=np.uint8).reshape(16, 16, 1).repeat(3, axis=2)
    assert np.array_equal(to_srgb(to_linear(values)), values)


def test_gray_world_undoes_a_cast_on_a_grey_card():
    cast, _, _ = DEFECTS["cast"].apply(grey(), defect_rng(0, 2, "cast"))
    fixed = gray_world(cast, {})
    assert np.ptp(fixed[0, 0].astype(int)) <= 1


def test_inpainting_with_the_true_mask_repairs_dust_on_a_smooth_image():
    ramp = np.linspace(60, 200, 96).astype(np.uint8)
    smooth = np.stack([np.tile(ramp, (96, 1))] * 3, axis=-1)
    damaged, mask, _ = DEFECTS["dust"].apply(smooth, defect_rng(0, 4, "dust"))
    repaired = METHODS["inpaint-telea-true-mask"].run(damaged, {"radius": 3}, mask)
    assert np.abs(repaired.astype(int) - smooth).max() < np.abs(damaged.astype(int) - smooth).max() / 4
    found = detect_specks(damaged, 25)
    assert (found & mask).sum() / mask.sum() > 0.5  # the detector finds most of it on a smooth background


def test_every_method_keeps_shape_and_type_and_every_family_has_a_floor(photo):
    for method in METHODS.values():
        assert method.grid, method.name
        mask = np.zeros(photo.shape[:2], bool)
        out = method.run(photo, method.grid[0], mask)
        assert out.shape == photo.shape and out.dtype == np.uint8, method.name
    for defect in DEFECTS.values():
        names = [m.name for m in methods_for(defect.family)]
        assert "none" in names and len(names) >= 3, defect.name
    assert grid(a=[1, 2], b=[3]) == [{"a": 1, "b": 3}, {"a": 2, "b": 3}]
