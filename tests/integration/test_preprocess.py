"""Preprocessing for real: the validated hostile folder, determinism, a flat folder's seeded split,
and a Fashion-MNIST subset end to end."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageOps

from productstudio.config import parse_params
from productstudio.data import store
from productstudio.data.preprocess import preprocess
from productstudio.data.raw import ingest
from productstudio.validation.validate import METADATA, validate
from tests.integration import hostile

LEAK_ALLOWANCE = 0.1
RGB_PAD = {"mode": "RGB", "image_size": 32, "resize": "pad", "pad_value": 255}  # white bands, transparency on white
L_CROP = {"mode": "L", "image_size": 28, "resize": "crop"}


def _params(source: dict, validate_params: dict | None = None, preprocess_params: dict | None = None):
    return parse_params({"ingest": source, "validate": validate_params or {}, "preprocess": preprocess_params or {}})


def _run_chain(folder: Path, work: Path, preprocess_params: dict) -> tuple[Path, Path, Path]:
    """ingest -> validate (quarantine, leak allowance) -> preprocess; returns (raw, validation, processed)."""
    params = _params({"source": "image-folder", "image_folder": str(folder)}, {"max_leak_fraction": LEAK_ALLOWANCE}, preprocess_params)
    ingest(params.ingest, work / "raw")
    validate(work / "raw", work / "validation", params.validate, quarantine=True)
    preprocess(work / "raw", work / "validation", work / "processed", params.preprocess)
    return work / "raw", work / "validation", work / "processed"


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def hostile_run(tmp_path_factory, clothing_dir):
    base = tmp_path_factory.mktemp("hostile-preprocess")
    kinds = hostile.make_hostile_folder(base / "photos", clothing_dir)
    raw, validation, rgb_pad = _run_chain(base / "photos", base, RGB_PAD)
    l_crop = base / "processed-l-crop"
    preprocess(raw, validation, l_crop, _params({}, preprocess_params=L_CROP).preprocess)
    table = pd.read_csv(validation / METADATA)
    return {"base": base, "kinds": kinds, "raw": raw, "validation": validation, "table": table, "rgb_pad": rgb_pad, "l_crop": l_crop}


def _expected_items(run: dict) -> pd.DataFrame:
    """The usable files left after exact-duplicate removal, per split in path order (the store's order)."""
    table = run["table"]
    removed = {d["path"] for d in json.loads((run["rgb_pad"] / "duplicates_removed.json").read_text())}
    usable = table[(table["status"] != "quarantined") & ~table["path"].isin(removed)]
    return usable.sort_values("path")


def _index(run: dict, path: str) -> tuple[str, int]:
    items = _expected_items(run)
    split = items.set_index("path").loc[path, "split"]
    return split, list(items[items["split"] == split]["path"]).index(path)


@pytest.mark.parametrize("variant, channels, size", [("rgb_pad", 3, 32), ("l_crop", 1, 28)])
def test_hostile_shapes_labels_and_counts(hostile_run, variant, channels, size):
    processed = hostile_run[variant]
    categories = store.categories(processed)
    assert categories == list(hostile.CATEGORIES)
    items = _expected_items(hostile_run)
    # 32 usable (25 ok + 7 converted), one exact duplicate dropped from train.
    assert len(items) == 31
    expected_counts = {"train": 15, "val": 0, "test": 16}
    for split in store.SPLITS:
        images, labels = store.load_split(processed, split)
        assert images.dtype == np.uint8 and labels.dtype == np.int64
        assert images.shape == (expected_counts[split], channels, size, size)
        part = items[items["split"] == split]
        assert labels.tolist() == [categories.index(c) for c in part["category"]], f"{split}: labels do not follow the files"
        assert labels.min(initial=0) >= 0 and labels.max(initial=0) < len(categories)
        if len(images):
            assert images.std() > 10, f"{split}: images are (nearly) blank"
    manifest = json.loads((processed / "manifest.json").read_text())
    assert manifest["image_shape"] == [channels, size, size]
    assert manifest["counts"] == {"input": 42, "usable": 32, "duplicates_removed": 1, "kept": 31}


def test_exif_rotated_image_comes_out_upright(hostile_run):
    split, index = _index(hostile_run, "test/hat/exif6.jpg")
    images, _ = store.load_split(hostile_run["rgb_pad"], split)
    image = images[index].astype(int)  # (3, 32, 32)
    # Upright it is portrait 48x72 -> 21x32 inside 32x32: white bands left and right, none above or below.
    assert (image[:, :, :4] == 255).all() and (image[:, :, -4:] == 255).all(), "no padding bands at the sides"
    assert (image[:, :2, 8:24] < 230).all() and (image[:, -2:, 8:24] < 230).all(), "padding above/below: still lying on its side"
    # ... and the right way up: the dark half on top.
    top, bottom = image[:, 2:14, 8:24].mean(), image[:, 18:30, 8:24].mean()
    assert abs(top - hostile.EXIF_TOP_LEVEL) < 20 and abs(bottom - hostile.EXIF_BOTTOM_LEVEL) < 20, (top, bottom)


def test_sixteen_bit_png_is_scaled_not_clipped(hostile_run, clothing_dir):
    split, index = _index(hostile_run, "test/pants/gray16.png")
    images, _ = store.load_split(hostile_run["l_crop"], split)
    got = images[index, 0].astype(float)
    assert (got == 255).mean() < 0.2, "the 16-bit image came out (nearly) all white: clipped, not scaled"
    expected = np.asarray(ImageOps.fit(Image.fromarray(hostile.gray16_source(clothing_dir)), (28, 28), method=Image.Resampling.LANCZOS), float)
    assert np.abs(got - expected).mean() < 3, "the 16-bit image does not match its 8-bit source"


def test_converted_files_become_plain_pixels(hostile_run):
    """RGBA is flattened on white (its transparent left strip), the palette and CMYK images are colour."""
    images, _ = store.load_split(hostile_run["rgb_pad"], "train")
    _, rgba = _index(hostile_run, "train/pants/rgba.png")
    # 400x533 -> 24x32 with bands of 4 px each side; the transparent quarter is the next ~6 px.
    assert (images[rgba][:, :, 4:9] >= 250).all(), "the transparent strip is not white"
    for path in ("train/hat/cmyk.jpg", "train/shoes/palette.png", "train/shoes/really_a_png.jpg"):
        _, i = _index(hostile_run, path)
        assert images[i].std() > 10, path


def test_exact_duplicate_kept_in_test_removed_from_train(hostile_run):
    leaks = sorted(p for p, k in hostile_run["kinds"].items() if k == hostile.LEAK)
    in_test, in_train = (next(p for p in leaks if p.startswith(s)) for s in ("test/", "train/"))
    removed = json.loads((hostile_run["rgb_pad"] / "duplicates_removed.json").read_text())
    assert removed == [{"path": in_train, "duplicate_of": in_test}]
    test_images, _ = store.load_split(hostile_run["rgb_pad"], "test")
    train_images, _ = store.load_split(hostile_run["rgb_pad"], "train")
    _, index = _index(hostile_run, in_test)
    kept = test_images[index]
    assert not any(np.array_equal(kept, other) for other in train_images), "the duplicate is still in train"


def test_preprocess_is_byte_deterministic(hostile_run, tmp_path):
    """The whole chain again into other directories (ingest, validate, preprocess): identical bytes."""
    _, validation, processed = _run_chain(hostile_run["base"] / "photos", tmp_path, RGB_PAD)
    assert (validation / METADATA).read_bytes() == (hostile_run["validation"] / METADATA).read_bytes()
    first, second = _files(hostile_run["rgb_pad"]), _files(processed)
    assert sorted(first) == sorted(second)
    assert len(first) >= 8  # manifest, duplicates list, images and labels of three splits
    for name in first:
        assert first[name] == second[name], f"{name} differs between two runs"


def test_data_version_is_the_data_not_the_commit(hostile_run, tmp_path, monkeypatch):
    """Another commit writing the same shards is the same data version (cached real features stay valid, no
    "data changed" retrain); relabelled shards are a new one."""
    import productstudio.artifacts as artifacts

    monkeypatch.setattr(artifacts, "code_version", lambda: "9.9.9+gdeadbee")
    processed = tmp_path / "processed"
    preprocess(hostile_run["raw"], hostile_run["validation"], processed, _params({}, preprocess_params=RGB_PAD).preprocess)
    manifest = json.loads((processed / "manifest.json").read_text())
    assert manifest["code_version"] == "9.9.9+gdeadbee"
    assert store.data_version(processed) == store.data_version(hostile_run["rgb_pad"])

    shard = manifest["splits"]["train"]["shards"][0]
    assert shard["labels_sha256"] == hashlib.sha256((processed / shard["labels"]).read_bytes()).hexdigest()
    shard["labels_sha256"] = "0" * 64  # what the manifest of relabelled shards records
    (processed / "manifest.json").write_text(json.dumps(manifest))
    assert store.data_version(processed) != store.data_version(hostile_run["rgb_pad"])


@pytest.fixture(scope="module")
def flat_folder(tmp_path_factory, clothing_dir):
    """3 categories x 20 real photos, no split folders."""
    root = tmp_path_factory.mktemp("flat") / "photos"
    for category in ("dress", "shorts", "skirt"):
        (root / category).mkdir(parents=True)
        for photo in sorted((clothing_dir / "train" / category).glob("*.jpg"))[:20]:
            shutil.copyfile(photo, root / category / photo.name)
    digests = {hashlib.sha256(p.read_bytes()).digest() for p in root.rglob("*.jpg")}
    assert len(digests) == 60, "the sample holds exact duplicates; pick other photos"
    return root


def _split_digests(processed: Path) -> dict[str, set[bytes]]:
    out = {}
    for split in store.SPLITS:
        images, _ = store.load_split(processed, split)
        out[split] = {hashlib.sha256(x.tobytes()).digest() for x in images}
    return out


def test_flat_folder_gets_a_seeded_stratified_split(flat_folder, tmp_path):
    split_params = {"mode": "L", "image_size": 28, "resize": "crop", "val_fraction": 0.1, "test_fraction": 0.2}
    _, _, first = _run_chain(flat_folder, tmp_path / "seed0", {**split_params, "seed": 0})
    raw = tmp_path / "seed0" / "raw"
    assert json.loads((raw / "manifest.json").read_text())["layout"] == "flat"
    # Per category of 20: test round(20 * 0.2) = 4, val 0.1 of the whole = round(16 * 0.125) = 2, train 14.
    expected = {"train": 14, "val": 2, "test": 4}
    for split, per_category in expected.items():
        _, labels = store.load_split(first, split)
        assert np.bincount(labels, minlength=3).tolist() == [per_category] * 3, split
    digests = _split_digests(first)
    assert sum(map(len, digests.values())) == 60 and len(set().union(*digests.values())) == 60, "an image lost or in two splits"

    # Another seed: the same stratified counts, a different choice of images.
    second = tmp_path / "seed1-processed"
    params = _params({}, preprocess_params={**split_params, "seed": 1})
    preprocess(raw, tmp_path / "seed0" / "validation", second, params.preprocess)
    for split, per_category in expected.items():
        _, labels = store.load_split(second, split)
        assert np.bincount(labels, minlength=3).tolist() == [per_category] * 3, split
    other = _split_digests(second)
    assert other["test"] != digests["test"] and other["val"] != digests["val"]
    assert set().union(*other.values()) == set().union(*digests.values())


def test_fashion_mnist_subset_end_to_end(fashion_dir, tmp_path):
    params = _params(
        {"source": "fashion-mnist", "fashion_mnist_dir": str(fashion_dir), "limit_per_category": 30},
        # Two of these 600 items are near-identical across train and test (a real leak in Fashion-MNIST).
        {"max_leak_fraction": 0.01},
        {"mode": "RGB", "image_size": 32, "resize": "pad"},
    )
    raw = ingest(params.ingest, tmp_path / "raw")
    report = validate(tmp_path / "raw", tmp_path / "validation", params.validate)
    assert report["success"] and report["counts"]["files"] == 600 and report["counts"]["leaking_across_splits"] == 2
    table = pd.read_csv(tmp_path / "validation" / METADATA)
    assert table["split"].value_counts().to_dict() == {"train": 300, "test": 300}

    manifest = preprocess(tmp_path / "raw", tmp_path / "validation", tmp_path / "processed", params.preprocess)
    assert {s: manifest["splits"][s]["count"] for s in store.SPLITS} == {"train": 300, "val": 0, "test": 300}
    arrays = raw.arrays()
    for split in ("train", "test"):
        images, labels = store.load_split(tmp_path / "processed", split)
        assert images.shape == (300, 3, 32, 32) and images.dtype == np.uint8
        assert np.bincount(labels, minlength=10).tolist() == [30] * 10
        assert labels.tolist() == arrays[split][1].tolist(), f"{split}: labels out of step with the source records"
        assert (images[:, 0] == images[:, 1]).all() and (images[:, 1] == images[:, 2]).all(), "grey source, yet colour differs"
        # Each image is its 28x28 record, resized: shrinking it back gives the record again (roughly).
        back = np.stack([np.asarray(Image.fromarray(x[0]).resize((28, 28), Image.Resampling.BILINEAR), float) for x in images[:20]])
        assert np.abs(back - arrays[split][0][:20]).mean() < 12
