"""The training step: a class-conditional GAN (or the CVAE baseline) on the processed tensor shards.

Resumable: every ``checkpoint_every`` steps a checkpoint holds the models, optimizers, EMA, the one
torch.Generator that drives every random draw (batches, latents, augmentation) and the time spent.
Checkpoints are written atomically and rotated; running the same command again after a crash (even
``kill -9``) continues from the newest one and reproduces the uninterrupted run on the CPU.

Data-parallel under ``torchrun`` (``training/distributed.py``): every rank trains on its share of the
global batch; rank 0 alone writes checkpoints, logs, sample grids, KID points and the generator, and
talks to MLflow. All ranks read the same checkpoint (on one node, or a volume all nodes share).
"""

from __future__ import annotations

import copy
import csv
import json
import logging
import math
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image
from torch.profiler import record_function
from tqdm import tqdm

from productstudio.artifacts import write_atomic, write_manifest
from productstudio.config import TrainSettings, section_dict
from productstudio.errors import ParamsError, TimeLimitReached, TrainingDiverged
from productstudio.data import store
from productstudio.imaging import reproducible_kernels, resolve_device, to_float
from productstudio.models.io import save_generator
from productstudio.models.checkpoints import load_checkpoint
from productstudio.models.cvae import ConditionalVAE, elbo_loss
from productstudio.models.gan import (Discriminator, GANConfig, Generator, hinge_d_loss, hinge_g_loss,
                                      relativistic_d_loss, relativistic_g_loss)
from productstudio.models.sampling import sample_grid
from productstudio.training.augment import diff_augment
from productstudio.training.distributed import ALONE, Distributed, from_environment, sync_batchnorm

CHECKPOINTS = "checkpoints"
GENERATOR = "generator"
BEST = "best-generator"  # train.select_best: the generator with the lowest held-out KID so far
SAMPLES = "samples"
LOSS_LOG = "train_loss.csv"
CHECKPOINT_NAME = re.compile(r"step-(\d{8})\.pt$")
KID_LOG = "train_kid.csv"
# Settings that do not change the trained weights: a checkpoint made under other values is resumed.
# (max_steps too when the learning rate is constant: with lr_decay the schedule depends on it.)
RESUMABLE_CHANGES = {"max_minutes", "checkpoint_every", "keep_checkpoints", "log_every", "sample_every",
                     "threads", "kid_every", "kid_samples"}


@dataclass
class TrainState:
    """Everything a resumed run needs, as tensors and plain values (loadable with weights_only=True)."""

    modules: dict[str, torch.nn.Module]
    optimizers: dict[str, torch.optim.Optimizer]
    rng: torch.Generator
    step: int = 0
    seconds: float = 0.0
    mlflow_run_id: str | None = None
    extra: dict = field(default_factory=dict)
    dist: Distributed = ALONE
    wrapped: dict[str, torch.nn.Module] = field(default_factory=dict)  # DDP around the modules that train
    compiled: dict[str, torch.nn.Module] = field(default_factory=dict)  # train.compile: torch.compile of those

    def net(self, key: str) -> torch.nn.Module:
        """The module to call in a training step: compiled (train.compile), else its DDP wrapper under
        torchrun, else the module. All three share the module's parameters."""
        return self.compiled[key] if key in self.compiled else self.eager(key)

    def eager(self, key: str) -> torch.nn.Module:
        """The module to call where a compiled graph cannot go (R1's gradient of a gradient)."""
        return self.wrapped.get(key, self.modules[key])

    def compile(self, keys: tuple[str, ...] = ("generator", "discriminator")) -> None:
        """torch.compile the training modules. The EMA, sampling and checkpoints keep using the plain modules."""
        # torch keeps compiled code per forward function for the life of a process and, past its recompile limit,
        # runs that function eager without a word; a process that trains again and again (tests, the benchmark's
        # chunks) could then get other weights than a fresh process. Each run starts from an empty in-memory cache
        # (the disk cache still saves the C++ build).
        torch._dynamo.reset()
        # Two warnings torch prints on every compile, about things that do not apply: a CPU machine's missing CUDA
        # runtime, and the profiler labels in gan_step (ignored inside compiled graphs; they serve the eager
        # profile of bench/bench_train.py). Quiet, a one-line error stays one line.
        logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
        logging.getLogger("torch._dynamo.variables.ctx_manager").setLevel(logging.ERROR)
        for key in keys:
            self.compiled[key] = torch.compile(self.eager(key))

    def distribute(self, dist: Distributed) -> None:
        """Wrap the training modules in DDP (after a checkpoint is loaded: DDP copies rank 0's weights)."""
        self.dist = dist
        if dist.active:
            for key in ("generator", "discriminator", "vae"):
                if key in self.modules:
                    sync_batchnorm(self.modules[key])
                    self.wrapped[key] = dist.wrap(self.modules[key])

    def state_dict(self) -> dict:
        return {
            "modules": {k: m.state_dict() for k, m in self.modules.items()},
            "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
            "rng": self.rng.get_state(),
            "step": self.step,
            "seconds": self.seconds,
            "mlflow_run_id": self.mlflow_run_id or "",
            "identity": json.dumps(self.extra.get("identity", {}), sort_keys=True),
            "best": json.dumps(self.extra.get("best", {}), sort_keys=True),
        }

    def load_state_dict(self, state: dict) -> None:
        for key, module in self.modules.items():
            module.load_state_dict(state["modules"][key])
        for key, optimizer in self.optimizers.items():
            optimizer.load_state_dict(state["optimizers"][key])
        self.rng.set_state(state["rng"])
        self.step = int(state["step"])
        self.seconds = float(state["seconds"])
        self.mlflow_run_id = state["mlflow_run_id"] or None
        self.extra["best"] = json.loads(state.get("best", "{}"))


def training_code_hash() -> str:
    """Hash of the model and training sources: a checkpoint made by other code is not resumed."""
    import hashlib

    root = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for path in sorted([*root.joinpath("models").glob("*.py"), *root.joinpath("training").glob("*.py")]):
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()[:16]


def latest_checkpoint(directory: Path) -> Path | None:
    found = sorted(p for p in directory.glob("step-*.pt") if CHECKPOINT_NAME.search(p.name))
    return found[-1] if found else None


def save_checkpoint(state: TrainState, directory: Path, keep: int) -> Path:
    """Write to a temporary file, fsync, rename: a crash leaves the old checkpoint or the new one, never half.
    A full disk is a one-line DiskFull naming the previous checkpoint, which is intact (rotation comes after)."""
    target = directory / f"step-{state.step:08d}.pt"
    previous = latest_checkpoint(directory) if directory.is_dir() else None
    kept = f"the previous checkpoint {previous.name} is intact" if previous not in (None, target) else None
    write_atomic(target, lambda handle: torch.save(state.state_dict(), handle), kept=kept)
    for old in sorted(directory.glob("step-*.pt"))[:-keep]:
        old.unlink()
    return target


def build(settings: TrainSettings, num_classes: int, shape: tuple[int, int, int], device: torch.device) -> TrainState:
    """Fresh models and optimizers, initialised from the seed."""
    torch.manual_seed(settings.seed)
    config = GANConfig(
        num_classes=num_classes, channels=shape[0], image_size=shape[1],
        latent_dim=settings.latent_dim, g_width=settings.g_width, d_width=settings.d_width, g_block=settings.g_block,
    )
    betas = (settings.beta1, settings.beta2)
    if settings.model == "gan":
        generator, discriminator = Generator(config).to(device), Discriminator(config).to(device)
        ema = copy.deepcopy(generator).eval().requires_grad_(False)
        modules = {"generator": generator, "discriminator": discriminator, "ema": ema}
        optimizers = {
            "generator": torch.optim.Adam(generator.parameters(), settings.lr_g, betas=betas),
            "discriminator": torch.optim.Adam(discriminator.parameters(), settings.lr_d, betas=betas),
        }
    else:
        vae = ConditionalVAE(config).to(device)
        modules = {"vae": vae}
        optimizers = {"vae": torch.optim.Adam(vae.parameters(), settings.lr_g, betas=(0.9, 0.999))}
    rng = torch.Generator(device="cpu").manual_seed(settings.seed)
    return TrainState(modules, optimizers, rng)


@torch.no_grad()
def update_ema(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    for target, source in zip(ema.parameters(), model.parameters()):
        target.lerp_(source, 1.0 - decay)
    for target, source in zip(ema.buffers(), model.buffers()):
        target.copy_(source)


def compiles(settings: TrainSettings) -> bool:
    """Whether this run trains compiled networks (train.compile applies to the GAN; the CVAE baseline runs eager)."""
    return settings.compile and settings.model == "gan"


def check_compiler(device: torch.device) -> None:
    """torch.compile on a CPU writes and builds C++: say so in one line before the first step, not in a traceback."""
    import shutil

    if device.type == "cpu" and not any(shutil.which(c) for c in (os.environ.get("CXX"), "g++", "c++", "clang++") if c):
        raise ParamsError("train.compile needs a C++ compiler on a CPU (none of $CXX, g++, c++, clang++ is on PATH): "
                          "install one (apt-get install g++) or set train.compile: false")


def real_draw(labels: torch.Tensor, num_classes: int, balanced: bool):
    """A function (n, rng) -> n indices of real photos: uniform over photos, or over categories when ``balanced``."""
    if not balanced:
        return lambda n, rng: torch.randint(0, len(labels), (n,), generator=rng)
    counts = torch.bincount(labels, minlength=num_classes)
    weights = 1.0 / counts[labels].double()  # every category's photos together weigh 1
    return lambda n, rng: torch.multinomial(weights, n, replacement=True, generator=rng)


def lr_factor(progress: float, decay: float) -> float:
    """The learning-rate multiplier at ``progress`` (0..1 of the run): 1, then a straight line to 0 over
    the last ``decay`` share (0: constant)."""
    if decay <= 0 or progress <= 1.0 - decay:
        return 1.0
    return max(0.0, (1.0 - progress) / decay)


def set_learning_rates(state: TrainState, settings: TrainSettings, factor: float) -> None:
    base = {"generator": settings.lr_g, "discriminator": settings.lr_d, "vae": settings.lr_g}
    for key, optimizer in state.optimizers.items():
        for group in optimizer.param_groups:
            group["lr"] = base[key] * factor


def gan_step(state: TrainState, x: torch.Tensor, y: torch.Tensor, settings: TrainSettings, device) -> dict:
    """One discriminator and one generator update on this rank's share (x, y) of the global batch."""
    strength = condition_strength(state.step, settings)
    # A compiled graph holds the category's weight as a constant: while a ramp changes it, steps run eager.
    net = state.net if strength == 1.0 else state.eager
    g, d, ema = net("generator"), net("discriminator"), state.modules["ema"]
    opt_g, opt_d = state.optimizers["generator"], state.optimizers["discriminator"]
    n, shard = settings.batch_size, state.dist.shard  # latents are drawn for the global batch, then shared out
    z = shard(torch.randn(n, settings.latent_dim, generator=state.rng)).to(device)
    y_fake = shard(torch.randint(0, state.modules["generator"].config.num_classes, (n,), generator=state.rng)).to(device)
    relativistic = settings.loss == "relativistic"
    if relativistic:
        y_fake = y.to(device)  # each real image is judged against a fake of its own category
    if settings.mode_seeking:
        # Pairs for the mode-seeking term: the second half of this rank's share repeats the first half's categories.
        half = len(y_fake) // 2
        y_fake = torch.cat([y_fake[:half], y_fake[:half], y_fake[2 * half:]])
    augment_rng = state.rng
    if settings.augment and state.dist.active:
        # One shared draw keeps every rank's generator in step; each rank augments its share with its own stream.
        seed = int(torch.randint(0, 2**62, (1,), generator=state.rng)) + state.dist.rank
        augment_rng = torch.Generator().manual_seed(seed)
    augment = (lambda t: diff_augment(t, settings.augment, augment_rng)) if settings.augment else (lambda t: t)

    for key in ("generator", "discriminator", "ema"):
        state.modules[key].condition_strength = strength

    # The labels name the phases for a profiler (bench/bench_train.py's G/D split); without one they cost nothing.
    with record_function("generate"):
        fake = g(z, y_fake)
    with record_function("discriminator_update"):
        real, fake_seen = augment(x), augment(fake.detach())
        penalty_step = state.step % settings.r1_every == 0
        lazy_r1 = settings.r1_gamma > 0 and penalty_step
        lazy_r2 = settings.r2_gamma > 0 and penalty_step
        if lazy_r1:
            real = real.detach().requires_grad_(True)
        if lazy_r2:
            fake_seen = fake_seen.detach().requires_grad_(True)
        # R1 and R2 differentiate the gradient; a compiled graph's backward cannot be differentiated again.
        real_logits = (state.eager("discriminator") if lazy_r1 else d)(real, y)
        fake_logits = (state.eager("discriminator") if lazy_r2 else d)(fake_seen, y_fake)
        d_loss = (relativistic_d_loss if relativistic else hinge_d_loss)(real_logits, fake_logits)
        opt_d.zero_grad(set_to_none=True)
        penalty = 0.0
        if lazy_r1:
            penalty = penalty + r1_penalty(real_logits, real) * settings.r1_gamma / 2 * settings.r1_every
        if lazy_r2:  # R2: the same penalty at the generated images
            penalty = penalty + r1_penalty(fake_logits, fake_seen) * settings.r2_gamma / 2 * settings.r1_every
        (d_loss + penalty).backward()
        opt_d.step()
    with record_function("generator_update"):
        fake_logits = d(augment(fake), y_fake)
        if relativistic:
            with torch.no_grad():  # the generator's gradient flows through the fakes only
                real_logits = d(real.detach(), y)
            g_loss = relativistic_g_loss(real_logits, fake_logits)
        else:
            g_loss = hinge_g_loss(fake_logits)
        if settings.mode_seeking:
            g_loss = g_loss + settings.mode_seeking * mode_seeking_loss(fake, z, pool=settings.mode_seeking_pool)
        opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        opt_g.step()
    with record_function("ema"):
        # Warm-up: early on the EMA follows the generator closely, or it would lag at the random init.
        update_ema(ema, state.modules["generator"], min(settings.ema_decay, (1 + state.step) / (10 + state.step)))
    return {"loss_d": d_loss.item(), "loss_g": g_loss.item()}


def diverged_message(step: int, losses: dict, settings: TrainSettings) -> str:
    shown = ", ".join(f"{key} {value:g}" for key, value in losses.items())
    hint = "lower the learning rates"
    if settings.model == "gan" and (settings.r1_gamma > 0 or settings.r2_gamma > 0):
        hint = "lower the learning rates or train.r1_gamma / train.r2_gamma"
    return (f"training diverged at step {step}: the losses are not finite ({shown}); nothing after the last checkpoint "
            f"is kept: {hint}, and rerun")


def r1_penalty(real_logits: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of the squared gradient norm of the discriminator's output at its inputs (the real
    images for R1, the generated ones for R2)."""
    (grad,) = torch.autograd.grad(real_logits.sum(), real, create_graph=True)
    return grad.pow(2).flatten(1).sum(dim=1).mean()


def mode_seeking_loss(fake: torch.Tensor, z: torch.Tensor, eps: float = 1e-5, pool: int = 1) -> torch.Tensor:
    """MSGAN's term for pairs (first half, second half) of one category: small when images differ as much as latents.

    Per pair: mean |image difference| / mean |latent difference|; the loss is the mean of its inverse, so a
    pair drawn almost alike (the collapse this fights) costs the most. ``pool`` > 1 compares the images averaged
    over ``pool`` x ``pool`` blocks, so a fine speckle that differs between the two does not count as variety.
    """
    if pool > 1:
        fake = torch.nn.functional.avg_pool2d(fake, pool)
    half = len(fake) // 2
    image_gap = (fake[:half] - fake[half:2 * half]).abs().flatten(1).mean(dim=1)
    latent_gap = (z[:half] - z[half:2 * half]).abs().mean(dim=1)
    return (1.0 / (image_gap / latent_gap + eps)).mean()


def condition_strength(step: int, settings: TrainSettings) -> float:
    """The category's weight at this step under train.condition_ramp: 0 before its start, 1 from its end."""
    if settings.condition_ramp is None:
        return 1.0
    start, end = settings.condition_ramp
    return 1.0 if step >= end else 0.0 if step <= start else (step - start) / (end - start)


def vae_step(state: TrainState, x: torch.Tensor, y: torch.Tensor, settings: TrainSettings, device) -> dict:
    vae, opt = state.net("vae"), state.optimizers["vae"]
    noise = state.dist.shard(torch.randn(settings.batch_size, settings.latent_dim, generator=state.rng)).to(device)
    losses = elbo_loss(x, *vae(x, y, noise=noise))
    opt.zero_grad(set_to_none=True)
    losses["loss"].backward()
    opt.step()
    return {"loss": losses["loss"].item(), "reconstruction": losses["reconstruction"].item(), "kl": losses["kl"].item()}


def sampling_generator(state: TrainState) -> Generator:
    """The network that makes images: the EMA generator for a GAN, the decoder for a VAE.

    The EMA's batch-norm buffers are copies of the live generator's, measured on other weights;
    a copy of the EMA gets statistics of its own before it samples or is saved.
    """
    if "vae" in state.modules:
        return copy.deepcopy(state.modules["vae"].decoder).eval()
    ema = copy.deepcopy(state.modules["ema"])
    recalibrate_batchnorm(ema, seed=state.step)
    return ema


@torch.no_grad()
def recalibrate_batchnorm(generator: Generator, seed: int, batches: int = 16, batch_size: int = 64) -> None:
    """Replace batch-norm running statistics by their plain average over fresh random batches."""
    norms = [m for m in generator.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    device = next(generator.parameters()).device
    rng = torch.Generator().manual_seed(seed)
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average
    generator.train()
    config = generator.config
    for _ in range(batches):
        z = torch.randn(batch_size, config.latent_dim, generator=rng).to(device)
        y = torch.randint(0, config.num_classes, (batch_size,), generator=rng).to(device)
        generator(z, y)
    for norm in norms:
        norm.momentum = 0.1
    generator.eval()


def _truncate_log(path: Path, step: int) -> None:
    """After a resume, forget log rows written past the checkpoint by the interrupted run."""
    if not path.exists():
        return
    with open(path, newline="") as handle:
        rows = list(csv.reader(handle))
    if not rows:  # stopped before its first row
        return
    kept = [rows[0]] + [r for r in rows[1:] if int(r[0]) <= step]
    with open(path, "w", newline="") as handle:
        csv.writer(handle).writerows(kept)


def train(
    settings: TrainSettings,
    processed_dir: str | Path,
    out_dir: str | Path,
    plots_dir: str | Path,
    device: str = "auto",
    track: bool = True,
    real_stats_dir: str | Path | None = None,
    clock: Callable[[], float] = time.perf_counter,
    on_checkpoint: Callable[[int, Path], None] | None = None,
    budget_minutes: float | None = None,
    pause_at_minutes: float | None = None,
) -> dict:
    """Train until ``max_steps``; resume from out_dir/checkpoints when one is there. Reaching the optional
    guard ``max_minutes`` first raises TimeLimitReached (after a checkpoint).

    With ``real_stats_dir`` (the real_stats stage's feature cache), KID is measured every
    ``kid_every`` steps, outside the time budget, into plots_dir/train_kid.csv and MLflow.

    The benchmark's door (bench/bench_train.py): ``budget_minutes`` makes the run a wall-clock budget
    instead (it ends at max_steps or after that many training minutes, and the learning-rate schedule
    runs over whichever comes first); ``pause_at_minutes`` returns earlier with the generator so far, and
    the next call resumes. Results then depend on the machine's speed, which is what a time budget measures.

    Test hooks: ``clock`` (seconds) measures the time budget and the images/s rate, so a test can
    drive time itself; ``on_checkpoint(step, path)`` is called right after each periodic checkpoint
    is on disk, so a test can kill the process at a known checkpoint.
    """
    out, plots = Path(out_dir), Path(plots_dir)
    dist = from_environment(resolve_device(device))
    try:
        dev = dist.device(resolve_device(device))
        with reproducible_kernels(dev, compiled=compiles(settings)):
            return _train(settings, processed_dir, out, plots, dist, dev, track, real_stats_dir, clock, on_checkpoint,
                          budget_minutes, pause_at_minutes)
    finally:
        dist.close()


def _train(settings, processed_dir, out: Path, plots: Path, dist: Distributed, dev: torch.device, track: bool,
           real_stats_dir, clock, on_checkpoint, budget_minutes, pause_at_minutes) -> dict:
    torch.set_num_threads(dist.threads(settings.threads))
    local_batch = dist.local_batch(settings.batch_size)
    images, labels = store.load_split(processed_dir, "train")
    categories = store.categories(processed_dir)
    held_out = settings.select_best if settings.model == "gan" else 0
    if held_out >= len(images):
        raise ParamsError(f"train.select_best ({held_out}) must be smaller than the train split ({len(images)} images)")
    images, labels = images[held_out:], labels[held_out:]  # the first held_out images only judge, never train
    x_all, y_all = torch.from_numpy(images), torch.from_numpy(labels)  # uint8 stays uint8 until batched
    draw = real_draw(y_all, len(categories), settings.balanced_categories)
    state = build(settings, len(categories), tuple(images.shape[1:]), dev)

    # What a checkpoint must share with this run to be resumed: the data and every setting that
    # changes the result. Budgets and logging frequencies may differ (max_steps only without a decay).
    from productstudio import tracking

    resumable = RESUMABLE_CHANGES | ({"max_steps"} if settings.lr_decay == 0 or budget_minutes else set())
    identity = {k: v for k, v in section_dict(settings).items() if k not in resumable}
    if budget_minutes and settings.lr_decay:
        identity["budget_minutes"] = budget_minutes  # the schedule's length
    identity["data_version"] = store.data_version(processed_dir)
    identity["code"] = training_code_hash()
    state.extra["identity"] = identity
    checkpoint = latest_checkpoint(out / CHECKPOINTS)
    if checkpoint is not None:
        saved = load_checkpoint(checkpoint)
        if json.loads(saved.get("identity", "{}")) != identity:
            checkpoint = None
            if dist.is_main:
                print(f"{out / CHECKPOINTS} holds checkpoints of other data or train params: starting afresh")
    if checkpoint is not None:
        state.load_state_dict(saved)
        if dist.is_main:
            print(f"resuming from {checkpoint} (step {state.step}, {state.seconds / 60:.1f} min spent)")
    dist.barrier()  # every rank has read the checkpoint before rank 0 tidies the directory
    if dist.is_main:
        _tidy(out, fresh=checkpoint is None)
    state.distribute(dist)
    main = dist.is_main
    if compiles(settings):
        check_compiler(dev)
        state.compile()
        if main:
            print("train.compile: the first step compiles the generator and discriminator (up to about a minute on 2 cores)")
    plots.mkdir(parents=True, exist_ok=True)
    log_path, kid_path = plots / LOSS_LOG, plots / KID_LOG
    if main:
        if checkpoint is None:
            log_path.unlink(missing_ok=True)
            kid_path.unlink(missing_ok=True)
        _truncate_log(log_path, state.step)
        _truncate_log(kid_path, state.step)
    kid_tracker = None
    if main and settings.kid_every and real_stats_dir is not None:
        from productstudio.training.kid_curve import TrainingKID

        try:
            kid_tracker = TrainingKID(real_stats_dir, identity["data_version"], settings.kid_samples, settings.seed + 2, dev)
        except FileNotFoundError as error:
            print(f"periodic KID off: {error}")
        else:
            kid_tracker.selection = _held_out_features(processed_dir, real_stats_dir, out, held_out, dev)
    if held_out and kid_tracker is None:
        raise ParamsError("train.select_best needs the KID points: pass the real_stats cache (--real-stats) "
                          "and keep train.kid_every > 0")

    run = None
    if track and main:
        import mlflow

        tags = {
            "productstudio.step": "train",
            "productstudio.model": settings.model,
            "data.version": store.data_version(processed_dir),
            "git.commit": tracking.git_commit(),
        }
        run = tracking.start_run(f"train-{settings.model}", run_id=state.mlflow_run_id, tags=tags)
        state.mlflow_run_id = run.info.run_id
        if checkpoint is None:
            mlflow.log_params(tracking.flatten("train", section_dict(settings)))
            mlflow.log_params({"data.train_images": len(images), "data.categories": ",".join(categories),
                               "device": str(dev), "processes": dist.world_size})

    step_fn = gan_step if settings.model == "gan" else vae_step
    for module in state.modules.values():
        module.train()
    if "ema" in state.modules:
        state.modules["ema"].eval()
    budget_s = budget_minutes * 60 if budget_minutes else float("inf")
    stop_s = min(budget_s, pause_at_minutes * 60 if pause_at_minutes else float("inf"))
    guard_s = settings.max_minutes * 60 if settings.max_minutes else float("inf")
    finished = False
    progress = tqdm(total=settings.max_steps, initial=state.step, desc=f"train {settings.model}", unit="step",
                    disable=None if main else True)
    window_start, window_images, rate = clock(), 0, 0.0
    new_file = not log_path.exists()
    try:
        with open(log_path, "a", newline="") if main else open(os.devnull, "w") as log_handle:
            log = csv.writer(log_handle)
            while state.step < settings.max_steps and state.seconds < stop_s:
                if state.seconds >= guard_s:
                    if main:
                        save_checkpoint(state, out / CHECKPOINTS, settings.keep_checkpoints)
                    average = state.step * settings.batch_size / state.seconds
                    raise TimeLimitReached(
                        f"train.max_minutes ({settings.max_minutes:g}) reached at step {state.step} of {settings.max_steps} "
                        f"({average:.0f} images/s on average; a busy machine?); the checkpoint is kept: rerun with a "
                        "larger train.max_minutes (or null) to continue")
                started = clock()
                progress_share = max(state.step / settings.max_steps, state.seconds / budget_s)
                set_learning_rates(state, settings, lr_factor(progress_share, settings.lr_decay))
                index = dist.shard(draw(settings.batch_size, state.rng))
                x = to_float(x_all[index].to(dev))
                y = y_all[index].to(dev)
                losses = step_fn(state, x, y, settings, dev)
                if not all(math.isfinite(value) for value in losses.values()):
                    raise TrainingDiverged(diverged_message(state.step + 1, losses, settings))
                state.step += 1
                # Rank 0's clock decides for all ranks, or they could disagree on when the budget ends.
                state.seconds = dist.from_main(state.seconds + clock() - started)
                window_images += local_batch * dist.world_size
                progress.update(1)
                if state.step % settings.log_every == 0:
                    losses = dist.mean(losses)
                    now = clock()
                    rate = window_images / (now - window_start)
                    window_start, window_images = now, 0
                    if main:
                        if new_file:
                            log.writerow(["step", *losses, "images_per_s"])
                            new_file = False
                        log.writerow([state.step, *(f"{v:.5f}" for v in losses.values()), f"{rate:.1f}"])
                        log_handle.flush()
                        progress.set_postfix({k: f"{v:.3f}" for k, v in losses.items()})
                    if run is not None:
                        mlflow.log_metrics({**losses, "images_per_s": rate}, step=state.step)
                if not main:
                    continue
                grid_due = state.step % settings.sample_every == 0
                kid_due = kid_tracker is not None and state.step % settings.kid_every == 0
                if grid_due or kid_due:
                    sampler = sampling_generator(state)
                    if grid_due:
                        _save_grid(sampler, state, settings, out, dev, run)
                    if kid_due:
                        _log_kid(kid_tracker, sampler, state, kid_path, run, out)
                if state.step % settings.checkpoint_every == 0:
                    saved_path = save_checkpoint(state, out / CHECKPOINTS, settings.keep_checkpoints)
                    if on_checkpoint is not None:
                        on_checkpoint(state.step, saved_path)
        progress.close()
        stopped = ("max_steps" if state.step >= settings.max_steps
                   else "budget_minutes" if state.seconds >= budget_s else "pause_at_minutes")
        summary = {"steps": state.step, "minutes": round(state.seconds / 60, 3), "stopped_by": stopped,
                   "images_per_s": round(rate, 1), "processes": dist.world_size}
        if not main:
            return {"summary": summary, "rank": dist.rank}
        save_checkpoint(state, out / CHECKPOINTS, settings.keep_checkpoints)
        generator = sampling_generator(state)
        grid_path = _save_grid(generator, state, settings, out, dev, run)
        if kid_tracker is not None and state.step % settings.kid_every != 0:
            _log_kid(kid_tracker, generator, state, kid_path, run, out)
        best = state.extra.get("best") or {}
        if best and best["step"] != state.step:  # an earlier generator was better on the held-out images
            from productstudio.models.io import load_generator

            generator = load_generator(out / BEST, dev)[0]
            grid_path = _save_grid(generator, state, settings, out, dev, run, name=f"selected-step-{best['step']:08d}.png")
        if best:
            summary.update(selected_step=best["step"], selected_kid_heldout_train=round(best["kid"], 6),
                           held_out_train_images=held_out)
            print(f"kept the generator of step {best['step']} (held-out KID {best['kid']:.4f}; last step {state.step})")
        encoder = state.modules["vae"].encoder if "vae" in state.modules else None  # for reconstruction metrics
        save_generator(generator, out / GENERATOR, encoder=encoder, categories=categories, kind=settings.model,
                       step=best.get("step", state.step))
        manifest = write_manifest(
            out,
            "trained-generator",
            inputs={"processed_data_version": store.data_version(processed_dir)},
            params=section_dict(settings),
            categories=categories,
            summary=summary,
            mlflow_run_id=state.mlflow_run_id,
            sample_grid=str(grid_path.relative_to(out)),
        )
        finished = True
        if run is not None:
            mlflow.log_metrics({"train_minutes": state.seconds / 60, "train_steps": state.step})
            mlflow.log_artifacts(str(out / GENERATOR), GENERATOR)
            mlflow.log_artifact(str(log_path), "plots")
            if kid_path.exists():
                mlflow.log_artifact(str(kid_path), "plots")
        return manifest
    finally:
        if run is not None:
            mlflow.end_run("FINISHED" if finished else "FAILED")


def _tidy(out: Path, fresh: bool) -> None:
    """Remove what an interrupted run left: partial checkpoints; for a fresh start also old checkpoints and outputs."""
    for partial in (out / CHECKPOINTS).glob("*.tmp"):
        partial.unlink()  # left by a run killed while writing; the previous checkpoint is intact
    if not fresh:
        return
    for old in (out / CHECKPOINTS).glob("step-*.pt"):
        old.unlink()
    for stale in (out / GENERATOR, out / SAMPLES, out / BEST):
        if stale.exists():
            for f in stale.iterdir():
                f.unlink()


def _save_grid(generator: Generator, state: TrainState, settings: TrainSettings, out: Path, device, run,
               name: str | None = None) -> Path:
    grid = sample_grid(generator, settings.seed + 1, device)
    path = out / SAMPLES / (name or f"step-{state.step:08d}.png")
    image = Image.fromarray(grid).resize((grid.shape[1] * 2, grid.shape[0] * 2), Image.Resampling.NEAREST)
    write_atomic(path, lambda handle: image.save(handle, format="PNG"))  # the manifest names the last one
    if run is not None:
        import mlflow

        mlflow.log_artifact(str(path), SAMPLES)
    return path


def _held_out_features(processed_dir, real_stats_dir, out: Path, count: int, device):
    """Inception features of the first ``count`` train images (held out of training), or None for count 0; read from
    the real_stats cache when it holds that many, else extracted once into out/held-out-features."""
    if not count:
        return None
    from productstudio.metrics.real_features import RealFeatures

    real = RealFeatures(processed_dir, real_stats_dir, out / "held-out-features", device=str(device), batch_size=50, progress=True)
    return real.features("train", count)[0]


def _log_kid(tracker, generator: Generator, state: TrainState, path: Path, run, out: Path) -> None:
    """One point of the time-to-quality curve: KID against training minutes (the budget's clock); with a held-out
    slice of train, also the KID that decides which generator the run keeps (out/best-generator)."""
    result = tracker.measure(generator)
    held_out = "selection_kid" in result
    if held_out:
        best = state.extra.get("best") or {}
        if not best or result["selection_kid"] < best["kid"]:
            save_generator(generator, out / BEST, step=state.step)
            state.extra["best"] = {"step": state.step, "kid": result["selection_kid"]}
    new_file = not path.exists()
    with open(path, "a", newline="") as handle:
        writer = csv.writer(handle)
        if new_file:  # protocol: MLflow metric names
            writer.writerow(["step", "train_minutes", "kid", "kid_std_error", *(["kid_heldout_train"] if held_out else [])])
        writer.writerow([state.step, f"{state.seconds / 60:.3f}", f"{result['kid']:.6f}", f"{result['kid_std_error']:.6f}",
                         *([f"{result['selection_kid']:.6f}"] if held_out else [])])
    chosen = f"; {tracker.selection_name} {result['selection_kid']:.4f}" if held_out else ""
    print(f"step {state.step}: {tracker.name} {result['kid']:.4f} +- {result['kid_std_error']:.4f}{chosen}", flush=True)
    if run is not None:
        import mlflow

        metrics = {tracker.name: result["kid"], f"{tracker.name}_std_error": result["kid_std_error"]}
        if held_out:
            metrics[tracker.selection_name] = result["selection_kid"]
        mlflow.log_metrics(metrics, step=state.step)
