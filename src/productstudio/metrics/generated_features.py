"""Inception features of generated images, computed once per (weights, latent seed, count) and reused.

evaluate, quantize (fp32 and int8) and promote judge a model on the same images: latents drawn from one
seed, categories in turn, batch by batch (``generated_batches``). Inception is the slow part (about
7 images/s on 2 CPU cores), so the features are kept under one directory (by default
``productstudio.paths.GENERATED_FEATURES``) and whoever comes second reads them instead.

Key: the weights' sha256, the latent seed, the batch size and device they were generated and measured
with, and the feature network. An entry holds the features of the first ``count`` images.

Reuse is bit-exact. A network's float arithmetic may depend on the batch an image sits in, so an entry
only serves what a fresh run would compute identically: the images of its full batches (a fresh run of
any count has the same full batches in front), and its partial last batch only to a request for the
same count. The rest is extracted in batches on the same boundaries, from images generated as a fresh
run would generate them.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np

from productstudio.artifacts import write_json_atomic
from productstudio.imaging import resolve_device
from productstudio.metrics import features as feats

CACHE_FORMAT = 1


def array_batches(images: np.ndarray, batch_size: int) -> Callable[[int], Iterator[np.ndarray]]:
    """``images(n)`` for ``GeneratedFeatures.features`` from images already generated: the first n, batched."""
    return lambda n: (images[i : min(i + batch_size, n)] for i in range(0, n, batch_size))


def _skip(batches: Iterable, start: int) -> Iterator:
    """The batches from image ``start`` on (whole batches before it dropped, a straddling one cut)."""
    seen = 0
    for batch in batches:
        size = int(batch.shape[0])
        if seen + size > start:
            yield batch[max(0, start - seen):]
        seen += size


class GeneratedFeatures:
    """Features (n, 2048) float64 of a model's first n generated images, cached on disk under ``root``.

    ``extracted`` counts the images that went through the network in this object (0 when every request
    was served from disk).
    """

    def __init__(self, root: str | Path, *, device="cpu", batch_size: int = 50, progress: bool = True) -> None:
        self.root = Path(root)
        self.device = resolve_device(device)
        self.batch_size = batch_size
        self.progress = progress
        self.extracted = 0

    def key(self, weights_sha256: str, seed: int) -> dict:
        """What makes the features: the model, its latents, how it was run, and the feature network."""
        info = feats.network_info()
        return {"cache_format": CACHE_FORMAT, "weights_sha256": weights_sha256, "latent_seed": int(seed),
                "batch_size": self.batch_size, "device": self.device.type, "feature_network_sha256": info.sha256,
                "resize_method": info.resize_method, "input_scaling": info.input_scaling}

    @staticmethod
    def _key_id(key: dict) -> str:
        return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]

    def file(self, key: dict, count: int) -> Path:
        """Where the entry of ``count`` images lies (whether or not it exists)."""
        return self.root / f"generated-{self._key_id(key)}-n{count}.npy"

    def _stored(self, key: dict) -> list[int]:
        prefix = f"generated-{self._key_id(key)}-n"
        return [int(path.name[len(prefix):-4]) for path in self.root.glob(f"{prefix}*.npy")]

    def _reusable(self, stored: int, count: int) -> int:
        """How many of a stored entry's features a request for ``count`` may take: its full batches only."""
        return min(stored - stored % self.batch_size, count - count % self.batch_size)

    def missing(self, key: dict, count: int) -> int:
        """How many images ``features(key, count, ...)`` would put through the network."""
        stored = self._stored(key)
        if count in stored:
            return 0
        return count - max((self._reusable(n, count) for n in stored), default=0)

    def features(self, key: dict, count: int, images: Callable[[int], Iterable]) -> np.ndarray:
        """The features of the first ``count`` images. ``images(n)``: the uint8 batches of the first n
        generated images, batched by ``batch_size`` (e.g. ``generated_batches``); only called for what
        the cache does not hold."""
        stored = self._stored(key)
        if count in stored:
            return np.load(self.file(key, count), allow_pickle=False).astype(np.float64)
        best = max(stored, key=lambda n: self._reusable(n, count), default=None)
        start = self._reusable(best, count) if best is not None else 0
        head = np.load(self.file(key, best), allow_pickle=False)[:start].astype(np.float64) if start else None
        if start == count:  # the full batches of a larger entry: nothing to extract
            result = head
        else:
            rest = feats.extract_features(_skip(images(count), start), batch_size=self.batch_size, device=self.device,
                                          progress=self.progress, total=count - start, limit=count - start)
            self.extracted += int(rest.shape[0])
            result = rest if head is None else np.concatenate([head, rest])
            if result.shape[0] != count:
                raise ValueError(f"the generated images ran out after {result.shape[0]} of {count}")
        self._store(key, result)  # afterwards file(key, count) exists (promotion keeps a copy in the registry)
        return result

    def _store(self, key: dict, features: np.ndarray) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.root / f"generated-{self._key_id(key)}.json", key)  # what the entries are
        handle, staging = tempfile.mkstemp(dir=self.root, prefix=".staging-", suffix=".npy")
        try:
            with os.fdopen(handle, "wb") as out:
                # float32 is lossless here: the network computes and returns float32.
                np.save(out, features.astype(np.float32), allow_pickle=False)
            os.replace(staging, self.file(key, features.shape[0]))
        except BaseException:
            Path(staging).unlink(missing_ok=True)
            raise
