"""Nothing the project loads is unpickled (issue 13): a pickle payload planted in each place a file is read is
refused (or never read), and the command it carries never runs.

The payload is a pickle whose unpickling runs ``touch <marker>``: after each load the marker must not exist.
"""

from __future__ import annotations

import json
import os
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from productstudio.errors import DataError
from productstudio.models.gan import GANConfig, Generator
from productstudio.models.io import save_generator

CATEGORIES = [f"item{i}" for i in range(10)]


class Payload:
    """Unpickled, this runs a shell command: the classic malicious pickle, with a harmless command."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.fixture
def marker(tmp_path) -> Path:
    path = tmp_path / "unpickled-marker"
    yield path
    assert not path.exists(), "a planted pickle was unpickled: its command ran"


@pytest.fixture
def payload(marker) -> bytes:
    data = pickle.dumps(Payload(marker))
    pickle.loads(data)  # the payload works: unpickling it does touch the marker
    assert marker.exists()
    marker.unlink()
    return data


def object_npy(path: Path, marker: Path) -> None:
    """A .npy of an object array: numpy stores its elements as a pickle."""
    np.save(path, np.array([Payload(marker)], dtype=object), allow_pickle=True)


def tiny_generator_dir(directory: Path) -> Path:
    return save_generator(Generator(GANConfig(g_width=8, latent_dim=16)), directory, categories=CATEGORIES)


# --- training checkpoints -------------------------------------------------------------------------------------


def test_a_planted_checkpoint_is_refused_in_one_line(tmp_path, payload, marker):
    from productstudio.training.loop import latest_checkpoint, load_checkpoint

    checkpoints = tmp_path / "checkpoints"
    checkpoints.mkdir()
    torch.save({"step": 3, "weights": torch.ones(2)}, checkpoints / "step-00000003.pt")
    assert load_checkpoint(latest_checkpoint(checkpoints))["step"] == 3  # a real checkpoint loads

    (checkpoints / "step-00000004.pt").write_bytes(payload)  # a bare pickle
    with pytest.raises(DataError, match=r"step-00000004.pt: refused, not a checkpoint this trainer wrote") as refused:
        load_checkpoint(latest_checkpoint(checkpoints))
    assert "\n" not in str(refused.value)
    torch.save({"step": 5, "state": Payload(marker)}, checkpoints / "step-00000005.pt")  # torch's zip format
    with pytest.raises(DataError, match=r"GLOBAL posix.system"):
        load_checkpoint(latest_checkpoint(checkpoints))


# --- model directories --------------------------------------------------------------------------------------


def test_generator_weights_are_safetensors_only(tmp_path, payload):
    from productstudio.models.loader import load

    directory = tiny_generator_dir(tmp_path / "gen")
    for name in ("generator.pt", "pytorch_model.bin", "model.pkl", "data.pkl"):  # the usual pickle names: never read
        (directory / name).write_bytes(payload)
    load(directory)
    (directory / "generator.safetensors").write_bytes(payload)
    with pytest.raises(Exception, match="header"):  # safetensors: a JSON header and raw tensors, no pickle
        load(directory)


def test_a_vae_encoder_is_safetensors_only(tmp_path, payload):
    from productstudio.models.cvae import Encoder
    from productstudio.models.io import load_encoder

    config = GANConfig(g_width=8, latent_dim=16)
    directory = save_generator(Generator(config), tmp_path / "cvae", encoder=Encoder(config), categories=CATEGORIES)
    assert load_encoder(directory) is not None
    (directory / "encoder.safetensors").write_bytes(payload)
    with pytest.raises(Exception, match="header"):
        load_encoder(directory)


def test_the_int8_directory_is_onnx_only(tmp_path, payload):
    from productstudio.models.loader import load
    from productstudio.models.onnx_generator import INT8_FILE

    directory = tiny_generator_dir(tmp_path / "int8")
    config = json.loads((directory / "config.json").read_text())
    (directory / "config.json").write_text(json.dumps({**config, "quantization": {"format": "QDQ"}}))
    (directory / INT8_FILE).write_bytes(payload)
    with pytest.raises(Exception, match="(?i)protobuf"):  # ONNX is protobuf
        load(directory)


def test_the_classifier_is_safetensors_only(tmp_path, payload):
    from productstudio.models.classifier import WEIGHTS, ClassifierConfig, ProductClassifier, load_classifier, save_classifier

    save_classifier(ProductClassifier(ClassifierConfig()), tmp_path / "classifier")
    load_classifier(tmp_path / "classifier")
    (tmp_path / "classifier" / WEIGHTS).write_bytes(payload)
    with pytest.raises(Exception, match="header"):
        load_classifier(tmp_path / "classifier")


@pytest.mark.parametrize("name", ["u2netp", "ppocr-det"])
def test_pretrained_editing_nets_are_checked_before_loading(tmp_path, payload, name):
    from productstudio.models.loader import load
    from productstudio.models.pretrained import CONFIG, MODEL_FILE, weights_dir, weights_root

    (tmp_path / name).mkdir()
    (tmp_path / name / CONFIG).write_text((weights_root() / name / CONFIG).read_text())
    (tmp_path / name / MODEL_FILE).write_bytes(payload)
    with pytest.raises(DataError, match="is not the pinned"):
        weights_dir(name, tmp_path)
    with pytest.raises(Exception, match="(?i)protobuf|ModelProto"):  # and loaded anyway, it is read as ONNX protobuf
        load(tmp_path / name)


def test_the_inception_network_is_checked_before_torch_jit_load(tmp_path, payload, monkeypatch):
    from productstudio.metrics import features

    planted = tmp_path / "default_1.pt"
    planted.write_bytes(payload)
    monkeypatch.setattr(features, "network_path", lambda: planted)
    features.network_info.cache_clear()
    features._load.cache_clear()
    try:
        with pytest.raises(features.FeatureNetworkMissing, match="is not the published"):
            features.load_inception("cpu")
    finally:  # the real network again for later tests
        features.network_info.cache_clear()
        features._load.cache_clear()


# --- caches and data --------------------------------------------------------------------------------------------


def test_feature_caches_and_statistics_never_unpickle(tmp_path, marker):
    from productstudio.metrics.fid import FeatureStats
    from productstudio.metrics.generated_features import GeneratedFeatures
    from productstudio.metrics.real_features import RealStatsCache

    features = np.random.default_rng(0).normal(size=(8, 2048))
    real = RealStatsCache(tmp_path / "real", progress=False)
    folder = real._store(real.key("v1", "test"), features, complete=True)  # a valid entry, as evaluate writes it
    object_npy(folder / "features.npy", marker)
    with pytest.raises(ValueError, match="allow_pickle=False"):
        real.features(lambda: pytest.fail("a cache hit reads no images"), data_version="v1", split="test", count=8)
    with pytest.raises(ValueError, match="allow_pickle=False"):
        real.largest("v1", "test")
    np.savez(folder / "stats.npz", mu=np.array([Payload(marker)], dtype=object), sigma=np.eye(2), n=np.int64(8))
    with pytest.raises(ValueError, match="allow_pickle=False"):
        FeatureStats.load(folder / "stats.npz")

    generated = GeneratedFeatures(tmp_path / "generated", progress=False, batch_size=4)
    key = generated.key("0" * 64, seed=1)
    generated._store(key, features)
    object_npy(generated.file(key, 8), marker)
    with pytest.raises(ValueError, match="allow_pickle=False"):
        generated.features(key, 8, lambda n: pytest.fail("a cache hit generates nothing"))


def test_the_tensor_store_never_unpickles(tmp_path, marker):
    from productstudio.artifacts import write_manifest
    from productstudio.data import store

    images, labels = np.zeros((4, 1, 28, 28), np.uint8), np.arange(4, dtype=np.int64)
    shards = store.write_split(tmp_path, "train", images, labels, shard_size=4)
    write_manifest(tmp_path, store.KIND, {}, {}, categories=CATEGORIES, splits={"train": {"shards": shards}})
    assert store.load_split(tmp_path, "train")[0].shape == (4, 1, 28, 28)
    object_npy(tmp_path / shards[0]["labels"], marker)
    with pytest.raises(ValueError, match="allow_pickle=False"):
        store.load_split(tmp_path, "train")


# --- what TorchServe's worker loads from a .mar ---------------------------------------------------------------


class Context:
    """The part of TorchServe's context that the handler's initialize reads."""

    def __init__(self, model_dir: Path):
        self.system_properties = {"model_dir": str(model_dir)}
        self.manifest = {"model": {"modelVersion": "1"}}
        self.model_name = "tiny"


def extracted_archive(model_dir: Path, tmp_path: Path, variant: str = "fp32") -> Path:
    """Build the .mar as `productstudio package` does and unpack it as TorchServe does for its worker."""
    from productstudio.serving.archive import build_archive

    mar = build_archive(model_dir, tmp_path / "store", "tiny", variant=variant)
    out = tmp_path / "extracted"
    with zipfile.ZipFile(mar) as archive:
        archive.extractall(out)
    return out


def test_the_served_archive_never_unpickles(tmp_path, payload):
    from productstudio.models.onnx_generator import INT8_FILE
    from productstudio.serving.handler import TaskHandler

    directory = tiny_generator_dir(tmp_path / "gen")
    (directory / "generator.safetensors").write_bytes(payload)
    (directory / INT8_FILE).write_bytes(payload)
    for variant in ("fp32", "int8"):
        model_dir = extracted_archive(directory, tmp_path / variant, variant)
        (model_dir / "model.pt").write_bytes(payload)  # TorchServe's usual serialized file: our handler has none
        with pytest.raises(Exception, match="header" if variant == "fp32" else "(?i)protobuf"):
            TaskHandler().initialize(Context(model_dir))


def test_registry_artifacts_never_unpickle(tmp_path, payload, monkeypatch):
    """A registered version whose MLmodel names a pickled python_model (MLflow's default pyfunc form):
    load_registered and package read the generator directory only, through the library's loader."""
    from mlflow import MlflowClient

    from productstudio.registry.model_registry import load_registered
    from productstudio.serving.archive import archive_from_registry

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    client.create_registered_model("planted")
    for version, weights in (("1", payload), ("2", None)):
        model = tmp_path / "models" / version
        generator = tiny_generator_dir(model / "artifacts" / "generator")
        if weights is not None:
            (generator / "generator.safetensors").write_bytes(weights)
        (model / "python_model.pkl").write_bytes(payload)
        (model / "MLmodel").write_text(
            "flavors:\n  python_function:\n    loader_module: mlflow.pyfunc.model\n    python_model: python_model.pkl\n"
            "    artifacts:\n      generator:\n        path: artifacts/generator\n        uri: artifacts/generator\n")
        client.create_model_version("planted", str(model))

    with pytest.raises(Exception, match="header"):
        load_registered("models:/planted/1")
    generator, info = load_registered("models:/planted/2")
    assert info["version"] == "2" and generator.config.latent_dim == 16
    mar = archive_from_registry("models:/planted/2", tmp_path / "store")
    assert not any(name.endswith(".pkl") for name in zipfile.ZipFile(mar).namelist())
