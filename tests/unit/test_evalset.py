"""The labelled evaluation set: exact threshold masks, composites whose masks match them, the hard cases,
byte-for-byte reproducibility (synthetic photos and the real clothing photos), and the evaluation over it."""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from productstudio.editing.evalset import build_evalset, threshold_mask
from productstudio.metrics.mask_quality import mask_iou

# product colours of the synthetic sources; the last one is light (for the light-on-light case)
COLOURS = {"red": (200, 30, 40), "blue": (30, 60, 190), "green": (40, 150, 60), "purple": (120, 40, 140),
           "brown": (110, 70, 30), "teal": (20, 130, 130), "yellow": (235, 215, 120)}


def plain_photo(colour, height=160, width=120, seed=0, centre=(60, 80), axes=(35, 50)):
    """A coloured ellipse on a light background with a gentle lighting gradient and sensor noise."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:height, 0:width]
    background = 238 - 14 * ys[..., None] / height + rng.normal(0, 1.5, (height, width, 3))
    inside = ((xs - centre[0]) / axes[0]) ** 2 + ((ys - centre[1]) / axes[1]) ** 2 <= 1
    photo = background.copy()
    photo[inside] = np.array(colour) + rng.normal(0, 1.5, (np.count_nonzero(inside), 3))
    return np.clip(photo, 0, 255).astype(np.uint8), inside


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("photos")
    for split in ("train", "validation"):
        (root / split / "shirt").mkdir(parents=True)
    for index, (name, colour) in enumerate(COLOURS.items()):
        photo, _ = plain_photo(colour, seed=index)
        split = "validation" if index % 3 == 2 else "train"
        Image.fromarray(photo).save(root / split / "shirt" / f"{name}.jpg", quality=97)
    noisy = np.random.default_rng(9).integers(0, 255, (160, 120, 3), dtype=np.uint8)  # not a plain background
    Image.fromarray(noisy).save(root / "train" / "shirt" / "texture.jpg", quality=97)
    return root


def read(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image)


def index_rows(out: Path) -> list[dict]:
    with open(out / "index.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def all_bytes(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def test_threshold_mask_is_exact_on_a_plain_background():
    photo, truth = plain_photo((200, 30, 40))
    mask, why = threshold_mask(photo)
    assert why == "" and mask.dtype == np.uint8
    assert mask_iou(mask.astype(np.float32), truth.astype(np.float32)) > 0.97


def test_threshold_mask_refuses_unclean_photos():
    noisy = np.random.default_rng(0).integers(0, 255, (160, 120, 3), dtype=np.uint8)
    assert threshold_mask(noisy) == (None, "background not plain")
    touching, _ = plain_photo((200, 30, 40), centre=(60, 112), axes=(20, 50))  # its tip runs off the bottom
    assert threshold_mask(touching) == (None, "touches the border")
    first, inside_first = plain_photo((200, 30, 40), centre=(30, 80), axes=(18, 40))
    second, inside_second = plain_photo((30, 60, 190), centre=(90, 80), axes=(18, 40))
    two = np.where(inside_second[..., None], second, first)
    assert threshold_mask(two) == (None, "several parts")


@pytest.fixture(scope="module")
def synthetic_set(synthetic_root, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("evalset")
    return out, build_evalset(synthetic_root, out, size=10, seed=3)


def test_build_writes_images_masks_index_and_sheet(synthetic_set):
    out, report = synthetic_set
    rows = index_rows(out)
    assert report["images"] == len(rows) == 10
    assert report["discarded"] == {"background not plain": 1}
    assert {row["case"] for row in rows} == {"photo-background", "plain-background", "light-on-light",
                                             "touching-edge", "filling-frame"}
    assert (out / "contact_sheet.png").is_file() and (out / "report.json").is_file()
    for row in rows:
        image, mask = read(out / "images" / f"{row['id']}.png"), read(out / "masks" / f"{row['id']}.png")
        assert image.shape == (int(row["height"]), int(row["width"]), 3) and mask.shape == image.shape[:2]
        assert mask.dtype == np.uint8 and mask.max() == 255
        assert "test" not in row["source"]  # the test split is never used
        if row["case"] == "light-on-light":
            assert row["source"].endswith("yellow.jpg")


def test_masks_match_the_composites(synthetic_set):
    out, _ = synthetic_set
    for row in index_rows(out):
        image, mask = read(out / "images" / f"{row['id']}.png"), read(out / "masks" / f"{row['id']}.png")
        colour = np.array(COLOURS[Path(row["source"]).stem])
        kernel = np.ones((5, 5), np.uint8)
        inside = cv2.erode((mask == 255).astype(np.uint8), kernel) > 0
        outside = cv2.erode((mask == 0).astype(np.uint8), kernel) > 0
        distance = np.abs(image.astype(int) - colour).max(axis=2)
        assert np.percentile(distance[inside], 99) < 16, row  # the product where the mask says so
        if row["case"] == "photo-background":  # corners of the other (light) synthetic photos
            assert np.percentile(distance[outside], 1) > 40, row  # and not where it says background
        edges = [mask[0].max(), mask[-1].max(), mask[:, 0].max(), mask[:, -1].max()]
        solid_edges = sum(int(edge >= 128) for edge in edges)
        assert solid_edges == (1 if row["case"] == "touching-edge" else 0), row
        if row["case"] == "filling-frame":
            ys, xs = np.nonzero(mask >= 128)
            fill = max((np.ptp(xs) + 1) / mask.shape[1], (np.ptp(ys) + 1) / mask.shape[0])
            assert fill > 0.8


def test_build_is_reproducible(synthetic_root, synthetic_set, tmp_path):
    out, _ = synthetic_set
    again = tmp_path / "again"
    build_evalset(synthetic_root, again, size=10, seed=3)
    assert all_bytes(again) == all_bytes(out)
    other = tmp_path / "other-seed"
    build_evalset(synthetic_root, other, size=10, seed=4)
    assert all_bytes(other) != all_bytes(out)


def test_extra_hard_cases_come_after_and_leave_the_others_alone(synthetic_root, synthetic_set, tmp_path):
    out, _ = synthetic_set
    extended = tmp_path / "extended"
    report = build_evalset(synthetic_root, extended, size=10, seed=3, extra_hard=4)
    rows = index_rows(extended)
    assert report["images"] == 14 and [row["case"] for row in rows[10:]] == ["see-through", "reflective"] * 2
    for row in rows[:10]:  # the first ten are byte for byte the set without extras
        for kind in ("images", "masks"):
            assert (extended / kind / f"{row['id']}.png").read_bytes() == (out / kind / f"{row['id']}.png").read_bytes()
    for row in rows[10:]:
        image, mask = read(extended / "images" / f"{row['id']}.png"), read(extended / "masks" / f"{row['id']}.png")
        colour = np.array(COLOURS[Path(row["source"]).stem])
        inside = cv2.erode((mask == 255).astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
        distance = np.abs(image.astype(int) - colour).max(axis=2)
        assert mask.max() == 255 and inside.any()
        # the truth is the whole product, yet its pixels are no longer the product's own colour
        assert np.median(distance[inside]) > 10, row


def test_build_from_real_photos_is_reproducible(clothing_dir, tmp_path):
    first = build_evalset(clothing_dir, tmp_path / "a", size=4, seed=0)
    build_evalset(clothing_dir, tmp_path / "b", size=4, seed=0)
    assert first["images"] == 4 and first["sources"] >= 4
    assert all_bytes(tmp_path / "a") == all_bytes(tmp_path / "b")
    for path in sorted((tmp_path / "a" / "masks").glob("*.png")):
        mask = read(path)
        assert 0.02 < (mask >= 128).mean() < 0.9


def test_evaluation_compares_ours_with_plain(synthetic_set, tmp_path):
    from productstudio.config import CutoutSettings
    from productstudio.editing.segmentation_eval import evaluate_cutouts
    from productstudio.models.pretrained import weights_dir
    from productstudio.models.salient import load_segmenter

    out, _ = synthetic_set
    segmenter = load_segmenter(weights_dir("u2netp"), threads=1)
    report = evaluate_cutouts(out, segmenter, CutoutSettings(refine_radius=4), out_dir=tmp_path, limit=3)
    summary, rows = report["summary"], report["rows"]
    assert len(rows) == 3 and {"iou", "mae", "boundary_f", "plain_iou", "case"} <= set(rows[0])
    for variant in ("ours", "plain"):
        assert summary[variant]["count"] == 3
        assert 0 <= summary[variant]["iou_min"] <= summary[variant]["iou_mean"] <= 1
    assert summary["ours"]["iou_mean"] > 0.9  # saturated ellipses on light backgrounds: easy
    assert set(summary["cases"]) == {row["case"] for row in rows}
    assert (tmp_path / "worst_cases.png").is_file() and (tmp_path / "rows.csv").is_file()
