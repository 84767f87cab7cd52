"""bench/bench_train.py's FLOP count of one training step works with the shipped R1/R2 penalties.

torch's FlopCounterMode refuses the penalties' torch.autograd.grad (its module tracker hooks the backward), which
crashed the 60-minute benchmark before it trained; the bench sums the same per-operator formulas itself.
"""

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from bench import bench_train
from productstudio.config import TrainSettings
from productstudio.training import loop

IMAGES = np.random.default_rng(0).integers(0, 256, (8, 1, 28, 28), dtype=np.uint8)
LABELS = np.arange(8) % 3


def _state(settings):
    torch.manual_seed(0)
    return loop.build(settings, num_classes=3, shape=(1, 28, 28), device=torch.device("cpu"))


def test_the_count_equals_torchs_flop_counter_where_that_one_works():
    plain = TrainSettings(g_width=4, d_width=4, latent_dim=8, batch_size=8, loss="hinge", r1_gamma=0, r2_gamma=0)
    ours = bench_train.step_flops(_state(plain), plain, IMAGES, LABELS)
    x, y = bench_train.to_float(torch.from_numpy(IMAGES)), torch.from_numpy(LABELS)
    reference = FlopCounterMode(display=False)
    with reference:
        loop.gan_step(_state(plain), x, y, plain, "cpu")
    assert ours == reference.get_total_flops() > 0


def test_r1_and_r2_are_counted_on_top_of_the_plain_step():
    plain = TrainSettings(g_width=4, d_width=4, latent_dim=8, batch_size=8, loss="relativistic", r1_gamma=0, r2_gamma=0)
    penalised = plain.model_copy(update={"r1_gamma": 0.1, "r2_gamma": 0.1})
    without = bench_train.step_flops(_state(plain), plain, IMAGES, LABELS)
    with_penalties = bench_train.step_flops(_state(penalised), penalised, IMAGES, LABELS)
    assert with_penalties > without * 1.2  # each penalty differentiates the discriminator once more
