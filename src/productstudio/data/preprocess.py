"""Preprocessing step: validated raw data -> fixed-size uint8 tensor shards with labels and a manifest.

EXIF transpose, colour mode, aspect-preserving resize (pad or centre crop), exact-duplicate removal,
and a seeded stratified split where the source has none. Same inputs and params, same bytes out.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from tqdm import tqdm

from productstudio.errors import MissingInput
from productstudio.artifacts import sha256_file, staged_directory, write_manifest
from productstudio.config import PreprocessSettings, section_dict
from productstudio.data import images as img
from productstudio.data import store
from productstudio.data.raw import RawDataset

# When the same content sits in several splits, the evaluation split keeps it (no leakage into train).
SPLIT_PRIORITY = {"test": 0, "val": 1, "train": 2}


class NotValidated(MissingInput):
    pass


def _read_validation(validation_dir: Path) -> tuple[dict, pd.DataFrame]:
    from productstudio.paths import VALIDATION_METADATA as METADATA, VALIDATION_REPORT as REPORT

    report_path = validation_dir / REPORT
    if not report_path.exists():
        raise NotValidated(f"{validation_dir}: no {REPORT}; run 'productstudio validate' first")
    report = json.loads(report_path.read_text())
    if not report["success"]:
        raise NotValidated(f"{report_path}: validation failed; fix the data or rerun validate with --quarantine")
    table = pd.read_csv(validation_dir / METADATA, dtype={"split": "string", "category": "string"}, keep_default_na=True)
    return report, table


def _convert(image: Image.Image, settings: PreprocessSettings) -> np.ndarray:
    # Transparency is flattened onto white (studio background), whatever the padding colour.
    image = img.to_mode(img.upright(image), settings.mode, background=255)
    image = img.fit_square(image, settings.image_size, settings.resize, settings.pad_value)
    array = np.asarray(image, dtype=np.uint8)
    return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)


def _load_items(raw: RawDataset, table: pd.DataFrame, settings: PreprocessSettings) -> pd.DataFrame:
    """One row per usable item with its pixels (C, H, W), label, split and content hash."""
    usable = table[table["status"] != "quarantined"].reset_index(drop=True)
    label_of = {name: i for i, name in enumerate(raw.categories)}
    pixels: list[np.ndarray] = []
    if raw.source == "fashion-mnist":
        arrays = raw.arrays()
        keep_as_is = settings.image_size == 28 and settings.mode == "L"
        for split, (images, _) in arrays.items():
            rows = usable[usable["split"] == split]
            indices = rows["path"].str.rsplit("/", n=1).str[1].astype(int)
            for i in tqdm(indices, desc=f"preprocess {split}", unit="img", disable=None):
                pixels.append(images[i][None] if keep_as_is else _convert(Image.fromarray(images[i]), settings))
        usable = pd.concat([usable[usable["split"] == s] for s in arrays]).reset_index(drop=True)
    else:
        for rel in tqdm(usable["path"], desc="preprocess", unit="img", disable=None):
            with img.open_image(raw.images_dir / rel, max_pixels=1 << 62) as image:  # validated already
                pixels.append(_convert(image, settings))
    usable["pixels"] = pixels
    usable["label"] = usable["category"].map(label_of).astype(np.int64)
    return usable


def _drop_exact_duplicates(items: pd.DataFrame) -> tuple[pd.DataFrame, list[dict]]:
    """Keep one copy of identical content: the one in the evaluation split, then the first path."""
    ordered = items.assign(_priority=items["split"].map(SPLIT_PRIORITY).fillna(3)).sort_values(["_priority", "path"], kind="stable")
    duplicated = ordered["sha256"].duplicated(keep="first")
    kept_by_hash = ordered[~duplicated].set_index("sha256")["path"]
    removed = [{"path": p, "duplicate_of": kept_by_hash[h]} for p, h in zip(ordered.loc[duplicated, "path"], ordered.loc[duplicated, "sha256"])]
    return items[~items.index.isin(ordered.index[duplicated])], removed


def _stratified_take(labels: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Boolean mask selecting about `fraction` of each label, chosen at random."""
    mask = np.zeros(len(labels), dtype=bool)
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        take = int(round(len(members) * fraction))
        mask[rng.permutation(members)[:take]] = True
    return mask


def _assign_splits(items: pd.DataFrame, settings: PreprocessSettings) -> pd.Series:
    """Keep the source's splits as given; a source without splits gets a seeded stratified one."""
    if items["split"].notna().any():
        return items["split"].fillna("train").astype(str)
    split = np.full(len(items), "train", dtype=object)
    labels = items["label"].to_numpy()
    rng = np.random.default_rng(settings.seed)
    test = _stratified_take(labels, settings.test_fraction, rng)
    split[test] = "test"
    rest = np.flatnonzero(~test)
    # val_fraction is of the whole dataset, so it is a larger share of what test left over
    val = _stratified_take(labels[rest], settings.val_fraction / max(1e-9, 1 - settings.test_fraction), rng)
    split[rest[val]] = "val"
    return pd.Series(split, index=items.index)


def preprocess(raw_dir: str | Path, validation_dir: str | Path, out_dir: str | Path, settings: PreprocessSettings) -> dict:
    raw = RawDataset.open(raw_dir)
    validation_dir = Path(validation_dir)
    _, table = _read_validation(validation_dir)
    items = _load_items(raw, table, settings)
    items, removed = _drop_exact_duplicates(items)
    items = items.assign(split=_assign_splits(items, settings))

    # Written beside out_dir and swapped in whole: a full disk or a crash half-way leaves the previous dataset as it
    # was, and the training step never reads shards without their manifest.
    with staged_directory(out_dir) as staging:
        channels = 1 if settings.mode == "L" else 3
        splits = {}
        for split in store.SPLITS:
            part = items[items["split"] == split].sort_values("path", kind="stable")
            images = np.stack(part["pixels"].to_list()) if len(part) else np.zeros((0, channels, settings.image_size, settings.image_size), np.uint8)
            labels = part["label"].to_numpy(np.int64)
            splits[split] = {
                "count": int(len(part)),
                "per_category": {name: int((labels == i).sum()) for i, name in enumerate(raw.categories)},
                "shards": store.write_split(staging, split, images, labels, settings.shard_size),
            }
        (staging / "duplicates_removed.json").write_text(json.dumps(removed, indent=2, sort_keys=True) + "\n")
        return write_manifest(
            staging,
            store.KIND,
            inputs={
                "raw_manifest_sha256": sha256_file(raw.root / "manifest.json"),
                "validation_metadata_sha256": sha256_file(validation_dir / "metadata.csv"),
            },
            params=section_dict(settings),
            categories=raw.categories,
            image_shape=[channels, settings.image_size, settings.image_size],
            splits=splits,
            counts={"input": int(len(table)), "usable": int(len(items) + len(removed)), "duplicates_removed": len(removed), "kept": int(len(items))},
        )
