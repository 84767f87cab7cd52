"""Fashion-MNIST from its original IDX ``.gz`` files: local folder first, else a verified download."""

from __future__ import annotations

import gzip
import shutil
import tempfile
import urllib.request
from pathlib import Path

import numpy as np

from productstudio.errors import DataError, ServiceError
from productstudio.artifacts import md5_file

CATEGORIES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)

# Published md5 sums from the upstream README (zalandoresearch/fashion-mnist).
FILES = {
    "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
}
SPLIT_PREFIX = {"train": "train", "test": "t10k"}

IDX_DTYPES = {0x08: np.uint8}


class ChecksumError(DataError):
    pass


def read_idx(path: str | Path) -> np.ndarray:
    """Decode an IDX file (gzip or plain) into a numpy array, checking the header against the size."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        data = handle.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise DataError(f"{path.name}: not an IDX file (bad magic number)")
    dtype = IDX_DTYPES.get(data[2])
    if dtype is None:
        raise DataError(f"{path.name}: unsupported IDX element type 0x{data[2]:02x}")
    ndim = data[3]
    header = 4 + 4 * ndim
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = header + int(np.prod(shape))
    if len(data) != expected:
        raise DataError(f"{path.name}: IDX header says {shape} ({expected} bytes) but file has {len(data)} bytes")
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)


def load_split(folder: str | Path, split: str, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 28, 28) uint8 and labels (N,) int64 of one split ("train" or "test")."""
    prefix = SPLIT_PREFIX[split]
    folder = Path(folder)
    images = read_idx(folder / f"{prefix}-images-idx3-ubyte.gz")
    labels = read_idx(folder / f"{prefix}-labels-idx1-ubyte.gz").astype(np.int64)
    if len(images) != len(labels):
        raise DataError(f"{folder}: {split} has {len(images)} images but {len(labels)} labels")
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    return images, labels


def _verified(path: Path, expected_md5: str) -> bool:
    return path.is_file() and md5_file(path) == expected_md5


def _download(url: str, dest: Path, expected_md5: str, timeout: float) -> None:
    """Download to a temporary file, check the md5, then move into place (never a bad file left)."""
    with tempfile.NamedTemporaryFile(dir=dest.parent, delete=False, suffix=".part") as tmp:
        tmp_path = Path(tmp.name)
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                shutil.copyfileobj(response, tmp)
        except BaseException:
            tmp_path.unlink(missing_ok=True)
            raise
    got = md5_file(tmp_path)
    if got != expected_md5:
        tmp_path.unlink(missing_ok=True)
        raise ChecksumError(f"{url}: md5 {got} does not match the published {expected_md5}")
    tmp_path.replace(dest)


def fetch(dest: str | Path, local_dir: str | Path | None, url_base: str, timeout: float = 60.0) -> dict[str, str]:
    """Put the four verified IDX files in ``dest``; return how each one was obtained.

    Each file comes from ``local_dir`` when it is there with the right md5, else from ``url_base``.
    A local file with the wrong md5 is reported, not used.
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    origin: dict[str, str] = {}
    problems: list[str] = []
    for name, md5 in FILES.items():
        target = dest / name
        local = Path(local_dir) / name if local_dir else None
        if local is not None and local.is_file():
            if md5_file(local) == md5:
                shutil.copyfile(local, target)
                origin[name] = f"local:{local}"
                continue
            problems.append(f"{local}: md5 mismatch, ignored")
        if _verified(target, md5):
            origin[name] = "cached"
            continue
        url = f"{url_base.rstrip('/')}/{name}"
        try:
            _download(url, target, md5, timeout)
        except (OSError, ChecksumError) as error:
            detail = "; ".join(problems + [f"download failed: {error}"])
            raise ServiceError(f"Fashion-MNIST file {name} unavailable ({detail})") from None
        origin[name] = f"download:{url}"
    return origin
