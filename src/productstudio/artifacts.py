"""Artifact directories and their manifest.json: what it is, input hashes, params, code version."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from productstudio import __version__
from productstudio.errors import DataError, MissingInput

MANIFEST = "manifest.json"


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def md5_file(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def code_version() -> str:
    """Package version plus the git commit when run from a checkout (``0.1.0+g1a2b3c4``)."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return f"{__version__}+g{commit}" if commit else __version__


def write_json_atomic(path: str | Path, data: Any) -> None:
    """Write JSON so that a crash never leaves a half-written file behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp") as handle:
        json.dump(data, handle, indent=2, sort_keys=True)
        handle.write("\n")
        tmp = handle.name
    os.replace(tmp, path)


def write_manifest(directory: str | Path, kind: str, inputs: dict, params: dict, **extra: Any) -> dict:
    """Describe an artifact directory. Deterministic: no timestamps, sorted keys."""
    manifest = {"kind": kind, "inputs": inputs, "params": params, "code_version": code_version(), **extra}
    write_json_atomic(Path(directory) / MANIFEST, manifest)
    return manifest


def read_manifest(directory: str | Path, kind: str | None = None) -> dict:
    path = Path(directory) / MANIFEST
    if not path.exists():
        raise MissingInput(f"{directory}: no {MANIFEST}; is this an artifact directory made by productstudio?")
    manifest = json.loads(path.read_text())
    if kind is not None and manifest.get("kind") != kind:
        raise DataError(f"{directory}: expected a '{kind}' artifact, found '{manifest.get('kind')}'")
    return manifest
