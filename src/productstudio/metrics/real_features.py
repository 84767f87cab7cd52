"""The real images' Inception features, extracted once and kept on disk.

``RealStatsCache`` extracts the real images' features once per (data version, split, count, feature
network + protocol) and keeps them on disk, so evaluating a new model only costs its generated side.
Real images are always taken in split order, so a cached larger count also serves any smaller count.

The ``real_stats`` stage is the only writer of its cache (a DVC output). Everyone else reads it through
``RealFeatures``: a count that cache does not hold is extracted into a private scratch cache instead.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from productstudio.artifacts import write_json_atomic
from productstudio.metrics import features as feats
from productstudio.metrics.fid import FeatureStats

REAL_SELECTION = "first num_real images in split order"
CACHE_FORMAT = 1


def network_fields() -> dict:
    info = feats.network_info()
    return {
        "feature_network": info.name,
        "feature_network_sha256": info.sha256,
        "resize_method": info.resize_method,
        "input_scaling": info.input_scaling,
    }


# --------------------------------------------------------------------------------------------------
# The real side, cached.


class RealStatsCache:
    """Features (and statistics) of real images, computed once per key and kept under ``root``.

    Key: data version, split, feature network sha256, resize method and input scaling, cache format.
    Each entry holds the features of the first ``count`` images of the split (float32, exactly what the
    network outputs), so an entry serves any request for ``count`` or fewer; an entry made from a whole
    split (fewer images than asked for) serves every larger request too, and says so.

    ``computed`` and ``loaded`` count misses and hits in this object (the network runs only on a miss).
    """

    def __init__(
        self,
        root: str | Path,
        *,
        device: str = "cpu",
        batch_size: int = 32,
        progress: bool = True,
    ) -> None:
        self.root = Path(root)
        self.device = device
        self.batch_size = batch_size
        self.progress = progress
        self.computed = 0
        self.loaded = 0

    @staticmethod
    def key(data_version: str, split: str) -> dict:
        if not data_version:
            raise ValueError("data_version is required: the real statistics are only valid for one data version")
        return {"cache_format": CACHE_FORMAT, "data_version": str(data_version), "split": split, **network_fields()}

    @staticmethod
    def _key_id(key: dict) -> str:
        return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]

    def _entries(self, key: dict) -> list[tuple[int, bool, Path]]:
        """(count, complete, folder) of the valid entries for this key, largest first."""
        found = []
        for folder in self.root.glob(f"{key['split']}-{self._key_id(key)}-n*"):
            meta_path = folder / "entry.json"
            if not (meta_path.is_file() and (folder / "features.npy").is_file()):
                continue
            meta = json.loads(meta_path.read_text())
            if meta.get("key") != key:
                continue
            found.append((int(meta["count"]), bool(meta["complete"]), folder))
        return sorted(found, key=lambda item: -item[0])

    def lookup(self, data_version: str, split: str, count: int) -> Path | None:
        """The entry folder that can serve ``count`` images, or None."""
        for stored, complete, folder in self._entries(self.key(data_version, split)):
            if stored >= count or complete:
                return folder
        return None

    def largest(self, data_version: str, split: str) -> np.ndarray | None:
        """Features (n, 2048) float64 of the largest entry for this split, or None; never computes."""
        entries = self._entries(self.key(data_version, split))
        if not entries:
            return None
        return np.load(entries[0][2] / "features.npy", allow_pickle=False).astype(np.float64)

    def features(
        self,
        images: np.ndarray | Callable[[], np.ndarray],
        *,
        data_version: str,
        split: str,
        count: int,
    ) -> np.ndarray:
        """Features (n, 2048) float64 of the first ``count`` images of ``split``; n < count only when
        the split has fewer images. ``images`` (the split's uint8 images, or a function loading them)
        is only touched on a cache miss."""
        if count < 1:
            raise ValueError("count must be >= 1")
        folder = self.lookup(data_version, split, count)
        if folder is not None:
            self.loaded += 1
            stored = np.load(folder / "features.npy", allow_pickle=False)
            return stored[:count].astype(np.float64)
        array = images() if callable(images) else images
        available = int(array.shape[0])
        taken = array[: min(count, available)]
        result = feats.extract_features(taken, batch_size=self.batch_size, device=self.device, progress=self.progress)
        self.computed += 1
        self._store(self.key(data_version, split), result, complete=available <= count)
        return result

    def stats(self, images, *, data_version: str, split: str, count: int) -> FeatureStats:
        return FeatureStats.from_features(self.features(images, data_version=data_version, split=split, count=count))

    def _store(self, key: dict, features: np.ndarray, complete: bool) -> Path:
        count = int(features.shape[0])
        folder = self.root / f"{key['split']}-{self._key_id(key)}-n{count}"
        self.root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=self.root, prefix=".staging-"))
        try:
            # float32 is lossless here: the network computes and returns float32.
            np.save(staging / "features.npy", features.astype(np.float32), allow_pickle=False)
            FeatureStats.from_features(features).save(staging / "stats.npz", protocol=self.protocol(key, count))
            write_json_atomic(staging / "entry.json", {"key": key, "count": count, "complete": complete})
            if folder.exists():
                shutil.rmtree(folder)
            os.replace(staging, folder)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return folder

    @staticmethod
    def protocol(key: dict, count: int) -> dict:
        return {**feats.network_info().protocol(), **key, "num_real": count, "real_selection": REAL_SELECTION}


class RealFeatures:
    """The real side of the metrics for one processed dataset: ``features(split, count)``.

    ``shared`` (the real_stats stage's cache, a DVC output) is only ever read; a count it does not hold
    is extracted into ``scratch`` (a private cache, e.g. ``<generated-features dir>/real``), never into
    another stage's output. ``scratch=None``: such a count is extracted and not kept.
    """

    def __init__(self, processed_dir: str | Path, shared: str | Path | None, scratch: str | Path | None, *,
                 device: str = "cpu", batch_size: int = 32, progress: bool = True) -> None:
        from productstudio.data.store import data_version

        self.processed_dir = Path(processed_dir)
        self.data_version = data_version(processed_dir)
        options = {"device": str(device), "batch_size": batch_size, "progress": progress}
        self.shared = RealStatsCache(shared, **options) if shared is not None else None
        self.scratch = RealStatsCache(scratch, **options) if scratch is not None else None
        self.device, self.batch_size, self.progress = str(device), batch_size, progress  # for an uncached count
        self._read_before: dict[tuple[str, int], tuple[np.ndarray, dict]] = {}

    def _images(self, split: str) -> np.ndarray:
        from productstudio.data import store

        return store.load_split(self.processed_dir, split, mmap=True)[0]

    def labels(self, split: str, count: int) -> np.ndarray:
        """Categories of the first ``count`` images of ``split`` (the order the features are in)."""
        from productstudio.data import store

        return np.asarray(store.load_split(self.processed_dir, split, mmap=True)[1][:count])

    def features(self, split: str, count: int) -> tuple[np.ndarray, dict]:
        """Features (n, 2048) float64 of the first ``count`` images of ``split`` and their protocol
        (network, data version, split, ``num_real``, how the images were selected)."""
        if (split, count) not in self._read_before:  # per-category metrics ask for the same features often
            self._read_before[(split, count)] = self._features(split, count)
        return self._read_before[(split, count)]

    def _features(self, split: str, count: int) -> tuple[np.ndarray, dict]:
        for cache in (self.shared, self.scratch):
            if cache is not None and cache.lookup(self.data_version, split, count) is not None:
                return self._read(cache, split, count)
        if self.scratch is not None:
            return self._read(self.scratch, split, count)
        images = self._images(split)[:count]
        real = feats.extract_features(np.ascontiguousarray(images), batch_size=self.batch_size, device=self.device,
                                      progress=self.progress)
        return real, RealStatsCache.protocol(RealStatsCache.key(self.data_version, split), len(real))

    def _read(self, cache: RealStatsCache, split: str, count: int) -> tuple[np.ndarray, dict]:
        real = cache.features(lambda: self._images(split), data_version=self.data_version, split=split, count=count)
        return real, cache.protocol(cache.key(self.data_version, split), len(real))
