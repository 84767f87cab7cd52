"""Fashion-MNIST source: IDX decoding, and the verified download over a real local HTTP server."""

import functools
import gzip
import http.server
import shutil
import threading

import numpy as np
import pytest

from productstudio.data import fashion_mnist


@pytest.fixture
def http_root(tmp_path):
    """A real HTTP server on 127.0.0.1 serving a folder; yields (folder, base url)."""
    folder = tmp_path / "served"
    folder.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield folder, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_read_idx_real_files(fashion_dir):
    images, labels = fashion_mnist.load_split(fashion_dir, "test")
    assert images.shape == (10000, 28, 28) and images.dtype == np.uint8
    assert np.bincount(labels).tolist() == [1000] * 10
    assert fashion_mnist.CATEGORIES[labels[0]] == "Ankle boot"  # the first test item, as upstream documents


def test_read_idx_rejects_wrong_length(tmp_path):
    header = bytes([0, 0, 8, 3]) + (2).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2
    path = tmp_path / "short-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(header + bytes(28 * 28)))  # says 2 images, holds 1
    with pytest.raises(ValueError, match="IDX header says"):
        fashion_mnist.read_idx(path)


def test_download_verifies_md5_and_uses_local_copy_first(fashion_dir, http_root, tmp_path):
    served, url = http_root
    for name in fashion_mnist.FILES:
        shutil.copyfile(fashion_dir / name, served / name)
    # A local folder holding one file: that one comes from disk, the rest over HTTP.
    local = tmp_path / "local"
    local.mkdir()
    shutil.copyfile(fashion_dir / "t10k-labels-idx1-ubyte.gz", local / "t10k-labels-idx1-ubyte.gz")
    origin = fashion_mnist.fetch(tmp_path / "dest", local, url)
    assert origin["t10k-labels-idx1-ubyte.gz"].startswith("local:")
    assert origin["train-images-idx3-ubyte.gz"] == f"download:{url}/train-images-idx3-ubyte.gz"
    images, labels = fashion_mnist.load_split(tmp_path / "dest", "train")
    assert images.shape == (60000, 28, 28)


def test_corrupt_download_is_refused_and_leaves_nothing(fashion_dir, http_root, tmp_path):
    served, url = http_root
    for name in fashion_mnist.FILES:
        shutil.copyfile(fashion_dir / name, served / name)
    data = bytearray((served / "t10k-labels-idx1-ubyte.gz").read_bytes())
    data[100] ^= 0xFF
    (served / "t10k-labels-idx1-ubyte.gz").write_bytes(bytes(data))
    # A corrupted local copy is not trusted either: it falls through to the (also corrupt) download.
    local = tmp_path / "local"
    local.mkdir()
    (local / "t10k-labels-idx1-ubyte.gz").write_bytes(bytes(data))
    with pytest.raises(RuntimeError, match=r"t10k-labels-idx1-ubyte.gz unavailable .*md5 mismatch, ignored.*does not match the published"):
        fashion_mnist.fetch(tmp_path / "dest", local, url)
    assert not (tmp_path / "dest" / "t10k-labels-idx1-ubyte.gz").exists()
    assert not list((tmp_path / "dest").glob("*.part"))


def test_unreachable_source_says_so(tmp_path):
    with pytest.raises(RuntimeError, match="download failed"):
        fashion_mnist.fetch(tmp_path / "dest", None, "http://127.0.0.1:9", timeout=2)
