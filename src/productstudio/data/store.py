"""Tensor store: uint8 image shards (N, C, H, W) and int64 labels as plain .npy files plus a manifest.

Plain .npy because it is byte-deterministic, memory-mappable and loads at disk speed.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np

from productstudio.artifacts import read_manifest, sha256_file
from productstudio.errors import DataError

KIND = "processed-dataset"
SPLITS = ("train", "val", "test")
# The manifest fields that say what the data are. Its code version and input hashes are left out of the data
# version: both change with every commit (the raw manifest records the code version too) while a rerun of
# preprocessing writes the same shards byte for byte, and a new version would throw away the cached real features,
# trigger a "data changed" retrain and refuse to resume a paused run for data that did not change.
CONTENT_FIELDS = ("kind", "categories", "image_shape", "params", "counts", "splits")


def data_version(processed_dir: str | Path) -> str:
    """The content hash of the processed dataset: sha256 of its manifest's content fields (every shard's hash, the
    categories, counts and params) as canonical JSON."""
    manifest = read_manifest(processed_dir, KIND)
    content = {field: manifest.get(field) for field in CONTENT_FIELDS}
    return hashlib.sha256(json.dumps(content, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def write_split(out: Path, split: str, images: np.ndarray, labels: np.ndarray, shard_size: int) -> list[dict]:
    """Write one split as shards; return their descriptions (file names, counts, hashes)."""
    shards = []
    for index, start in enumerate(range(0, max(len(images), 1), shard_size)):
        stem = f"{split}-{index:05d}"
        (out / f"{stem}.images.npy").write_bytes(_npy(images[start : start + shard_size]))
        (out / f"{stem}.labels.npy").write_bytes(_npy(labels[start : start + shard_size].astype(np.int64)))
        shards.append({
            "images": f"{stem}.images.npy",
            "labels": f"{stem}.labels.npy",
            "count": int(min(shard_size, len(images) - start)),
            "sha256": sha256_file(out / f"{stem}.images.npy"),
            "labels_sha256": sha256_file(out / f"{stem}.labels.npy"),  # so relabelled data are a new data version
        })
    return shards


def _npy(array: np.ndarray) -> bytes:
    """The .npy bytes of ``array``. Built in memory and written by Python: numpy writing to a file itself turns a
    full disk into "N requested and M written", which no longer says ENOSPC."""
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()


def load_split(processed_dir: str | Path, split: str, mmap: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """All images (N, C, H, W) uint8 and labels (N,) int64 of one split, in memory (or memory-mapped)."""
    root = Path(processed_dir)
    manifest = read_manifest(root, KIND)
    if split not in manifest["splits"]:
        raise DataError(f"{root}: no split '{split}' (has {', '.join(manifest['splits'])})")
    mode = "r" if mmap else None
    shards = manifest["splits"][split]["shards"]
    images = [np.load(root / s["images"], mmap_mode=mode, allow_pickle=False) for s in shards]
    labels = [np.load(root / s["labels"], allow_pickle=False) for s in shards]
    if len(images) == 1:
        return images[0], labels[0]
    return np.concatenate(images), np.concatenate(labels)


def categories(processed_dir: str | Path) -> list[str]:
    return list(read_manifest(processed_dir, KIND)["categories"])
