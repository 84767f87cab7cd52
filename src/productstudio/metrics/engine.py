"""Named metrics (stylegan2-ada style), their records, and the cache of the real set's features.

A metric name says what was measured: ``fid10k_test`` is FID between 10,000 generated images and the
first 10,000 images of the ``test`` split (fewer when the split is smaller; the record says how many);
``kid2k_train`` is KID between 2,000 generated and the first 2,000 training images. Any name of the form
``(fid|kid)<count>[k]_(train|test)`` is accepted; ``KNOWN_METRICS`` lists the usual ones.

Every result is a record (a JSON-able dict) carrying the value, the standard error where there is one
(KID), the sample counts on both sides, the reference split, the feature network and its file's sha256,
the resize method, and the data version the real images came from. FID from few samples is strongly
biased upwards (Fashion-MNIST train vs test: about 12.3 at 2k, 2.5 at 10k): compare FIDs only at the
same counts, and read the floor from ``fid_kid_between`` on two real sets at those counts.

``RealStatsCache`` extracts the real images' features once per (data version, split, count, feature
network + protocol) and keeps them on disk, so evaluating a new model only costs its generated side.
Real images are always taken in split order, so a cached larger count also serves any smaller count.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

from productstudio.artifacts import write_json_atomic
from productstudio.metrics import features as feats
from productstudio.metrics.fid import FeatureStats, frechet_distance
from productstudio.metrics.kid import kernel_inception_distance
from productstudio.metrics.names import KNOWN_METRICS, SPLITS, MetricSpec, parse_metric  # noqa: F401 (re-exported)

REAL_SELECTION = "first num_real images in split order"
CACHE_FORMAT = 1


def _network_fields() -> dict:
    info = feats.network_info()
    return {
        "feature_network": info.name,
        "feature_network_sha256": info.sha256,
        "resize_method": info.resize_method,
        "input_scaling": info.input_scaling,
    }


def _json_number(value: float) -> float | None:
    return None if value is None or math.isnan(value) else float(value)


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

    def key(self, data_version: str, split: str) -> dict:
        if not data_version:
            raise ValueError("data_version is required: the real statistics are only valid for one data version")
        return {"cache_format": CACHE_FORMAT, "data_version": str(data_version), "split": split, **_network_fields()}

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


# --------------------------------------------------------------------------------------------------
# Computing named metrics.


def _generated_features(
    generated, count: int, batch_size: int, device: str, progress: bool
) -> np.ndarray:
    if isinstance(generated, np.ndarray) or hasattr(generated, "shape"):
        if generated.shape[0] < count:
            raise ValueError(f"{generated.shape[0]} generated images given but {count} needed")
        source = generated[:count]
    elif callable(generated):
        source = generated(count)  # an iterable of uint8 batches, or an array
    else:
        source = generated  # an iterable of batches
    result = feats.extract_features(source, batch_size=batch_size, device=device, progress=progress, total=count, limit=count)
    if result.shape[0] < count:
        raise ValueError(f"the generated images ran out after {result.shape[0]} of {count}")
    return result


def compute_metrics(
    names: Sequence[str] | str,
    generated: np.ndarray | Callable[[int], Iterable] | Iterable,
    real_images: Mapping[str, np.ndarray] | Callable[[str], np.ndarray],
    *,
    data_version: str,
    cache: RealStatsCache,
    device: str = "cpu",
    batch_size: int = 32,
    kid_subset_size: int = 1000,
    kid_subsets: int = 100,
    seed: int = 0,
    progress: bool = True,
) -> list[dict]:
    """Records for the named metrics, extracting the generated images' features once for all of them.

    ``generated``: uint8 images (N, C, H, W) with N >= the largest count, or a function ``n -> uint8
    batches`` (e.g. sampling a generator batch by batch), or an iterable of batches.
    ``real_images``: ``{split: uint8 images}`` or a function ``split -> images``; only read on a miss
    of ``cache``.
    """
    specs = [parse_metric(name) for name in ([names] if isinstance(names, str) else names)]
    if not specs:
        return []
    largest = max(spec.num_generated for spec in specs)
    gen = _generated_features(generated, largest, batch_size, device, progress)

    def loader(split: str) -> Callable[[], np.ndarray]:
        return (lambda: real_images(split)) if callable(real_images) else (lambda: real_images[split])

    records = []
    for spec in specs:
        real = cache.features(loader(spec.split), data_version=data_version, split=spec.split, count=spec.num_real_requested)
        fake = gen[: spec.num_generated]
        record = {
            "metric": spec.name,
            "kind": spec.kind,
            "num_generated": int(fake.shape[0]),
            "num_real": int(real.shape[0]),
            "reference_split": spec.split,
            "real_selection": REAL_SELECTION,
            "data_version": str(data_version),
            **_network_fields(),
        }
        if spec.kind == "fid":
            record["value"] = frechet_distance(FeatureStats.from_features(fake), FeatureStats.from_features(real))
            record["std_error"] = None
        else:
            kid = kernel_inception_distance(fake, real, subset_size=kid_subset_size, num_subsets=kid_subsets, seed=seed)
            record.update(
                value=kid.mean,
                std_error=_json_number(kid.std_error),
                kid_subset_size=kid.subset_size,
                kid_subsets=kid.num_subsets,
                seed=seed,
            )
        records.append(record)
    return records


def compute_metric(name: str, generated, real_images, **kwargs) -> dict:
    """One named metric's record (see ``compute_metrics``)."""
    return compute_metrics([name], generated, real_images, **kwargs)[0]


def summary(records: Iterable[dict]) -> dict[str, float]:
    """Flat ``{name: value, name_std_error: ...}`` for a DVC metrics file (the records hold the rest)."""
    flat: dict[str, float] = {}
    for record in records:
        flat[record["metric"]] = record["value"]
        if record.get("std_error") is not None:
            flat[f"{record['metric']}_std_error"] = record["std_error"]
    return flat


# --------------------------------------------------------------------------------------------------
# The floor: two real sets.


def fid_kid_from_features(
    features_a: np.ndarray,
    features_b: np.ndarray,
    *,
    kid_subset_size: int = 1000,
    kid_subsets: int = 100,
    seed: int = 0,
) -> dict:
    kid = kernel_inception_distance(features_a, features_b, subset_size=kid_subset_size, num_subsets=kid_subsets, seed=seed)
    return {
        "fid": frechet_distance(FeatureStats.from_features(features_a), FeatureStats.from_features(features_b)),
        "kid": kid.mean,
        "kid_std_error": _json_number(kid.std_error),
        "kid_subset_size": kid.subset_size,
        "kid_subsets": kid.num_subsets,
        "seed": seed,
        "num_a": int(features_a.shape[0]),
        "num_b": int(features_b.shape[0]),
    }


def fid_kid_between(
    images_a,
    images_b,
    *,
    batch_size: int = 32,
    device: str = "cpu",
    kid_subset_size: int = 1000,
    kid_subsets: int = 100,
    seed: int = 0,
    progress: bool = True,
) -> dict:
    """FID and KID between two sets of uint8 images, e.g. Fashion-MNIST train vs test: the floor a
    perfect generator would reach at these sample counts. Returns a record like the named metrics'."""
    features_a = feats.extract_features(images_a, batch_size=batch_size, device=device, progress=progress)
    features_b = feats.extract_features(images_b, batch_size=batch_size, device=device, progress=progress)
    result = fid_kid_from_features(
        features_a, features_b, kid_subset_size=kid_subset_size, kid_subsets=kid_subsets, seed=seed
    )
    return {**result, **_network_fields()}
