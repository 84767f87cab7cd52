"""A folder of product photos laid out ``<root>/<category>/<image>`` or ``<root>/<split>/<category>/<image>``."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from productstudio.errors import DataError

# Folder names taken as splits, and the name each one is stored under.
SPLIT_NAMES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}
CATALOGUE_COLUMNS = ("sku", "category", "description")


@dataclass(frozen=True)
class Location:
    split: str | None  # None: the source has no split folders
    category: str | None  # None: the file is outside any category folder


def detect_layout(root: str | Path) -> str:
    """'split' when the top-level folders are split names (train/validation/test), else 'flat'."""
    top = [p.name.lower() for p in Path(root).iterdir() if p.is_dir() and not p.name.startswith(".")]
    return "split" if top and all(name in SPLIT_NAMES for name in top) else "flat"


def locate(relpath: str | PurePosixPath, layout: str) -> Location:
    parts = PurePosixPath(relpath).parts
    if layout == "split":
        split = SPLIT_NAMES.get(parts[0].lower()) if len(parts) > 1 else None
        category = parts[1] if len(parts) > 2 else None
        return Location(split, category)
    return Location(None, parts[0] if len(parts) > 1 else None)


def list_files(root: str | Path) -> list[str]:
    """Every regular file below root (hidden ones too: they must be reported, not skipped), sorted."""
    root = Path(root)
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def discover_categories(root: str | Path, layout: str) -> list[str]:
    found = {locate(rel, layout).category for rel in list_files(root)}
    return sorted(c for c in found if c is not None and not c.startswith("."))


def read_catalogue(path: str | Path) -> list[dict]:
    """Rows of a catalogue CSV with at least sku, category, description; a missing column is an error."""
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in CATALOGUE_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise DataError(f"{path}: catalogue CSV lacks column(s) {', '.join(missing)} (needs {', '.join(CATALOGUE_COLUMNS)})")
        return list(reader)
