"""The same data, params and code give the same weights on CUDA too: deterministic kernels while training.

The flags are checked on any machine; the weights themselves only where a GPU is (a device check: CI has none).
"""

import os

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

from productstudio.artifacts import write_manifest
from productstudio.config import parse_params
from productstudio.data import store
from productstudio.imaging import reproducible_kernels
from productstudio.training.loop import train


def test_deterministic_kernels_are_on_for_cuda_only_while_training_and_then_as_they_were(monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    before = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark)
    with reproducible_kernels(torch.device("cpu")):
        assert (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark) == before
        assert "CUBLAS_WORKSPACE_CONFIG" not in os.environ
    torch.backends.cudnn.benchmark = True  # as a user's own code might have left it
    try:
        with reproducible_kernels(torch.device("cuda")):  # sets flags only: no GPU needed to check them
            assert torch.are_deterministic_algorithms_enabled()
            assert not torch.backends.cudnn.benchmark
            assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
        assert torch.are_deterministic_algorithms_enabled() == before[0]
        assert torch.backends.cudnn.benchmark
    finally:
        torch.backends.cudnn.benchmark = before[1]
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":16:8")  # a user's own choice stays
    with reproducible_kernels(torch.device("cuda")):
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":16:8"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU (a device check; CI has none)")
def test_on_cuda_a_rerun_and_a_resumed_run_give_the_same_weights(tmp_path):
    # Photo-sized colour images with structure (a per-category blob on noise): on an H200 the colour
    # configuration's weights differed after 400 steps without deterministic kernels.
    rng = np.random.default_rng(0)
    labels = np.arange(64) % 4
    images = rng.integers(0, 256, (64, 3, 32, 32), dtype=np.uint8)
    for index, label in enumerate(labels):
        images[index, label % 3, 8 * label:8 * label + 12, 4:28] = 255
    shards = store.write_split(tmp_path, "train", images, labels, shard_size=64)
    write_manifest(tmp_path, store.KIND, {}, {}, categories=["a", "b", "c", "d"], splits={"train": {"shards": shards}})
    base = {"g_width": 16, "d_width": 16, "batch_size": 32, "latent_dim": 32, "checkpoint_every": 50, "sample_every": 1000,
            "kid_every": 0, "augment": ["color", "translation", "cutout"], "mode_seeking": 0.3, "seed": 5}

    def run(name, steps):
        settings = parse_params({"train": {**base, "max_steps": steps}}).train
        train(settings, tmp_path, tmp_path / name, tmp_path / f"{name}-plots", device="cuda", track=False)
        return load_file(str(tmp_path / name / "generator" / "generator.safetensors"))

    straight = run("straight", 200)
    again = run("again", 200)
    run("resumed", 100)
    resumed = run("resumed", 200)
    for name in straight:
        np.testing.assert_array_equal(again[name], straight[name], err_msg=f"rerun: {name}")
        np.testing.assert_array_equal(resumed[name], straight[name], err_msg=f"resumed: {name}")
