"""The raw dataset directory (a DVC output) and the ingest step that fills it.

Layout of a raw dataset directory::

    manifest.json            kind "raw-dataset": source, layout, categories, file hashes, params
    fashion-mnist/*.gz       the four original IDX files (source fashion-mnist)
    images/...               the photo folder copied verbatim, bad files too (source image-folder)
    catalogue.csv            optional catalogue (sku, category, description)
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from productstudio.artifacts import read_manifest, sha256_file, write_manifest
from productstudio.config import IngestSettings, section_dict
from productstudio.data import fashion_mnist, image_folder
from productstudio.errors import MissingInput, ParamsError

KIND = "raw-dataset"
FASHION_DIR = "fashion-mnist"
IMAGES_DIR = "images"
CATALOGUE = "catalogue.csv"


@dataclass(frozen=True)
class RawDataset:
    """Read access to an ingested raw dataset directory."""

    root: Path
    manifest: dict

    @classmethod
    def open(cls, root: str | Path) -> "RawDataset":
        return cls(Path(root), read_manifest(root, KIND))

    @property
    def source(self) -> str:
        return self.manifest["source"]

    @property
    def categories(self) -> list[str]:
        return list(self.manifest["categories"])

    @property
    def layout(self) -> str:
        return self.manifest["layout"]

    @property
    def images_dir(self) -> Path:
        return self.root / IMAGES_DIR

    @property
    def catalogue_path(self) -> Path | None:
        path = self.root / CATALOGUE
        return path if path.exists() else None

    def arrays(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Fashion-MNIST only: {split: (images uint8 (N,28,28), labels int64 (N,))}, limit applied."""
        if self.source != "fashion-mnist":
            raise ValueError(f"{self.root}: arrays() is for fashion-mnist, this source is {self.source}")
        limit = self.manifest["params"].get("limit_per_category")
        out = {}
        for split in fashion_mnist.SPLIT_PREFIX:
            images, labels = fashion_mnist.load_split(self.root / FASHION_DIR, split)
            if limit is not None:
                keep = _first_n_per_label(labels, limit)
                images, labels = images[keep], labels[keep]
            out[split] = (images, labels)
        return out

    def files(self) -> list[str]:
        """Image-folder only: every file under images/, relative, sorted (bad ones included)."""
        return image_folder.list_files(self.images_dir)

    def locate(self, relpath: str) -> image_folder.Location:
        return image_folder.locate(relpath, self.layout)


def _first_n_per_label(labels: np.ndarray, n: int) -> np.ndarray:
    """Indices of the first n items of each label, in their original order."""
    keep = np.zeros(len(labels), dtype=bool)
    for label in np.unique(labels):
        keep[np.flatnonzero(labels == label)[:n]] = True
    return np.flatnonzero(keep)


def _ingest_fashion_mnist(settings: IngestSettings, out: Path) -> dict:
    local = settings.fashion_mnist_dir
    if local and not Path(local).is_dir():
        local = None  # not on this machine: download instead
    origin = fashion_mnist.fetch(out / FASHION_DIR, local, settings.download_url)
    categories = settings.categories or list(fashion_mnist.CATEGORIES)
    if len(categories) != len(fashion_mnist.CATEGORIES):
        raise ParamsError(f"ingest.categories: Fashion-MNIST has 10 categories, {len(categories)} were declared")
    files = {f"{FASHION_DIR}/{name}": sha256_file(out / FASHION_DIR / name) for name in fashion_mnist.FILES}
    return {"layout": "idx", "categories": categories, "files": files, "origin": origin}


def _ingest_image_folder(settings: IngestSettings, out: Path) -> dict:
    if not settings.image_folder or not Path(settings.image_folder).is_dir():
        raise MissingInput(f"ingest.image_folder: {settings.image_folder!r} is not a folder")
    source = Path(settings.image_folder)
    layout = image_folder.detect_layout(source)
    categories = settings.categories or image_folder.discover_categories(source, layout)
    selected = _select_files(source, layout, settings.limit_per_category)
    files = {}
    for rel in tqdm(selected, desc="ingest", unit="file", disable=None):
        target = out / IMAGES_DIR / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source / rel, target)  # bytes as they are; validation judges them
        files[f"{IMAGES_DIR}/{rel}"] = sha256_file(target)
    if settings.catalogue_csv:
        image_folder.read_catalogue(settings.catalogue_csv)  # fails early on a malformed header
        shutil.copyfile(settings.catalogue_csv, out / CATALOGUE)
        files[CATALOGUE] = sha256_file(out / CATALOGUE)
    return {"layout": layout, "categories": categories, "files": files, "origin": {"folder": str(source)}}


def _select_files(source: Path, layout: str, limit: int | None) -> list[str]:
    """All files, or the first ``limit`` of each (split, category) folder; loose files always kept."""
    files = image_folder.list_files(source)
    if limit is None:
        return files
    taken: dict[tuple, int] = {}
    selected = []
    for rel in files:
        where = image_folder.locate(rel, layout)
        key = (where.split, where.category)
        if where.category is not None and taken.get(key, 0) >= limit:
            continue
        taken[key] = taken.get(key, 0) + 1
        selected.append(rel)
    return selected


def ingest(settings: IngestSettings, out: str | Path) -> RawDataset:
    """Copy a source into a fresh raw dataset directory with a manifest of content hashes."""
    out = Path(out)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    if settings.source == "fashion-mnist":
        info = _ingest_fashion_mnist(settings, out)
    else:
        info = _ingest_image_folder(settings, out)
    origin = info.pop("origin")
    files = info.pop("files")
    write_manifest(
        out,
        KIND,
        inputs={"files": files, "origin": origin},
        params=section_dict(settings),
        source=settings.source,
        **info,
    )
    return RawDataset.open(out)
