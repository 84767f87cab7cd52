"""The real training entry point on a tiny real dataset: artifacts, MLflow run, kill -9 and resume."""

import itertools
import signal
import subprocess
import sys

import numpy as np
import torch
import pytest
import yaml
from PIL import Image
from safetensors.numpy import load_file

from productstudio.config import parse_params
from productstudio.errors import TimeLimitReached, TrainingDiverged
from productstudio.data.preprocess import preprocess
from productstudio.data.raw import ingest
from productstudio.models.io import load_generator
from productstudio.training.loop import train
from productstudio.validation.validate import validate

TINY = {"latent_dim": 16, "g_width": 8, "d_width": 8, "batch_size": 16, "threads": 1, "log_every": 10, "seed": 3}


@pytest.fixture(scope="module")
def processed(tmp_path_factory, fashion_dir):
    root = tmp_path_factory.mktemp("data")
    params = parse_params({"ingest": {"fashion_mnist_dir": str(fashion_dir), "limit_per_category": 20}, "validate": {"max_leak_fraction": 0.05}})
    ingest(params.ingest, root / "raw")
    validate(root / "raw", root / "validation", params.validate)
    preprocess(root / "raw", root / "validation", root / "processed", params.preprocess)
    return root / "processed"


def _settings(**overrides):
    return parse_params({"train": {**TINY, **overrides}}).train


def test_gan_run_writes_generator_grid_checkpoints_and_mlflow(processed, tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)  # the default artifact store is ./mlruns
    manifest = train(_settings(max_steps=30, checkpoint_every=10, keep_checkpoints=2, sample_every=15, augment=["translation", "cutout"]),
                     processed, tmp_path / "out", tmp_path / "plots")
    out = tmp_path / "out"
    assert manifest["summary"]["steps"] == 30 and manifest["summary"]["stopped_by"] == "max_steps"
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-00000020.pt", "step-00000030.pt"]
    generator, info = load_generator(out / "generator")
    assert info["categories"][9] == "Ankle boot" and info["kind"] == "gan"
    grid = np.asarray(Image.open(out / manifest["sample_grid"]))
    assert grid.shape == (10 * 28 * 2, 8 * 28 * 2)  # one row per category, 8 columns, shown at 2x
    rows = (tmp_path / "plots/train_loss.csv").read_text().splitlines()
    assert rows[0] == "step,loss_d,loss_g,images_per_s" and [r.split(",")[0] for r in rows[1:]] == ["10", "20", "30"]

    client = MlflowClient(uri)
    run = client.get_run(manifest["mlflow_run_id"])
    assert run.data.params["train.g_width"] == "8"
    assert run.data.tags["data.version"] == manifest["inputs"]["processed_data_version"]
    assert len(run.data.tags["git.commit"]) in (7, 40) or run.data.tags["git.commit"] == "unknown"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "loss_d")] == [10, 20, 30]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "samples")} | {a.path for a in client.list_artifacts(run.info.run_id, "generator")}
    assert "generator/generator.safetensors" in artifacts and "samples/step-00000030.png" in artifacts


def test_time_guard_fails_loudly_keeps_the_checkpoint_and_a_larger_guard_continues(processed, tmp_path):
    """train.max_minutes is a guard, not the stopping rule: reaching it before max_steps is an error, never a
    shorter model; the rerun with a larger guard resumes and ends where an unguarded run ends."""
    ticks = itertools.count()  # a clock that moves 1 s each time it is read, twice per step: 1 s per step
    clock = lambda: float(next(ticks))  # noqa: E731
    out, plots = tmp_path / "out", tmp_path / "plots"
    with pytest.raises(TimeLimitReached, match=r"train.max_minutes \(0.1\) reached at step 6 of 12 .*rerun with a larger"):
        train(_settings(max_steps=12, max_minutes=0.1), processed, out, plots, track=False, clock=clock)
    assert [p.name for p in (out / "checkpoints").glob("step-*.pt")] == ["step-00000006.pt"]
    assert not (out / "generator").exists() or not list((out / "generator").iterdir())  # nothing shipped

    manifest = train(_settings(max_steps=12, max_minutes=1), processed, out, plots, track=False, clock=clock)
    assert manifest["summary"]["stopped_by"] == "max_steps" and manifest["summary"]["steps"] == 12
    reference = train(_settings(max_steps=12), processed, tmp_path / "reference", tmp_path / "reference-plots", track=False)
    assert reference["summary"]["steps"] == 12
    expected = load_file(str(tmp_path / "reference/generator/generator.safetensors"))
    got = load_file(str(out / "generator/generator.safetensors"))
    for name in expected:
        np.testing.assert_array_equal(got[name], expected[name], err_msg=name)


def test_a_diverged_run_stops_at_its_first_non_finite_step_with_the_reason_and_ships_nothing(processed, tmp_path,
                                                                                            monkeypatch):
    """A batch that turns the losses to NaN at the second step (as a too-high learning rate does). Before this guard such a
    run trained on, NaN to the end, and saved a NaN generator."""
    from productstudio.training import loop

    original = loop.gan_step

    def poisoned(state, x, *args):
        return original(state, x * float("nan") if state.step == 1 else x, *args)

    monkeypatch.setattr(loop, "gan_step", poisoned)
    out = tmp_path / "out"
    with pytest.raises(TrainingDiverged, match=r"training diverged at step 2: the losses are not finite \(loss_d "
                                               r".*nan.*lower the learning rates or train.r1_gamma"):
        train(_settings(max_steps=20, r1_gamma=1.0, compile=False), processed, out, tmp_path / "plots", track=False)
    assert not (out / "generator").exists() or not list((out / "generator").iterdir())  # nothing shipped


def test_r1_on_every_step_trains_finite_on_fashion_mnist_whose_corners_are_alike(processed, tmp_path):
    """R1 differentiates the discriminator's minibatch std twice; with std written as .std() that was 0/0 at the
    black corners (every image of a group alike) and the run was NaN from step 2."""
    manifest = train(_settings(max_steps=6, r1_gamma=1.0, r1_every=1, compile=False), processed, tmp_path / "out",
                     tmp_path / "plots", track=False)
    assert manifest["summary"]["steps"] == 6
    weights = load_file(str(tmp_path / "out/generator/generator.safetensors"))
    assert all(torch.isfinite(torch.as_tensor(w)).all() for w in weights.values())


def test_learning_rates_decay_linearly_over_the_last_share_of_the_steps(processed, tmp_path, monkeypatch):
    from productstudio.training import loop

    assert [loop.lr_factor(p, 0.25) for p in (0.0, 0.75, 0.875, 1.0)] == [1.0, 1.0, 0.5, 0.0]
    assert loop.lr_factor(0.99, 0.0) == 1.0
    seen = []
    original = loop.gan_step

    def spy(state, *args):
        seen.append((state.step, state.optimizers["generator"].param_groups[0]["lr"],
                     state.optimizers["discriminator"].param_groups[0]["lr"]))
        return original(state, *args)

    monkeypatch.setattr(loop, "gan_step", spy)
    train(_settings(max_steps=8, lr_decay=0.5, lr_g=1e-3, lr_d=2e-3), processed, tmp_path / "out", tmp_path / "plots", track=False)
    # steps 0-4 at full rate, then 3/4, 1/2, 1/4 of it (step 8 would be 0: the run ends before)
    assert [round(g / 1e-3, 6) for _, g, _ in seen] == [1, 1, 1, 1, 1, 0.75, 0.5, 0.25]
    assert all(abs(d - 2 * g) < 1e-12 for _, g, d in seen)


def test_a_wall_clock_budget_is_the_benchmarks_door(processed, tmp_path):
    """bench_train's mode: budget_minutes ends the run (and sets the schedule's length); pause_at_minutes returns
    early with the generator so far, and the next call resumes where it paused."""
    ticks = itertools.count()
    clock = lambda: float(next(ticks))  # noqa: E731
    settings = _settings(max_steps=10**9)
    first = train(settings, processed, tmp_path / "out", tmp_path / "plots", track=False, clock=clock,
                  budget_minutes=0.2, pause_at_minutes=0.1)
    assert first["summary"]["stopped_by"] == "pause_at_minutes" and first["summary"]["steps"] == 6
    second = train(settings, processed, tmp_path / "out", tmp_path / "plots", track=False, clock=clock, budget_minutes=0.2)
    assert second["summary"]["stopped_by"] == "budget_minutes" and second["summary"]["steps"] == 12


def test_cvae_baseline_learns(processed, tmp_path):
    train(_settings(model="cvae", max_steps=60, lr_g=1e-3), processed, tmp_path / "out", tmp_path / "plots", track=False)
    losses = [float(r.split(",")[1]) for r in (tmp_path / "plots/train_loss.csv").read_text().splitlines()[1:]]
    assert losses[-1] < losses[0] * 0.8, losses
    generator, info = load_generator(tmp_path / "out/generator")
    assert info["kind"] == "cvae" and generator.config.latent_dim == 16


# The victim: the real training function, which SIGKILLs its own process right after checkpoint 100 is on
# disk (train's on_checkpoint hook), so the crash lands at a known point however fast the machine is.
KILLED_AT_CHECKPOINT = """
import os, signal, sys
from productstudio.config import load_params
from productstudio.training.loop import train

def kill_after_checkpoint_100(step, path):
    if step == 100:
        os.kill(os.getpid(), signal.SIGKILL)

params, processed, out, plots = sys.argv[1:]
train(load_params(params).train, processed, out, plots, track=False, on_checkpoint=kill_after_checkpoint_100)
"""


@pytest.mark.slow
def test_kill_9_then_rerun_resumes_and_matches_uninterrupted_run(processed, tmp_path):
    steps = dict(max_steps=300, checkpoint_every=50, keep_checkpoints=2, sample_every=1000, augment=["translation"])
    reference = train(_settings(**steps), processed, tmp_path / "reference", tmp_path / "reference-plots", track=False)

    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"train": {**TINY, **steps}}))
    out, plots = tmp_path / "out", tmp_path / "plots"
    victim = subprocess.run([sys.executable, "-c", KILLED_AT_CHECKPOINT, str(params), str(processed), str(out), str(plots)],
                            capture_output=True, text=True, timeout=300)
    assert victim.returncode == -signal.SIGKILL, victim.stdout + victim.stderr
    checkpoints = out / "checkpoints"
    assert sorted(p.name for p in checkpoints.glob("step-*.pt")) == ["step-00000050.pt", "step-00000100.pt"]
    torch.load(checkpoints / "step-00000100.pt", weights_only=True)  # whole: written atomically before the kill
    # What a kill a little later would also leave: a half-written next checkpoint and loss rows past step 100.
    (checkpoints / "tmp-half-written.tmp").write_bytes(b"half a checkpoint")
    with open(plots / "train_loss.csv", "a") as log:
        log.write("110,9.99999,9.99999,1.0\n")

    command = [sys.executable, "-m", "productstudio.cli", "train", "--params", str(params), "--processed", str(processed),
               "--out", str(out), "--plots", str(plots), "--no-mlflow"]
    resumed = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert f"resuming from {checkpoints / 'step-00000100.pt'} (step 100," in resumed.stdout
    assert not list(checkpoints.glob("*.tmp"))  # the half-written file is cleared
    expected = load_file(str(tmp_path / "reference/generator/generator.safetensors"))
    got = load_file(str(out / "generator/generator.safetensors"))
    assert expected.keys() == got.keys()
    for name in expected:
        np.testing.assert_array_equal(got[name], expected[name], err_msg=name)
    # Every loss row (step, loss_d, loss_g) equals the uninterrupted run's: the rows past the checkpoint were dropped.
    def losses(path):
        return [row.split(",")[:3] for row in path.read_text().splitlines()]

    assert losses(plots / "train_loss.csv") == losses(tmp_path / "reference-plots/train_loss.csv")
    assert reference["summary"]["steps"] == 300


@pytest.mark.slow
def test_compiled_training_extended_in_a_new_process_matches_one_run_and_r1_steps_run_eager(processed, tmp_path):
    """train.compile: the same weights from one run and from a run stopped and extended in a fresh process (which
    compiles again); lazy R1 steps (a gradient of a gradient, which compiled graphs cannot give) run eager."""
    import torch._dynamo

    # 2 threads: compiled CPU kernels on more than one thread are where the weights varied between runs.
    compiled = dict(compile=True, threads=2, lr_decay=0, checkpoint_every=6, sample_every=1000, r1_gamma=1.0, r1_every=4)
    torch._dynamo.utils.counters.clear()  # count this run's graphs only, not earlier tests'
    reference = train(_settings(max_steps=12, **compiled), processed, tmp_path / "reference", tmp_path / "reference-plots",
                      track=False)
    assert reference["summary"]["steps"] == 12
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 2  # the generator and discriminator compiled

    params = tmp_path / "params.yaml"
    out, plots = tmp_path / "out", tmp_path / "plots"
    for steps in (6, 12):  # with a constant learning rate a finished run is extended by raising max_steps
        params.write_text(yaml.safe_dump({"train": {**TINY, **compiled, "max_steps": steps}}))
        command = [sys.executable, "-m", "productstudio.cli", "train", "--params", str(params), "--processed", str(processed),
                   "--out", str(out), "--plots", str(plots), "--no-mlflow"]
        run = subprocess.run(command, capture_output=True, text=True, timeout=600)
        assert run.returncode == 0, run.stdout + run.stderr
        assert "train.compile" in run.stdout
    assert "resuming from" in run.stdout and "(step 6," in run.stdout
    expected = load_file(str(tmp_path / "reference/generator/generator.safetensors"))
    got = load_file(str(out / "generator/generator.safetensors"))
    for name in expected:
        np.testing.assert_array_equal(got[name], expected[name], err_msg=name)
