"""The metadata table: one row per file (per record for IDX sources), with a status and a one-line reason.

status is 'ok', 'converted' (usable after a conversion the reason names) or 'quarantined'
(unusable; the reason says why). Nothing is deleted: quarantined files stay where they are.
"""

from __future__ import annotations

import hashlib
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd
from PIL import Image
from tqdm import tqdm

from productstudio.config import ValidateSettings
from productstudio.data import images as img
from productstudio.data.raw import FASHION_DIR, RawDataset
from productstudio.data.image_folder import read_catalogue

COLUMNS = [
    "path", "sha256", "format", "mode", "width", "height", "bytes", "category", "split",
    "brightness", "contrast", "blur", "dhash", "near_dup_group", "leaks_across_splits", "status", "reason",
]
IMAGE_EXTENSIONS = {ext for ext, fmt in Image.registered_extensions().items()}
STATS_SIDE = 256  # statistics on a bounded thumbnail: comparable across sizes, fast on big photos


def _stats(gray: Image.Image) -> dict:
    thumb = gray.copy()
    thumb.thumbnail((STATS_SIDE, STATS_SIDE))
    array = np.asarray(thumb, dtype=np.float32)
    return {
        "brightness": float(array.mean()),
        "contrast": float(array.std()),
        "blur": float(img.laplacian_variance(array)) if min(array.shape) >= 3 else 0.0,
        "dhash": img.dhash(gray),
    }


def inspect_file(path: Path, rel: str, raw: RawDataset, settings: ValidateSettings) -> dict:
    """One row for one file: everything we can learn, and why it is or is not usable."""
    where = raw.locate(rel)
    data = path.read_bytes()
    row = {
        "path": rel, "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data),
        "category": where.category, "split": where.split,
    }
    ext = PurePosixPath(rel).suffix.lower()

    def quarantine(reason: str) -> dict:
        return {**row, "status": "quarantined", "reason": reason}

    if not data:
        return quarantine("empty file (0 bytes)")
    try:
        image = img.open_image(path, settings.max_pixels)
    except img.BadImage as error:
        if ext not in IMAGE_EXTENSIONS and not str(error).startswith("decompression"):
            return quarantine(f"stray non-image file ({ext or 'no extension'})")
        return quarantine(str(error))
    with image:
        width, height = image.size
        row.update({"format": image.format, "mode": image.mode, "width": width, "height": height})
        notes = []
        if where.category is None:
            return quarantine("outside any category folder: put it in <root>/[<split>/]<category>/")
        if image.format not in settings.allowed_formats:
            return quarantine(f"format {image.format} not allowed (allowed: {', '.join(settings.allowed_formats)})")
        if image.mode not in settings.allowed_modes:
            return quarantine(f"mode {image.mode} not allowed (allowed: {', '.join(settings.allowed_modes)})")
        if min(width, height) < settings.min_side:
            return quarantine(f"too small: {width}x{height}, the shorter side must be at least {settings.min_side} px")
        if max(width, height) > settings.max_side:
            return quarantine(f"too large: {width}x{height}, the longer side must be at most {settings.max_side} px")
        expected_exts = {e for e, fmt in Image.registered_extensions().items() if fmt == image.format}
        if ext not in expected_exts:
            notes.append(f"extension {ext or '(none)'} but content is {image.format}")
        frames = getattr(image, "n_frames", 1)
        if frames > 1:
            notes.append(f"{frames} frames: the first is used")
        turn = img.orientation(image)
        if turn != 1:
            notes.append(f"EXIF orientation {turn}: turned upright")
        if image.mode not in ("L", "RGB"):
            notes.append(f"mode {image.mode}: converted")
        gray = img.to_mode(img.upright(image), "L")
        row.update(_stats(gray))
    return {**row, "status": "converted" if notes else "ok", "reason": "; ".join(notes) or None}


def _folder_table(raw: RawDataset, settings: ValidateSettings) -> pd.DataFrame:
    rows = [
        inspect_file(raw.images_dir / rel, rel, raw, settings)
        for rel in tqdm(raw.files(), desc="validate", unit="file", disable=None)
    ]
    frame = pd.DataFrame(rows, columns=COLUMNS)
    catalogue = raw.catalogue_path
    if catalogue is not None:
        frame = _join_catalogue(frame, read_catalogue(catalogue))
    return frame


def _join_catalogue(frame: pd.DataFrame, rows: list[dict]) -> pd.DataFrame:
    """Catalogue rows are matched to images by file stem = sku; a category disagreement is noted."""
    by_sku = {row["sku"]: row for row in rows}
    stems = frame["path"].map(lambda p: PurePosixPath(p).stem)
    frame["sku"] = stems.where(stems.isin(by_sku.keys()))
    frame["description"] = frame["sku"].map(lambda s: by_sku[s]["description"] if isinstance(s, str) else None)
    for index in frame.index[frame["sku"].notna()]:
        listed = by_sku[frame.at[index, "sku"]]["category"]
        if listed != frame.at[index, "category"] and frame.at[index, "status"] != "quarantined":
            note = f"catalogue says category {listed!r}, folder says {frame.at[index, 'category']!r}"
            frame.at[index, "reason"] = "; ".join(filter(None, [frame.at[index, "reason"], note]))
    return frame


def _idx_table(raw: RawDataset) -> pd.DataFrame:
    """Fashion-MNIST: one row per image record, computed vectorised (70k rows in seconds)."""
    frames = []
    for split, (images, labels) in raw.arrays().items():
        n = len(images)
        lap = img.laplacian_variance(images)
        hashes = [img.dhash(Image.fromarray(x)) for x in tqdm(images, desc=f"validate {split}", unit="img", disable=None)]
        frames.append(pd.DataFrame({
            "path": [f"{FASHION_DIR}/{split}/{i:05d}" for i in range(n)],
            "sha256": [hashlib.sha256(x.tobytes()).hexdigest() for x in images],
            "format": "IDX", "mode": "L", "width": images.shape[2], "height": images.shape[1],
            "bytes": images[0].nbytes if n else 0,
            "category": [raw.categories[label] for label in labels],
            "split": split,
            "brightness": images.mean(axis=(1, 2)), "contrast": images.std(axis=(1, 2)), "blur": lap,
            "dhash": hashes, "status": "ok", "reason": None,
        }))
    return pd.concat(frames, ignore_index=True).reindex(columns=COLUMNS)


def add_duplicate_groups(frame: pd.DataFrame) -> pd.DataFrame:
    """near_dup_group numbers the sets of files with an equal dHash (identical bytes included);
    leaks_across_splits marks members of a set that spans more than one split."""
    hashed = frame["dhash"].notna()
    sizes = frame[hashed].groupby("dhash")["dhash"].transform("size")
    shared = sizes[sizes > 1].index
    group_ids = {h: i for i, h in enumerate(sorted(frame.loc[shared, "dhash"].unique()))}
    frame["near_dup_group"] = frame["dhash"].map(group_ids).where(frame.index.isin(shared)).astype("Int64")
    splits_per_group = frame.loc[shared].groupby("dhash")["split"].nunique()
    leaking = set(splits_per_group[splits_per_group > 1].index)
    frame["leaks_across_splits"] = frame["dhash"].isin(leaking)
    return frame


def build_metadata_table(raw: RawDataset, settings: ValidateSettings) -> pd.DataFrame:
    frame = _idx_table(raw) if raw.source == "fashion-mnist" else _folder_table(raw, settings)
    return add_duplicate_groups(frame)
