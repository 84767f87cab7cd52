"""Artifact directories and their manifest.json: what it is, input hashes, params, code version."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import secrets
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

from productstudio import __version__
from productstudio.errors import DataError, DiskFull, MissingInput

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


def is_disk_full(error: BaseException | None) -> bool:
    """Whether ``error`` (or one it was raised from) is a full disk or quota. Some libraries keep only the text of
    the OS error (safetensors: "I/O error: No space left on device (os error 28)"), so the text counts too."""
    for _ in range(10):  # a chain is short; the bound only guards against a cycle
        if error is None:
            return False
        if isinstance(error, DiskFull) or (isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT)):
            return True
        if "No space left on device" in str(error) or "Disk quota exceeded" in str(error):
            return True
        error = error.__cause__ or error.__context__
    return False


def _disk_full(target: Path, kept: str | None) -> DiskFull:
    if kept is None:
        kept = f"the previous {target.name} is intact" if target.exists() else "nothing was written"
    return DiskFull(f"no space left on device writing {target} ({kept}); free some space and run it again")


def write_atomic(path: str | Path, data: bytes | Callable[[BinaryIO], object], kept: str | None = None) -> Path:
    """Write a file whole or not at all: into a temporary sibling, fsync, then rename over ``path``.

    ``data`` is the bytes, or a function that writes them to a binary handle (``torch.save``, ``np.save``).
    On any failure the temporary file is removed and ``path`` is as it was; a full disk is a one-line
    ``DiskFull`` naming ``path`` and ``kept`` (what is still intact; by default the previous ``path``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{secrets.token_hex(4)}.tmp")  # unique: concurrent writers never collide
    try:
        with open(tmp, "xb") as handle:
            if isinstance(data, bytes):
                handle.write(data)
            else:
                data(handle)
            handle.flush()
            os.fsync(handle.fileno())  # some filesystems report a full disk only here
        os.replace(tmp, path)
    except BaseException as error:
        tmp.unlink(missing_ok=True)
        if is_disk_full(error):
            raise _disk_full(path, kept) from error
        raise
    return path


def write_json_atomic(path: str | Path, data: Any) -> None:
    """Write JSON so that a crash or a full disk never leaves a half-written file behind."""
    write_atomic(path, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode())


@contextlib.contextmanager
def staged_directory(target: str | Path) -> Iterator[Path]:
    """Build a directory beside ``target`` and swap it in whole when the ``with`` block ends without an error.

        with staged_directory(out) as staging:
            ...write every file into staging...

    On an error (a full disk, a bug, Ctrl-C) the staging directory is removed and ``target`` is untouched; a full
    disk is a one-line ``DiskFull``. What a ``kill -9`` left beside ``target`` (``.<name>.<hex>.tmp`` or
    ``.old``) is removed by the next write: one step writes one directory, so it is nobody else's.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    for leftover in target.parent.glob(f".{target.name}.*"):
        if leftover.suffix in (".tmp", ".old") and leftover.is_dir():
            shutil.rmtree(leftover)
    staging = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")  # a sibling: same filesystem, so rename works
    staging.mkdir()
    try:
        yield staging
        for path in sorted(staging.rglob("*")):
            if path.is_file():
                with open(path, "rb") as handle:
                    os.fsync(handle.fileno())  # on disk before the swap: a power cut cannot leave empty files in target
        _swap_in(staging, target)
    except BaseException as error:
        shutil.rmtree(staging, ignore_errors=True)
        if is_disk_full(error):
            raise _disk_full(target, None) from error
        raise


def _swap_in(staging: Path, target: Path) -> None:
    """Rename ``staging`` to ``target``, moving the previous ``target`` aside first and deleting it last.

    A crash between the two renames leaves no ``target`` (read as missing, never as half) and the previous one
    beside it as ``.<name>.<hex>.old``."""
    if not target.exists():
        os.rename(staging, target)
        return
    old = target.with_name(f".{target.name}.{secrets.token_hex(4)}.old")
    os.rename(target, old)
    try:
        os.rename(staging, target)
    except BaseException:
        os.rename(old, target)
        raise
    shutil.rmtree(old)


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
