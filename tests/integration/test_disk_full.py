"""Disk full while writing an artifact: a one-line error, the previous artifact byte for byte as it was (and still
loading), no temporary file or staging directory left behind.

Each test mounts its own small tmpfs (root only, as in CI), writes a good artifact on it, fills it up to a few KB
and writes again: a checkpoint, the generator, a manifest, the processed tensor store, the product classifier, the
int8 model, and a whole `productstudio train` run through the CLI.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from productstudio.artifacts import read_manifest, write_manifest
from productstudio.config import QuantizeSettings, parse_params
from productstudio.data import store
from productstudio.data.preprocess import preprocess
from productstudio.data.raw import ingest
from productstudio.errors import DiskFull
from productstudio.models.gan import GANConfig, Generator
from productstudio.models.io import load_generator, save_generator
from productstudio.validation.validate import validate

TINY = {"latent_dim": 16, "g_width": 8, "d_width": 8, "batch_size": 16, "threads": 1, "log_every": 10, "seed": 3}
CATEGORIES = [f"c{i}" for i in range(10)]
LEAVE = 16 * 1024  # what the filler leaves free: less than any artifact below


@pytest.fixture
def small_disk(tmp_path):
    """An 8 MiB tmpfs under tmp_path, unmounted afterwards whatever the test did."""
    if os.geteuid() != 0:
        pytest.skip("mounting a size-limited tmpfs needs root (CI runs these tests as root)")
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(disk)], capture_output=True, text=True)
    if mounted.returncode != 0:
        # Root without the right to mount (a container lacking CAP_SYS_ADMIN) is a broken test machine: fail, never
        # skip, or CI goes green with the disk-full behaviour untested.
        pytest.fail(f"mount -t tmpfs failed as root: {mounted.stderr.strip()}")
    try:
        assert os.path.ismount(disk)
        yield disk
    finally:
        if subprocess.run(["umount", str(disk)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(disk)], capture_output=True)  # busy (a process still in it): detach


def fill(disk: Path, leave: int = LEAVE) -> None:
    """Take all the free space but ``leave`` bytes."""
    with open(disk / "filler", "wb") as handle:
        handle.write(b"\0" * (shutil.disk_usage(disk).free - leave))
    assert shutil.disk_usage(disk).free <= leave


def snapshot(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def leftovers(disk: Path) -> list[str]:
    """Temporary files (``*.tmp``) and staging or moved-aside directories (``.<name>.<hex>.tmp|.old``)."""
    return [str(p.relative_to(disk)) for p in disk.rglob("*") if p.name.endswith((".tmp", ".old"))]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, fashion_dir):
    """Raw, validated and processed tiny Fashion-MNIST (20 images per category) on the ordinary disk."""
    root = tmp_path_factory.mktemp("disk-full-data")
    params = parse_params({"ingest": {"fashion_mnist_dir": str(fashion_dir), "limit_per_category": 20},
                           "validate": {"max_leak_fraction": 0.05}})
    ingest(params.ingest, root / "raw")
    validate(root / "raw", root / "validation", params.validate)
    preprocess(root / "raw", root / "validation", root / "processed", params.preprocess)
    return root, params


def test_checkpoint(small_disk):
    from productstudio.training.loop import build, load_checkpoint, save_checkpoint

    state = build(parse_params({"train": TINY}).train, 10, (1, 28, 28), torch.device("cpu"))
    checkpoints = small_disk / "checkpoints"
    state.step = 250
    good = save_checkpoint(state, checkpoints, keep=2)
    before = good.read_bytes()
    fill(small_disk)

    state.step = 300
    with pytest.raises(DiskFull) as raised:
        save_checkpoint(state, checkpoints, keep=2)
    assert str(raised.value) == (f"no space left on device writing {checkpoints}/step-00000300.pt "
                                 "(the previous checkpoint step-00000250.pt is intact); free some space and run it again")
    assert [p.name for p in checkpoints.iterdir()] == ["step-00000250.pt"] and good.read_bytes() == before
    state.load_state_dict(load_checkpoint(good))  # still a whole checkpoint
    assert state.step == 250 and not leftovers(small_disk)


def test_generator(small_disk):
    target = small_disk / "generator"
    good = Generator(GANConfig(g_width=8, latent_dim=16))
    save_generator(good, target, categories=CATEGORIES, step=1)
    before = snapshot(target)
    fill(small_disk)

    with pytest.raises(DiskFull) as raised:
        save_generator(Generator(GANConfig(g_width=8, latent_dim=16)), target, categories=CATEGORIES, step=2)
    assert str(raised.value) == (f"no space left on device writing {target} (the previous generator is intact); "
                                 "free some space and run it again")
    assert snapshot(target) == before  # the old weights with the old config, not half of each
    model, info = load_generator(target)
    assert info["step"] == 1 and all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), good.state_dict().values()))
    assert not leftovers(small_disk)
    assert sorted(p.name for p in small_disk.iterdir()) == ["filler", "generator"]


def test_manifest(small_disk):
    artifact = small_disk / "artifact"
    write_manifest(artifact, "example", inputs={"a": "1"}, params={"size": 1})
    before = snapshot(artifact)
    fill(small_disk)

    with pytest.raises(DiskFull) as raised:
        write_manifest(artifact, "example", inputs={"a": "2"}, params={"big": "x" * (4 * LEAVE)})
    assert str(raised.value) == (f"no space left on device writing {artifact}/manifest.json "
                                 "(the previous manifest.json is intact); free some space and run it again")
    assert snapshot(artifact) == before and read_manifest(artifact, "example")["inputs"] == {"a": "1"}
    assert not leftovers(small_disk)


def test_processed_store(small_disk, dataset):
    root, params = dataset
    processed = small_disk / "processed"
    preprocess(root / "raw", root / "validation", processed, params.preprocess)
    before = snapshot(processed)
    fill(small_disk)

    with pytest.raises(DiskFull) as raised:
        preprocess(root / "raw", root / "validation", processed, params.preprocess)
    assert str(raised.value) == (f"no space left on device writing {processed} (the previous processed is intact); "
                                 "free some space and run it again")
    assert snapshot(processed) == before
    images, labels = store.load_split(processed, "train")  # every shard its manifest names is there, whole
    assert len(images) == len(labels) == read_manifest(processed)["splits"]["train"]["count"] > 0
    assert not leftovers(small_disk)


def test_classifier(small_disk, dataset):
    from productstudio.models.classifier import load_classifier
    from productstudio.training.classifier import train_classifier

    root, _ = dataset
    out = small_disk / "classifier"
    train_classifier(root / "processed", out, epochs=1, batch_size=32)
    before = snapshot(out)
    fill(small_disk)

    with pytest.raises(DiskFull) as raised:
        train_classifier(root / "processed", out, epochs=1, batch_size=32, seed=1)
    assert str(raised.value) == (f"no space left on device writing {out} (the previous classifier is intact); "
                                 "free some space and run it again")
    assert snapshot(out) == before and read_manifest(out, "product-classifier")["params"]["seed"] == 0
    load_classifier(out)
    assert not leftovers(small_disk)


@pytest.mark.slow
def test_quantized_model(small_disk, tmp_path):
    from productstudio.models.onnx_generator import load_quantized
    from productstudio.quantization.quantize import quantize

    generator = tmp_path / "generator"
    save_generator(Generator(GANConfig(g_width=8, latent_dim=16)), generator, categories=CATEGORIES)
    settings = QuantizeSettings(metrics=[], psnr_samples=8, timing_rounds=1, calibration_samples=16)
    out = small_disk / "quantized"
    quantize(generator, out, settings, features_dir=tmp_path / "features")
    before = snapshot(out)
    fill(small_disk)

    with pytest.raises(DiskFull) as raised:
        quantize(generator, out, settings, features_dir=tmp_path / "features")
    assert str(raised.value) == (f"no space left on device writing {out} (the previous quantized is intact); "
                                 "free some space and run it again")
    assert snapshot(out) == before
    model = load_quantized(out, threads=1)
    assert tuple(model(torch.zeros(2, 16), torch.tensor([0, 1])).shape) == (2, 1, 28, 28)
    assert not leftovers(small_disk)


@pytest.mark.slow
def test_train_cli_says_one_line_and_keeps_the_checkpoint(small_disk, dataset, tmp_path):
    root, _ = dataset
    out = small_disk / "train"

    def cli(max_steps: int) -> subprocess.CompletedProcess:
        params = tmp_path / "params.yaml"
        # lr_decay 0: with a constant learning rate a run may be extended (a decay's schedule depends on max_steps)
        params.write_text(yaml.safe_dump({"train": {**TINY, "max_steps": max_steps, "lr_decay": 0, "checkpoint_every": 10,
                                                    "keep_checkpoints": 2, "sample_every": 1000}}))
        return subprocess.run([sys.executable, "-m", "productstudio.cli", "train", "--params", str(params),
                               "--processed", str(root / "processed"), "--out", str(out), "--plots", str(tmp_path / "plots"),
                               "--device", "cpu", "--no-mlflow"],
                              capture_output=True, text=True, timeout=300, cwd=tmp_path)

    first = cli(20)
    assert first.returncode == 0, first.stderr
    before = snapshot(out)
    assert {"checkpoints/step-00000010.pt", "checkpoints/step-00000020.pt", "generator/generator.safetensors",
            "manifest.json"} <= set(before)
    fill(small_disk)

    second = cli(40)  # resumes at step 20; the checkpoint at step 30 does not fit
    assert second.returncode == DiskFull.exit_code != 0
    assert "resuming from" in second.stdout
    assert second.stderr.splitlines() == [
        f"productstudio train: error: no space left on device writing {out}/checkpoints/step-00000030.pt "
        "(the previous checkpoint step-00000020.pt is intact); free some space and run it again"]
    assert snapshot(out) == before and not leftovers(small_disk)
    load_generator(out / "generator")


def test_cli_door_says_one_line_for_a_write_outside_the_artifact_writers(small_disk, monkeypatch, capsys):
    """A full disk hit by a plain write (a log, a cache) is one line too, never a traceback."""
    from productstudio import cli
    from productstudio.training import loop

    def plain_write(*args, **kwargs):
        with open(small_disk / "train_loss.csv", "a") as log:
            log.write("x" * (4 * LEAVE))

    fill(small_disk)
    monkeypatch.setattr(loop, "train", plain_write)
    assert cli.main(["train", "--params", os.devnull, "--no-mlflow"]) == DiskFull.exit_code
    assert capsys.readouterr().err.splitlines() == [
        "productstudio train: error: no space left on device; free some space and run it again"]
